"""process.py: prepare images for translate.py.

    python imagetranslation/tools/process.py --operation combine --input_dir datasets/em_a \\
        --b_dir datasets/membrane_a --output_dir datasets/combined/

combine: for each image in input_dir, the image of the same base name in b_dir, side by
side (A left, B right) as one RGB PNG named like A's file.
"""

from __future__ import annotations

import numpy as np

from imagetranslation.data import read_rgb
from neuron3d.cli import ArgumentParser, run_cli
from neuron3d.io import check_outputs_apart, list_slice_files, same_path, write_folder


def build_parser():
    p = ArgumentParser(prog="process.py", description="Prepare combined A|B images.")
    p.add_argument("--operation", required=True, choices=["combine"])
    p.add_argument("--input_dir", required=True, help="folder of A images")
    p.add_argument("--b_dir", required=True, help="folder of B images (same base names)")
    p.add_argument("--output_dir", required=True,
                   help="folder for the combined PNGs (not --input_dir or --b_dir); PNG files "
                        "already in it that this run does not write are removed")
    return p


def _by_stem(files, what):
    by_stem = {}
    for path in files:
        if path.stem in by_stem:
            raise ValueError(f"two images in {what} share the base name {path.stem!r}: "
                             f"{by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path
    return by_stem


def combine(a_dir, b_dir, output_dir):
    """Write A|B pairs into ``output_dir``; returns the number written.

    For each image of ``a_dir`` (natural order), the image of ``b_dir`` with
    the same base name is put beside it (A left, B right) in one RGB PNG named
    ``<base name>.png``.  The folder is written atomically (see
    :func:`neuron3d.io.write_folder`): on any error nothing is written, not
    even an empty ``output_dir``; on success PNG files of an earlier run that
    this run does not write are removed, so no stale pair survives.

    Raises
    ------
    FileNotFoundError
        If ``a_dir`` or ``b_dir`` does not exist.
    ValueError
        If ``output_dir`` is ``a_dir`` or ``b_dir`` (it would overwrite the
        inputs), lies inside or contains one of them
        (:func:`neuron3d.io.check_outputs_apart`), an image has no partner or a
        different size, or two images share a base name.
    """
    for flag, folder in (("--input_dir", a_dir), ("--b_dir", b_dir)):
        if same_path(output_dir, folder):
            raise ValueError(f"--output_dir {output_dir} is the same folder as {flag} {folder}: "
                             f"combine would overwrite its images; choose another --output_dir")
    check_outputs_apart({"--input_dir": a_dir, "--b_dir": b_dir}, {"--output_dir": output_dir})
    a_by_stem = _by_stem(list_slice_files(a_dir, pattern=None, what="--input_dir"), "--input_dir")
    b_by_stem = _by_stem(list_slice_files(b_dir, pattern=None, what="--b_dir"), "--b_dir")
    pairs = []
    for stem, a_path in a_by_stem.items():
        b_path = b_by_stem.get(stem)
        if b_path is None:
            raise ValueError(f"no partner for {a_path} in {b_dir} (expected {stem}.*)")
        pairs.append((a_path, b_path))

    def fill(tmp):
        from PIL import Image

        for a_path, b_path in pairs:
            a, b = read_rgb(a_path), read_rgb(b_path)
            if a.shape != b.shape:
                raise ValueError(f"sizes differ: {a_path} is {a.shape[1]} x {a.shape[0]}, "
                                 f"{b_path} is {b.shape[1]} x {b.shape[0]}")
            Image.fromarray(np.concatenate([a, b], axis=1)).save(
                tmp / f"{a_path.stem}.png", compress_level=1)

    write_folder(output_dir, fill, owned=lambda name: name.lower().endswith(".png"))
    return len(pairs)


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        count = combine(args.input_dir, args.b_dir, args.output_dir)
        print(f"process.py combine: wrote {count} A|B images to {args.output_dir}")

    return run_cli("process.py", body)


if __name__ == "__main__":
    raise SystemExit(main())

"""process.py: prepare images for translate.py.

    python imagetranslation/tools/process.py --operation combine --input_dir datasets/em_a \\
        --b_dir datasets/membrane_a --output_dir datasets/combined/

combine: for each image in input_dir, the image of the same base name in b_dir, side by
side (A left, B right) as one RGB PNG named like A's file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from imagetranslation.data import list_images, read_rgb
from neuron3d.cli import ArgumentParser, run_cli
from neuron3d.io import prepare_output_dir


def build_parser():
    p = ArgumentParser(prog="process.py", description="Prepare combined A|B images.")
    p.add_argument("--operation", required=True, choices=["combine"])
    p.add_argument("--input_dir", required=True, help="folder of A images")
    p.add_argument("--b_dir", required=True, help="folder of B images (same base names)")
    p.add_argument("--output_dir", required=True, help="folder for the combined PNGs")
    return p


def combine(a_dir, b_dir, output_dir):
    """Write A|B pairs; returns the number written.  Nothing is written on error."""
    a_files = list_images(a_dir)
    b_by_stem = {p.stem: p for p in list_images(b_dir)}
    pairs = []
    for a_path in a_files:
        b_path = b_by_stem.get(a_path.stem)
        if b_path is None:
            raise ValueError(f"no partner for {a_path} in {b_dir} (expected {a_path.stem}.*)")
        pairs.append((a_path, b_path))
    out = prepare_output_dir(output_dir)
    from PIL import Image

    tmpdir = Path(tempfile.mkdtemp(prefix=".combine.", dir=out))
    try:
        for a_path, b_path in pairs:
            a, b = read_rgb(a_path), read_rgb(b_path)
            if a.shape != b.shape:
                raise ValueError(f"sizes differ: {a_path} is {a.shape[1]} x {a.shape[0]}, "
                                 f"{b_path} is {b.shape[1]} x {b.shape[0]}")
            Image.fromarray(np.concatenate([a, b], axis=1)).save(
                tmpdir / f"{a_path.stem}.png", compress_level=1)
        for a_path, _ in pairs:
            os.replace(tmpdir / f"{a_path.stem}.png", out / f"{a_path.stem}.png")
    finally:
        for leftover in tmpdir.iterdir():
            leftover.unlink()
        tmpdir.rmdir()
    return len(pairs)


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        count = combine(args.input_dir, args.b_dir, args.output_dir)
        print(f"process.py combine: wrote {count} A|B images to {args.output_dir}")

    return run_cli("process.py", body)


if __name__ == "__main__":
    raise SystemExit(main())

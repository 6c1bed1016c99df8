"""process3D.py: make membrane, cytoplasm and overlap images; convert stacks.

The thesis' command line, e.g.::

    python process3D.py --operation membrane --input_dir datasets/label_a.tif \\
        --output_dir datasets/membrane_a

Stacks are (z, y, x); images are written as numbered PNG slices 00.png, 01.png, ...
(0/255 for masks).  Definitions, with label_z the labels of slice z:

* membrane: the labels in the pixel's 3 x 3 in-slice neighbourhood differ (image
  borders mirrored, so only pixels inside the image count).
* cytoplasm: label > 0 and not membrane.
* overlap (N-1 images): with m_z = label_z off membrane and 0 on it, image z is
  m_z == m_(z+1) and m_z > 0.
* consecutive (N-1 RGB images): red = slice z, green = slice z+1, blue = 0.
* eroskele: foreground = first channel >= 127; erode --erosions times with the
  4-connected 3 x 3 cross (outside the image is background), then skeletonize (2-D).
* split: with h = H // 2 and w = W // 2 for H x W slices, c = [:, :h, :w],
  b = [:, :h, w:2w], a = [:, h:2h, w:2w], d = [:, h:2h, :w]; for an odd height or
  width the last row or column is dropped so the four quadrants are equal.
* evaluation: the reconstruction of the stack's own cytoplasm and overlap images
  (the best the representation can reach; membranes are 0).

Every input stack needs at least one slice of at least 1 x 1 pixels (split: 2 x 2).
Nothing is written when an input or option is invalid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neuron3d import io, labels
from neuron3d.cli import ArgumentParser, check_name, check_output_dir, run_cli
from neuron3d.synthetic import check_seed, check_shape

OPERATIONS = {
    "split": "split a stack into quadrants <split>_a.tif ... <split>_d.tif",
    "membrane": "label stack -> membrane PNG slices",
    "cytoplasm": "label stack -> cytoplasm PNG slices",
    "overlap": "label stack -> N-1 overlap PNG slices",
    "consecutive": "image stack -> N-1 RGB PNGs (red = slice z, green = slice z+1)",
    "eroskele": "slice images -> eroded and skeletonized overlap PNG slices",
    "tif_to_png": "TIFF stack -> PNG slices",
    "png_to_tif": "trainer's *-outputs.png (or numbered slices) -> <output_dir>/<name>.tif",
    "evaluation": "label_<q>.tif -> evaluation volume <output_dir>/<name or evaluate_<q>>.tif",
    "synthetic": "write synthetic train-input.tif and train-labels.tif into output_dir",
}


def build_parser():
    doc = __doc__.split("\n\n")
    parser = ArgumentParser(
        prog="process3D.py",
        description=doc[0] + "\n\noperations:\n"
        + "\n".join(f"  {k:<12} {v}" for k, v in OPERATIONS.items()),
        epilog="\n\n".join(doc[3:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        either_spelling=True,
    )
    parser.add_argument("--operation", required=True, choices=list(OPERATIONS),
                        metavar="OPERATION", help="one of: " + ", ".join(OPERATIONS))
    parser.add_argument("--input_dir", help="input .tif stack or folder of numbered slice files")
    parser.add_argument("--output_dir", required=True, help="output folder")
    parser.add_argument("--split", help="prefix of the quadrant files (split), e.g. em or label")
    parser.add_argument("--name", help="output file name without folder or .tif "
                                       "(png_to_tif, evaluation)")
    parser.add_argument("--erosions", type=int, default=10,
                        help="erosions before skeletonizing, >= 0 (eroskele; default 10, "
                             "the thesis')")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        default=(64, 512, 512),
                        help="synthetic volume shape, each >= 1 (default 64 512 512)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed >= 0 (synthetic; default 0)")
    return parser


def _need(args, name):
    if getattr(args, name) is None:
        raise ValueError(f"--operation {args.operation} needs --{name}")
    return getattr(args, name)


def check_args(args):
    """Check every option the operation uses, before reading or writing anything."""
    op = args.operation
    check_output_dir(args.output_dir, "--output_dir")
    if op == "synthetic":
        check_shape(args.shape, "--shape")
        check_seed(args.seed, "--seed")
        return
    _need(args, "input_dir")
    if op == "split":
        check_name(_need(args, "split"), "--split")
    elif op == "png_to_tif":
        check_name(_need(args, "name"), "--name")
    elif op == "evaluation" and args.name is not None:
        check_name(args.name, "--name")
    elif op == "eroskele":
        labels.check_count(args.erosions, "--erosions")


def run(args):
    """Execute one operation; returns a one-line summary of what was written."""
    check_args(args)
    op = args.operation
    out = Path(args.output_dir)
    if op == "synthetic":
        from neuron3d.synthetic import synthetic_volume

        em, ids = synthetic_volume(args.shape, seed=args.seed)
        io.write_tif(out / "train-input.tif", em)
        io.write_tif(out / "train-labels.tif", ids)
        return (f"wrote synthetic {em.shape} EM and {int(ids.max())} neuron IDs to "
                f"{out / 'train-input.tif'} and {out / 'train-labels.tif'}")
    source = args.input_dir
    if op == "split":
        stack = io.read_stack(source)
        parts = labels.split_quadrants(stack, source)
        written = [io.write_tif(out / f"{args.split}_{q}.tif", part) for q, part in parts.items()]
        return (f"wrote {len(written)} quadrants of {parts['a'].shape[1:3]} from "
                f"{stack.shape[1:3]} as {out / args.split}_[abcd].tif")
    if op in ("membrane", "cytoplasm", "overlap"):
        stack = io.read_labels(source)
        make = {"membrane": labels.membrane, "cytoplasm": labels.cytoplasm,
                "overlap": labels.overlap}[op]
        files = io.write_slices(out, make(stack, source=source))
    elif op == "consecutive":
        images = io.read_stack(source, channel=0)
        files = io.write_slices(out, labels.consecutive(images, source))
    elif op == "eroskele":
        foreground = io.read_binary(source)
        files = io.write_slices(out, labels.eroskele(foreground, args.erosions, source))
    elif op == "tif_to_png":
        if Path(source).is_dir():
            raise ValueError(f"tif_to_png expects a .tif stack, got a folder: {source}")
        stack = labels.check_stack(io.read_stack(source), source, channels=True)
        files = io.write_slices(out, stack)
    elif op == "png_to_tif":
        stack = labels.check_stack(io.read_stack(source, channel=0), source, channels=True)
        path = io.write_tif(out / f"{args.name}.tif", stack)
        return f"wrote {stack.shape} {stack.dtype} stack to {path}"
    elif op == "evaluation":
        from neuron3d.reconstruct import evaluation_volume

        stack = io.read_labels(source)
        name = args.name or "evaluate_" + Path(source).stem.removeprefix("label_")
        volume = evaluation_volume(stack, source=source)
        path = io.write_tif(out / f"{name}.tif", volume)
        return f"wrote evaluation volume with {int(volume.max())} objects to {path}"
    return f"wrote {len(files)} slices to {out}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("process3D.py", lambda: print(f"process3D.py {args.operation}: {run(args)}"))


if __name__ == "__main__":
    raise SystemExit(main())

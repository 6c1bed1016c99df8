"""process3D.py: make membrane, cytoplasm and overlap images; convert stacks.

Thesis-compatible command line (GUIDE §2), e.g.::

    python process3D.py --operation membrane --input_dir datasets/label_a.tif \
        --output_dir datasets/membrane_a
"""

from __future__ import annotations

from pathlib import Path

from neuron3d import io, labels
from neuron3d.cli import ArgumentParser, run_cli

OPERATIONS = {
    "split": "split a stack into quadrants <split>_a.tif ... <split>_d.tif",
    "membrane": "label stack -> membrane PNG slices",
    "cytoplasm": "label stack -> cytoplasm PNG slices",
    "overlap": "label stack -> N-1 overlap PNG slices",
    "consecutive": "image stack -> N-1 RGB PNGs (red = slice z, green = slice z+1)",
    "eroskele": "slice images -> eroded and skeletonized overlap PNG slices",
    "tif_to_png": "TIFF stack -> PNG slices",
    "png_to_tif": "the trainer's *-outputs.png (or numbered slices) -> <output_dir>/<name>.tif",
    "evaluation": "label stack -> evaluation volume <output_dir>/<name>.tif (GUIDE §3)",
    "synthetic": "write synthetic train-input.tif and train-labels.tif into output_dir",
}


def build_parser():
    parser = ArgumentParser(
        prog="process3D.py",
        description="Turn label stacks into membrane, cytoplasm and overlap images and convert "
        "between TIFF stacks and PNG slices. Operations: "
        + "; ".join(f"{k}: {v}" for k, v in OPERATIONS.items()),
    )
    parser.add_argument("--operation", required=True, choices=list(OPERATIONS),
                        metavar="OPERATION", help="one of: " + ", ".join(OPERATIONS))
    parser.add_argument("--input_dir", help="input .tif stack or folder of numbered slice files")
    parser.add_argument("--output_dir", required=True, help="output folder")
    parser.add_argument("--split", help="prefix of the quadrant files (split), e.g. em or label")
    parser.add_argument("--name", help="output file name without .tif (png_to_tif, evaluation)")
    parser.add_argument("--erosions", type=int, default=10,
                        help="erosions before skeletonizing (eroskele; default 10, the thesis')")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        default=(64, 512, 512), help="synthetic volume shape (default 64 512 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (synthetic; default 0)")
    return parser


def _need(args, name):
    if getattr(args, name) is None:
        raise ValueError(f"--operation {args.operation} needs --{name}")
    return getattr(args, name)


def _label_images(args, make):
    stack = io.read_labels(_need(args, "input_dir"))
    return io.write_slices(args.output_dir, make(stack))


def run(args):
    """Execute one operation; returns a one-line summary of what was written."""
    op = args.operation
    out = Path(args.output_dir)
    if op == "synthetic":
        from neuron3d.synthetic import synthetic_volume

        if min(args.shape) < 1:
            raise ValueError(f"--shape must be positive, got {tuple(args.shape)}")
        em, ids = synthetic_volume(tuple(args.shape), seed=args.seed)
        io.prepare_output_dir(out)
        io.write_tif(out / "train-input.tif", em)
        io.write_tif(out / "train-labels.tif", ids)
        return (f"wrote synthetic {em.shape} EM and {int(ids.max())} neuron IDs to "
                f"{out / 'train-input.tif'} and {out / 'train-labels.tif'}")
    source = _need(args, "input_dir")
    if op == "split":
        prefix = _need(args, "split")
        stack = io.read_stack(source)
        parts = labels.split_quadrants(stack, source)
        io.prepare_output_dir(out)
        written = [io.write_tif(out / f"{prefix}_{q}.tif", part) for q, part in parts.items()]
        return f"wrote {len(written)} quadrants of {stack.shape[1:3]} as {out / prefix}_[abcd].tif"
    if op == "membrane":
        files = _label_images(args, labels.membrane)
    elif op == "cytoplasm":
        files = _label_images(args, labels.cytoplasm)
    elif op == "overlap":
        files = _label_images(args, labels.overlap)
    elif op == "consecutive":
        images = io.read_stack(source, channel=0)
        files = io.write_slices(out, labels.consecutive(images))
    elif op == "eroskele":
        foreground = io.read_binary(source)
        files = io.write_slices(out, labels.eroskele(foreground, args.erosions))
    elif op == "tif_to_png":
        if Path(source).is_dir():
            raise ValueError(f"tif_to_png expects a .tif stack, got a folder: {source}")
        stack = io.read_stack(source)
        files = io.write_slices(out, stack)
    elif op == "png_to_tif":
        name = _need(args, "name")
        stack = io.read_stack(source, channel=0)
        path = io.write_tif(out / f"{name}.tif", stack)
        return f"wrote {stack.shape} {stack.dtype} stack to {path}"
    elif op == "evaluation":
        from neuron3d.reconstruct import evaluation_volume

        stack = io.read_labels(source)
        name = args.name or "evaluate_" + Path(source).stem.removeprefix("label_")
        volume = evaluation_volume(stack)
        path = io.write_tif(out / f"{name}.tif", volume)
        return f"wrote evaluation volume with {int(volume.max())} objects to {path}"
    return f"wrote {len(files)} slices to {out}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("process3D.py", lambda: print(f"process3D.py {args.operation}: {run(args)}"))


if __name__ == "__main__":
    raise SystemExit(main())

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
* tif_to_zarr, zarr_to_tif: convert a stack to an OME-Zarr store and back.

Large volumes: an --input_dir ending in .zarr is read as an OME-Zarr store, and an
--output_dir ending in .zarr is written as one (chunks --chunks) instead of PNG slices or
a .tif.  With --scheduler (local:N or tcp://HOST:PORT) membrane, cytoplasm, overlap,
consecutive, eroskele and evaluation run blockwise on dask, .zarr to .zarr, with results
equal to the in-memory ones.

Every input stack needs at least one slice of at least 1 x 1 pixels (split: 2 x 2).
Nothing is written when an input or option is invalid, and an output that is, contains or
lies inside the input (--output_dir equal to --input_dir, X.zarr/mem.zarr for X.zarr) is
refused before anything is read; split's quadrant files may sit beside their input.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from neuron3d import blockwise, io, labels, zarrio
from neuron3d.cli import ArgumentParser, check_name, check_output_dir, run_cli

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
    "tif_to_zarr": "TIFF stack (or slice folder) -> OME-Zarr store <output_dir>.zarr",
    "zarr_to_tif": "OME-Zarr store -> TIFF stack <output_dir>.tif",
}
#: How error messages name the input.
FLAG = "--input_dir"
#: What --scheduler runs blockwise.
BLOCKWISE = ("membrane", "cytoplasm", "overlap", "consecutive", "eroskele", "evaluation")


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
    parser.add_argument("--voxel_size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size in nm, recorded in the OME-Zarr metadata of "
                             "tif_to_zarr")
    parser.add_argument("--kind", choices=("image", "labels"),
                        help="tif_to_zarr: what the stack holds, for its pyramid (the mean of "
                             "2 x 2 (x 2) voxels, or the most frequent label) and its OME-Zarr "
                             "image-label metadata (default: labels for integers of 16 bits or "
                             "more, image otherwise; uint8 label IDs need --kind labels)")
    blockwise.add_arguments(parser)
    return parser


def _need(args, name):
    if getattr(args, name) is None:
        raise ValueError(f"--operation {args.operation} needs --{name}")
    return getattr(args, name)


def check_args(args):
    """Check every option the operation uses, before reading or writing anything."""
    op = args.operation
    if op != "zarr_to_tif":  # which writes a file
        check_output_dir(args.output_dir, "--output_dir")
    if op == "synthetic":
        from neuron3d.synthetic import check_seed, check_shape

        check_shape(args.shape, "--shape")
        check_seed(args.seed, "--seed")
        check_chunks_used(args, output_targets(args))
        return
    _need(args, "input_dir")
    zarr_in, zarr_out = zarrio.is_zarr(args.input_dir), zarrio.is_zarr(args.output_dir)
    if op == "tif_to_zarr" and not zarr_out:
        raise ValueError(f"tif_to_zarr writes a .zarr store: --output_dir must end in .zarr, "
                         f"got {args.output_dir}")
    if op == "zarr_to_tif" and (not zarr_in or
                                Path(args.output_dir).suffix.lower() not in io.TIFF_SUFFIXES):
        raise ValueError("zarr_to_tif reads --input_dir X.zarr and writes --output_dir X.tif, "
                         f"got {args.input_dir} and {args.output_dir}")
    if zarr_out and op in ("split", "tif_to_png", "png_to_tif", "zarr_to_tif"):
        raise ValueError(f"--operation {op} does not write .zarr stores (--output_dir "
                         f"{args.output_dir})")
    if args.kind is not None and op != "tif_to_zarr":
        raise ValueError(f"--kind {args.kind} is for --operation tif_to_zarr, not {op}")
    if args.voxel_size is not None and (op != "tif_to_zarr" or not all(
            math.isfinite(v) and v > 0 for v in args.voxel_size)):
        raise ValueError("--voxel_size is three finite sizes > 0 in nm, for tif_to_zarr, got "
                         f"{' '.join(f'{v:g}' for v in args.voxel_size)}")
    if args.scheduler is not None and op not in BLOCKWISE:
        raise ValueError(f"--scheduler runs {', '.join(BLOCKWISE)} blockwise, not {op}")
    blockwise.check_arguments(args, {"--input_dir": args.input_dir},
                              {"--output_dir": args.output_dir})
    if op == "split":
        check_name(_need(args, "split"), "--split")
    elif op == "png_to_tif":
        check_name(_need(args, "name"), "--name")
    elif op == "evaluation" and args.name is not None:
        check_name(args.name, "--name")
    elif op == "eroskele":
        labels.check_count(args.erosions, "--erosions")
    targets = output_targets(args)
    check_chunks_used(args, targets)
    io.check_outputs_apart({"--input_dir": args.input_dir}, targets)


def check_chunks_used(args, targets):
    """Refuse --chunks where nothing uses it: no .zarr output and no --scheduler blocks."""
    if args.chunks is not None and args.scheduler is None and not any(
            zarrio.is_zarr(path) for path in targets.values()):
        raise ValueError(f"--chunks applies to .zarr outputs (and --scheduler blocks); "
                         f"--operation {args.operation} writes "
                         f"{', '.join(map(str, targets.values()))}")


def output_targets(args):
    """What the operation creates or replaces, keyed by how it is named in messages.

    ``split`` writes ``<output_dir>/<split>_a.tif`` ... (beside its input, as the thesis
    does), ``png_to_tif`` and ``evaluation`` write ``<output_dir>/<name>.tif``, the other
    operations write ``--output_dir`` itself (a folder of slices, a .zarr store or a .tif).
    """
    op, out = args.operation, Path(args.output_dir)
    if op == "synthetic":
        return {"--output_dir (EM)": out / "train-input.tif",
                "--output_dir (labels)": out / "train-labels.tif"}
    if op == "split":
        return {f"--output_dir (quadrant {q})": out / f"{args.split}_{q}.tif" for q in "abcd"}
    if op == "png_to_tif":
        return {"--output_dir/--name": out / f"{args.name}.tif"}
    if op == "evaluation" and args.scheduler is None and not zarrio.is_zarr(out):
        return {"--output_dir/--name": out / f"{evaluation_name(args)}.tif"}
    return {"--output_dir": out}


def evaluation_name(args):
    """The evaluation volume's file name: --name, or evaluate_<q> for label_<q>.tif."""
    return args.name or "evaluate_" + Path(args.input_dir).stem.removeprefix("label_")


def run_blockwise(args):
    """An operation blockwise on dask, .zarr to .zarr."""
    op, source, out = args.operation, args.input_dir, Path(args.output_dir)
    zarrio.open_array(source, FLAG)  # missing, corrupt or not 3-D: before starting the engine
    blockwise.check_operation_input(op, source)  # dtype and shape, before the engine starts
    with blockwise.engine(args.scheduler, args.memory_limit) as client:
        if op == "evaluation":
            count = blockwise.evaluation_volume(client, source, out, args.chunks)
            return f"wrote evaluation volume with {count} objects to {out}"
        shape = blockwise.per_slice(client, op, source, out, args.chunks, args.erosions)
    return f"wrote {shape} to {out}"


def _write(out, stack, chunks):
    """``stack`` as PNG slices in folder ``out``, or as a zarr store if ``out`` ends in .zarr."""
    written = io.write_stack(out, stack, slices=True, chunks=chunks)
    if zarrio.is_zarr(out):
        return f"wrote {stack.shape} to {out}"
    return f"wrote {len(written)} slices to {out}"


def run(args):
    """Execute one operation; returns a one-line summary of what was written."""
    check_args(args)
    if args.scheduler is not None:
        return run_blockwise(args)
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
        stack = io.read_stack(source, what=FLAG)
        parts = labels.split_quadrants(stack, source)
        written = [io.write_tif(out / f"{args.split}_{q}.tif", part) for q, part in parts.items()]
        return (f"wrote {len(written)} quadrants of {parts['a'].shape[1:3]} from "
                f"{stack.shape[1:3]} as {out / args.split}_[abcd].tif")
    if op in ("membrane", "cytoplasm", "overlap"):
        stack = io.read_labels(source, what=FLAG)
        make = {"membrane": labels.membrane, "cytoplasm": labels.cytoplasm,
                "overlap": labels.overlap}[op]
        return _write(out, make(stack, source=source), args.chunks)
    if op == "consecutive":
        images = io.read_stack(source, channel=0, what=FLAG)
        return _write(out, labels.consecutive(images, source), args.chunks)
    if op == "eroskele":
        foreground = io.read_binary(source, what=FLAG)
        return _write(out, labels.eroskele(foreground, args.erosions, source), args.chunks)
    if op == "tif_to_zarr":
        stack = labels.check_stack(io.read_stack(source, what=FLAG), source, channels=True)
        if args.kind == "labels" and (stack.ndim != 3 or stack.dtype.kind not in "biu"):
            raise ValueError(f"--kind labels needs a (z, y, x) stack of integer IDs, got "
                             f"{stack.dtype} of shape {stack.shape} from {source}")
        io.write_stack(out, stack, chunks=args.chunks, voxel_size=args.voxel_size,
                       kind=args.kind)
        return (f"wrote {stack.shape} {stack.dtype} to {out} (chunks "
                f"{' x '.join(map(str, zarrio.chunks_for(stack.shape, args.chunks)[:3]))})")
    if op == "zarr_to_tif":
        stack = io.read_stack(source, what=FLAG)
        io.write_tif(out, stack)
        return f"wrote {stack.shape} {stack.dtype} stack to {out}"
    if op == "tif_to_png":
        if Path(source).is_dir():
            raise ValueError(f"tif_to_png expects a .tif stack, got a folder: {source}")
        stack = labels.check_stack(io.read_stack(source, what=FLAG), source, channels=True)
        files = io.write_slices(out, stack)
    elif op == "png_to_tif":
        stack = labels.check_stack(io.read_stack(source, channel=0, what=FLAG), source,
                                   channels=True)
        path = io.write_tif(out / f"{args.name}.tif", stack)
        return f"wrote {stack.shape} {stack.dtype} stack to {path}"
    elif op == "evaluation":
        from neuron3d.reconstruct import evaluation_volume

        stack = io.read_labels(source, what=FLAG)
        name = evaluation_name(args)
        volume = evaluation_volume(stack, source=source)
        path = io.write_stack(out if zarrio.is_zarr(out) else out / f"{name}.tif", volume,
                              chunks=args.chunks)
        return f"wrote evaluation volume with {int(volume.max())} objects to {path}"
    return f"wrote {len(files)} slices to {out}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("process3D.py", lambda: print(f"process3D.py {args.operation}: {run(args)}"))


if __name__ == "__main__":
    raise SystemExit(main())

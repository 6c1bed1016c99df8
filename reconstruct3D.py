"""reconstruct3D.py: label neurons from predicted cytoplasm and overlap images.

Interleaves N cytoplasm planes with N-1 overlap planes (C0, O0, C1, ..., C(N-1)),
labels 3D connected components (6-connected by default) and keeps the cytoplasm
planes; writes ``<output_dir>/<name>.tif`` with IDs 1..K.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from neuron3d import io
from neuron3d.cli import ArgumentParser, run_cli
from neuron3d.reconstruct import CONNECTIVITIES, reconstruct


def build_parser():
    parser = ArgumentParser(prog="reconstruct3D.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input_dir_cytoplasm", required=True,
                        help="cytoplasm images: folder of slice files or .tif stack (N slices)")
    parser.add_argument("--input_dir_overlap", required=True,
                        help="overlap images: folder or .tif (N-1 slices; an N-th is ignored)")
    parser.add_argument("--output_dir", required=True, help="folder for <name>.tif")
    parser.add_argument("--name", required=True, help="output file name without .tif")
    parser.add_argument("--connectivity", type=int, default=6, choices=CONNECTIVITIES,
                        help="3D neighbourhood (default 6, face neighbours, as in the thesis)")
    parser.add_argument("--threshold", type=int, default=127,
                        help="foreground is value >= threshold, first channel (default 127)")
    return parser


def _is_empty_folder(path):
    path = Path(path)
    return path.is_dir() and not any(io.SLICE_PATTERN.match(p.name) for p in path.iterdir())


def run(args):
    cyto_path, over_path = args.input_dir_cytoplasm, args.input_dir_overlap
    out = io.prepare_output_dir(args.output_dir) / f"{args.name}.tif"
    cyto = io.read_binary(cyto_path, args.threshold)
    if len(cyto) == 1 and _is_empty_folder(over_path):  # one slice has no overlap images
        over = np.zeros((0,) + cyto.shape[1:], dtype=bool)
    else:
        over = io.read_binary(over_path, args.threshold)
    if len(over) == len(cyto):
        print(f"reconstruct3D.py: {len(over)} overlap slices for {len(cyto)} cytoplasm slices; "
              "ignoring the last overlap slice", file=sys.stderr)
        over = over[:-1]
    elif len(over) != len(cyto) - 1:
        raise ValueError(
            f"{len(cyto)} cytoplasm slices ({cyto_path}) need {len(cyto) - 1} overlap slices, "
            f"got {len(over)} ({over_path})"
        )
    if cyto.shape[1:] != over.shape[1:]:
        raise ValueError(f"cytoplasm slices ({cyto_path}) are {cyto.shape[1:]} but overlap "
                         f"slices ({over_path}) are {over.shape[1:]}")
    print(f"reconstruct3D.py: labelling {2 * len(cyto) - 1} interleaved planes of "
          f"{cyto.shape[1]} x {cyto.shape[2]} ({args.connectivity}-connected)", file=sys.stderr)
    start = time.perf_counter()
    labels = reconstruct(cyto, over, args.connectivity)
    io.write_tif(out, labels)
    print(f"reconstruct3D.py: {int(labels.max())} objects in {time.perf_counter() - start:.1f} s; "
          f"wrote {labels.shape} {labels.dtype} to {Path(out)}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("reconstruct3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

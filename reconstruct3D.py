"""reconstruct3D.py: label neurons from predicted cytoplasm and overlap images.

Binarizes the images (foreground: first channel >= --threshold), interleaves the
N cytoplasm planes with the N-1 overlap planes (C0, O0, C1, ..., C(N-1)), labels
the foreground's 3D connected components (6-connected, i.e. face neighbours, by
default) and keeps the cytoplasm planes: ``<output_dir>/<name>.tif`` holds IDs
1..K, background 0, in the smallest unsigned dtype (at least 16 bits) that holds K.
Nothing is written (no folder created) when the input is invalid.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from neuron3d import io
from neuron3d.cli import ArgumentParser, check_name, check_output_dir, run_cli
from neuron3d.reconstruct import (
    CONNECTIVITIES,
    THRESHOLDS,
    check_connectivity,
    check_planes,
    check_threshold,
    reconstruct,
)


def build_parser():
    parser = ArgumentParser(prog="reconstruct3D.py", description=__doc__.replace("``", ""),
                            either_spelling=True)
    parser.add_argument("--input_dir_cytoplasm", required=True,
                        help="cytoplasm images: folder of slice files or .tif stack (N slices)")
    parser.add_argument("--input_dir_overlap", required=True,
                        help="overlap images: folder or .tif (N-1 slices; an N-th is ignored "
                             "with a warning; an empty folder for N = 1)")
    parser.add_argument("--output_dir", required=True,
                        help="folder for <name>.tif (created when the result is written)")
    parser.add_argument("--name", required=True,
                        help="output file name without folder or .tif, e.g. experiment_8")
    parser.add_argument("--connectivity", type=int, default=6, choices=CONNECTIVITIES,
                        help="3D neighbourhood (default 6, face neighbours, as in the thesis)")
    parser.add_argument("--threshold", type=int, default=127,
                        help="foreground is first-channel value >= THRESHOLD, a whole number "
                             f"in {THRESHOLDS[0]}..{THRESHOLDS[1]} (8-bit images; default 127, "
                             "the thesis')")
    return parser


def _is_empty_folder(path):
    path = Path(path)
    return path.is_dir() and not any(io.SLICE_PATTERN.match(p.name) for p in path.iterdir())


def run(args):
    cyto_path, over_path = args.input_dir_cytoplasm, args.input_dir_overlap
    name = check_name(args.name, "--name")
    threshold = check_threshold(args.threshold, "--threshold")
    connectivity = check_connectivity(args.connectivity, "--connectivity")
    out = check_output_dir(args.output_dir, "--output_dir") / f"{name}.tif"
    cyto = io.read_binary(cyto_path, threshold)
    if len(cyto) == 1 and _is_empty_folder(over_path):  # one slice has no overlap images
        over = np.zeros((0,) + cyto.shape[1:], dtype=bool)
    else:
        over = io.read_binary(over_path, threshold)
    if len(over) == len(cyto) and len(cyto) > 0:
        print(f"reconstruct3D.py: {len(over)} overlap slices for {len(cyto)} cytoplasm slices; "
              "ignoring the last overlap slice", file=sys.stderr)
        over = over[:-1]
    cyto, over = check_planes(cyto, over, cyto_path, over_path)
    print(f"reconstruct3D.py: labelling {2 * len(cyto) - 1} interleaved planes of "
          f"{cyto.shape[1]} x {cyto.shape[2]} ({connectivity}-connected)", file=sys.stderr)
    start = time.perf_counter()
    labels = reconstruct(cyto, over, connectivity, cyto_path, over_path)
    io.write_tif(out, labels)
    print(f"reconstruct3D.py: {int(labels.max())} objects in {time.perf_counter() - start:.1f} s; "
          f"wrote {labels.shape} {labels.dtype} to {out}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("reconstruct3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""Time process3D.py membrane + cytoplasm + overlap on a 100 x 512 x 512 label stack.

--startup instead counts what ``--help`` and ``--operation membrane`` import
(``python -X importtime``: modules and cumulative seconds of the top-level imports).

Each operation runs through the real CLI (new interpreter, TIFF reading and PNG
writing included).  The naive reference computes the membrane image the thesis'
way, a per-pixel Python min/max ``scipy.ndimage.generic_filter``, timed on a few
slices and scaled to the whole stack.

    python -m benchmarks.bench_process3D [--shape 100 512 512] [--repeats 3] [--startup]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from benchmarks.common import import_profile, median_time, report, run_cli
from neuron3d.synthetic import synthetic_labels


def naive_membrane_slice(plane):
    return ndimage.generic_filter(plane, lambda v: v.min() != v.max(), size=3, mode="reflect")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive_slices", type=int, default=2)
    parser.add_argument("--startup", action="store_true",
                        help="count the imports of --help and --operation membrane instead")
    args = parser.parse_args()
    labels = synthetic_labels(tuple(args.shape), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tifffile.imwrite(tmp / "labels.tif", labels)
        if args.startup:
            for name, argv in (("--help", ["--help"]),
                               ("--operation membrane", ["--operation", "membrane",
                                                         "--input_dir", tmp / "labels.tif",
                                                         "--output_dir", tmp / "m"])):
                runs = [import_profile("process3D.py", *argv) for _ in range(args.repeats)]
                print(f"process3D.py {name}: {runs[0][0]} modules, top-level imports "
                      f"{min(r[1] for r in runs):.3f} s (fastest of {args.repeats})")
            return

        def three_ops():
            for op in ("membrane", "cytoplasm", "overlap"):
                run_cli("process3D.py", "--operation", op, "--input_dir", tmp / "labels.tif",
                        "--output_dir", tmp / op)

        fast = median_time(three_ops, args.repeats)
        start = time.perf_counter()
        for z in range(args.naive_slices):
            naive_membrane_slice(labels[z])
        per_slice = (time.perf_counter() - start) / args.naive_slices
    naive = per_slice * len(labels)
    print(f"shape {tuple(args.shape)}, median of {args.repeats}")
    report("membrane + cytoplasm + overlap (3 CLI runs)", fast, naive,
           f"generic_filter membrane only, {args.naive_slices} slices scaled x"
           f"{len(labels) / args.naive_slices:.0f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

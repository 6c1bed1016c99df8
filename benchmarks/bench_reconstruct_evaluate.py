"""Time reconstruct3D.py and evaluate3D.py on 100 x 512 x 512 volumes against naive references.

* reconstruct3D.py (real CLI: reading 100 cytoplasm + 99 overlap PNGs, labelling, writing)
  against ``scipy.ndimage.label`` of the interleaved planes plus ``np.unique`` relabelling.
* evaluate3D.py (real CLI, reading two uint32 TIFFs included) against the thesis' style:
  a Counter of (true, predicted) voxel pairs for the contingency table and a per-voxel
  Python loop for recall/precision, timed on a fraction of the voxels and scaled.

    python -m benchmarks.bench_reconstruct_evaluate [--shape 100 512 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from benchmarks.common import median_time, report, run_cli
from neuron3d import io
from neuron3d import labels as L
from neuron3d.reconstruct import evaluation_volume, interleave
from neuron3d.synthetic import synthetic_labels


def naive_reconstruct(cyto, over):
    components, _ = ndimage.label(interleave(cyto, over))
    kept = components[0::2]
    _, inverse = np.unique(kept, return_inverse=True)
    return inverse.reshape(kept.shape)


def naive_evaluate_fraction(true, pred, fraction):
    t, p = true.ravel(), pred.ravel()
    n = int(len(t) * fraction)
    start = time.perf_counter()
    Counter(zip(t[:n].tolist(), p[:n].tolist()))
    tp = fn = fp = 0
    for i in range(n):
        a, b = t[i] > 0, p[i] > 0
        tp += a and b
        fn += a and not b
        fp += b and not a
    return (time.perf_counter() - start) / fraction


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.01,
                        help="share of voxels the naive evaluation is timed on")
    args = parser.parse_args()
    labels = synthetic_labels(tuple(args.shape), seed=0)
    mem = L.membrane(labels)
    cyto, over = L.cytoplasm(labels, mem), L.overlap(labels, mem)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        io.write_slices(tmp / "cyto", cyto)
        io.write_slices(tmp / "over", over)
        tifffile.imwrite(tmp / "true.tif", labels)
        tifffile.imwrite(tmp / "pred.tif", evaluation_volume(labels).astype(np.uint32))
        fast_rec = median_time(lambda: run_cli(
            "reconstruct3D.py", "--input_dir_cytoplasm", tmp / "cyto", "--input_dir_overlap",
            tmp / "over", "--output_dir", tmp, "--name", "rec"), args.repeats)
        naive_rec = median_time(lambda: naive_reconstruct(cyto, over), args.repeats)
        fast_eval = median_time(lambda: run_cli(
            "evaluate3D.py", "--predicted", tmp / "pred.tif", "--true", tmp / "true.tif"),
            args.repeats)
        pred = tifffile.imread(tmp / "pred.tif")
    naive_eval = naive_evaluate_fraction(labels, pred, args.fraction)
    print(f"shape {tuple(args.shape)}, median of {args.repeats}")
    report("reconstruct3D.py (CLI, PNG reading included)", fast_rec, naive_rec,
           "scipy.ndimage.label + np.unique, in memory")
    report("evaluate3D.py (CLI, TIFF reading included)", fast_eval, naive_eval,
           f"Counter of pairs + per-voxel loop on {args.fraction:.0%} of voxels, scaled")


if __name__ == "__main__":
    main()

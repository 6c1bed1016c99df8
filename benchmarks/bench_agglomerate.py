"""Time the agglomerating reconstruction beside the thesis' method on 100 x 512 x 512.

Inputs are made realistic from a synthetic volume's labels: the membrane and overlap
images blurred (Gaussian, 1 pixel in-plane) and with smooth noise added, as
probabilities in [0, 1].  Both methods run in memory on the same inputs, in the same
process, one after the other:

* agglomerate: ``neuron3d.agglomerate.agglomerate`` (fragments, affinities, waterz, one
  threshold);
* thesis: the cytoplasm image (made like the others) ``>= 0.5``, overlap ``>= 0.5``
  thinned with eroskele (10 erosions, skeleton), ``neuron3d.reconstruct.reconstruct``.

Peak memory is the process' peak resident size during the call above what it held
before (Linux: ``/proc/self/clear_refs`` resets the peak), which counts waterz's C++
allocations too; it is compared with the affinity volume (3 x z x y x float32).

    python -m benchmarks.bench_agglomerate [--shape 100 512 512] [--repeats 3] [--workers N]
                                           [--scoring median|mean] [--threshold 0.6]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import median_time
from neuron3d import labels as L
from neuron3d.agglomerate import DEFAULT_THRESHOLD, SCORINGS, agglomerate
from neuron3d.metrics import evaluate
from neuron3d.reconstruct import evaluation_volume, reconstruct
from neuron3d.synthetic import synthetic_labels


def noisy(mask, rng, sigma=1.0, noise=0.1):
    """A binary (z, y, x) mask as a blurred, noisy probability (float32 in [0, 1])."""
    image = ndimage.gaussian_filter(mask.astype(np.float32), (0, sigma, sigma))
    grain = ndimage.gaussian_filter(rng.normal(0, 1, mask.shape).astype(np.float32),
                                    (0, 1.5, 1.5))
    image += noise * grain / grain.std()
    return np.clip(image, 0, 1, out=image)


def _status(key):
    """A field of /proc/self/status in bytes, or None off Linux."""
    path = Path("/proc/self/status")
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def peak_memory(func):
    """Peak resident memory of ``func()`` above the resident size before it, in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
    except OSError:
        return None
    before = _status("VmRSS")
    func()
    peak = _status("VmHWM")
    return None if before is None or peak is None else peak - before


def thesis(cytoplasm, overlap):
    return reconstruct(cytoplasm >= 0.5, L.eroskele(overlap >= 0.5, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--scoring", default="median", choices=sorted(SCORINGS))
    parser.add_argument("--workers", type=int, default=None,
                        help="threads for agglomerate (default: the CPUs available)")
    args = parser.parse_args()
    labels = synthetic_labels(tuple(args.shape), seed=0)
    rng = np.random.default_rng(0)
    mask = L.membrane(labels)
    membrane = noisy(mask, rng)
    overlap = noisy(L.overlap(labels, mask), rng)
    cytoplasm = noisy(L.cytoplasm(labels, mask), rng)
    del mask

    def run_agglomerate():
        return agglomerate(membrane, overlap, [args.threshold], scoring=args.scoring,
                           workers=args.workers)[0]

    fast = median_time(run_agglomerate, args.repeats)
    slow = median_time(lambda: thesis(cytoplasm, overlap), args.repeats)
    memory = peak_memory(run_agglomerate)
    affinity_bytes = 3 * membrane.size * 4
    reference = evaluation_volume(labels)
    result = run_agglomerate()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"shape {tuple(args.shape)}, median of {args.repeats}, {cpus} CPUs, "
          f"workers {args.workers or cpus}, {args.scoring} scoring, threshold {args.threshold}")
    print(f"agglomerate: {fast:.2f} s; thesis (eroskele + reconstruct): {slow:.2f} s; "
          f"ratio agglomerate / thesis {fast / slow:.2f}")
    if memory is not None:
        print(f"agglomerate peak memory above its inputs: {memory / 2**20:.0f} MiB = "
              f"{memory / affinity_bytes:.2f} x the affinity volume "
              f"({affinity_bytes / 2**20:.0f} MiB)")
    # (the thesis' scores on these inputs mean little: the noise's pinholes in the overlap
    # grow under its 10 erosions until nearly every overlap is gone)
    ev = evaluate(reference, result)["adapted_rand_error"]
    gt = evaluate(labels, result)["adapted_rand_error"]
    print(f"agglomerate: {result.max()} objects, adapted Rand error {ev:.4f} vs evaluation "
          f"volume, {gt:.4f} vs labels")


if __name__ == "__main__":
    main()

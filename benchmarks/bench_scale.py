"""Blockwise reconstruct, evaluate and the membrane operation at 1x, 4x and 16x a base size.

For each size the inputs are generated blockwise straight into zarr stores (smooth random
cytoplasm and overlap masks; Voronoi-like ground-truth labels), then:

* **blockwise**: a fresh dask LocalCluster (``--workers`` processes, one thread each, memory
  limit ``--memory_limit`` per worker) runs ``neuron3d.blockwise.reconstruct``,
  ``contingency_table`` + every score (evaluate), and the per-slice ``membrane`` operation,
  zarr to zarr.  Peak worker memory is the largest peak resident size (``ru_maxrss``) of any
  worker process over the three operations (the workers are new for each size).
* **in memory** (sizes up to ``--in_memory_max``): the same three operations on the whole
  arrays, in a child process whose peak resident size is reported (reading the zarr
  stores is included in the time, as the blockwise path includes its reads).

Wall time is the median of ``--repeats`` runs; throughput is voxels per second.  The
targets (issue 12): peak worker memory flat (within 1.5x) while the volume grows 16x, and
blockwise throughput at least half the in-memory throughput at the same size.

**agglomerate** (issue 23) at 1x, 4x and 16x ``--agglomerate_base`` (64 x 512 x 512):
membrane and overlap probabilities (uint8, noisy, from the same square cells) go through
``neuron3d.blockwise.agglomerate_stores`` in a child process that starts its own
LocalCluster, so that its peak resident size is the *client's* (it holds the region graph
and the fragment tables) and the workers' peaks are the agglomeration's alone; in memory,
``neuron3d.agglomerate.agglomerate`` (waterz) in a child process.  The region graph's size
is reported, and per 10^9 voxels.  ``--fragments 3d``: one 3-D watershed per block of
``--chunks Z`` slices blockwise, against the in-memory ``fragment_mode="3d"`` (one watershed of
the volume).

    python -m benchmarks.bench_scale [--base 32 512 512] [--chunks 16 256 256] [--workers 2]
                                     [--memory_limit 2GiB] [--repeats 1] [--in_memory_max 16]
                                     [--agglomerate_base 64 512 512] [--operations ...]
                                     [--fragments 2d|3d]
    python -m benchmarks.bench_scale --scale small   # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from neuron3d import blockwise, zarrio

FACTORS = (1, 4, 16)


def _smooth_block(block, seed, density, block_info=None):
    from scipy import ndimage

    loc = block_info[0]["chunk-location"] if block_info else (0, 0, 0)
    rng = np.random.default_rng([seed, *loc])
    noise = ndimage.gaussian_filter(rng.random(block.shape, dtype=np.float32), (0, 3, 3))
    return (noise > np.quantile(noise, 1 - density)).astype(np.uint8) * 255


def _labels_block(block, seed, block_info=None):
    """Ground truth: square cells of 24 pixels, re-numbered per 8 slices (unique ids)."""
    loc = block_info[0]["array-location"]
    z = np.arange(*loc[0])[:, None, None] // 8
    y = np.arange(*loc[1])[None, :, None] // 24
    x = np.arange(*loc[2])[None, None, :] // 24
    return ((z * 100_003 + y * 1_009 + x) % 2_000_000 + 1).astype(np.uint32)


def make_inputs(folder, shape, chunks, seed=0):
    """cytoplasm.zarr, overlap.zarr (N planes, the last ignored), truth.zarr of ``shape``."""
    import dask.array as da

    template = da.zeros(shape, chunks=chunks, dtype=np.uint8)
    paths = {}
    for name, density, offset in (("cytoplasm", 0.6, 0), ("overlap", 0.3, 1)):
        array = template.map_blocks(_smooth_block, seed + offset, density, dtype=np.uint8)
        paths[name] = zarrio.write_zarr(folder / f"{name}.zarr", array, chunks)
    truth = template.map_blocks(_labels_block, seed, dtype=np.uint32)
    paths["truth"] = zarrio.write_zarr(folder / "truth.zarr", truth, chunks)
    return paths


def _cells(loc):
    z = np.arange(*loc[0])[:, None, None]
    y = np.arange(*loc[1])[None, :, None]
    x = np.arange(*loc[2])[None, None, :]
    return z, y, x


def _noisy(clean, seed, loc):
    rng = np.random.default_rng([seed, *(a[0] for a in loc)])
    noise = rng.normal(15, 12, clean.shape)  # below the seeds' 0.2 (51) mostly: cells are
    return np.clip(clean * 200.0 + noise, 0, 255).astype(np.uint8)  # a few fragments each


def _membrane_block(block, seed, block_info=None):
    """The square cells' boundaries (2 pixels wide), with noise, as uint8 0..255."""
    loc = block_info[0]["array-location"]
    _, y, x = _cells(loc)
    edge = ((y % 24) == 0) | ((y % 24) == 23) | ((x % 24) == 0) | ((x % 24) == 23)
    return _noisy(np.broadcast_to(edge, block.shape), seed, loc)


def _agglo_overlap_block(block, seed, block_info=None):
    """Where a cell continues from slice z to z + 1 (not across the 8-slice renumbering, not
    on membranes), with noise."""
    loc = block_info[0]["array-location"]
    z, y, x = _cells(loc)
    inside = ((y % 24) > 0) & ((y % 24) < 23) & ((x % 24) > 0) & ((x % 24) < 23)
    return _noisy(inside & ((z % 8) != 7), seed, loc)


def make_agglomerate_inputs(folder, shape, chunks, seed=0):
    """membrane.zarr (N slices) and agglo_overlap.zarr (N - 1) of ``shape``, chunked alike."""
    import dask.array as da

    paths = {}
    for name, depth, kernel in (("membrane", shape[0], _membrane_block),
                                ("agglo_overlap", shape[0] - 1, _agglo_overlap_block)):
        template = da.zeros((depth,) + tuple(shape[1:]), chunks=chunks, dtype=np.uint8)
        array = template.map_blocks(kernel, seed, dtype=np.uint8)
        paths[name] = str(zarrio.write_zarr(folder / f"{name}.zarr", array, chunks))
    return paths


def _agglomerate_blockwise(paths, folder, chunks, workers, memory_limit, scoring, fragments,
                           queue):
    with blockwise.engine(f"local:{workers}", memory_limit) as client:
        start = time.perf_counter()
        result = blockwise.agglomerate_stores(client, paths["membrane"],
                                              paths["agglo_overlap"], [folder / "agg.zarr"],
                                              [0.5], chunks, scoring=scoring,
                                              fragments=fragments)
        seconds = time.perf_counter() - start
        peak = max(client.run(_peak_rss_mib).values())
    queue.put((seconds, peak, _peak_rss_mib(), result))


def _agglomerate_in_memory(paths, folder, chunks, scoring, fragments, queue):
    from neuron3d.agglomerate import agglomerate

    start = time.perf_counter()
    (labels,) = agglomerate(zarrio.read_zarr(paths["membrane"]),
                            zarrio.read_zarr(paths["agglo_overlap"]), [0.5], scoring=scoring,
                            fragment_mode=fragments)
    zarrio.write_zarr(folder / "agg_memory.zarr", labels, chunks)
    queue.put((time.perf_counter() - start, _peak_rss_mib()))


def _in_child(target, *args):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def run_agglomerate(args, chunks):
    """The agglomeration's rows: blockwise (worker and client peaks) and in memory."""
    rows = []
    for factor in args.factors:
        shape = (args.agglomerate_base[0] * factor,) + tuple(args.agglomerate_base[1:])
        folder = Path(tempfile.mkdtemp(prefix="bench_scale_agglo_"))
        try:
            paths = make_agglomerate_inputs(folder, shape, chunks)
            runs = [_in_child(_agglomerate_blockwise, paths, folder, chunks, args.workers,
                              args.memory_limit, args.scoring, args.fragments)
                    for _ in range(args.repeats)]
            result = runs[0][3]
            row = {"factor": factor, "shape": shape, "voxels": int(np.prod(shape)),
                   "seconds": statistics.median(r[0] for r in runs),
                   "worker_peak_mib": max(r[1] for r in runs),
                   "client_peak_mib": max(r[2] for r in runs),
                   "fragments": result["fragments"], "edges": result["edges"],
                   "graph_mib": result["graph_bytes"] / 2**20}
            if factor <= args.in_memory_max:
                memory = [_in_child(_agglomerate_in_memory, paths, folder, chunks, args.scoring,
                                    args.fragments) for _ in range(args.repeats)]
                row["in_memory_seconds"] = statistics.median(m[0] for m in memory)
                row["in_memory_peak_mib"] = max(m[1] for m in memory)
            rows.append(row)
            print(f"agglomerate {factor}x {shape}: {row}", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def print_agglomerate_table(rows):
    nan = float("nan")
    print("\n| size | voxels | fragments | edges | region graph MiB | graph GiB per 10^9 "
          "voxels | blockwise s | Mvox/s | in memory s | Mvox/s | ratio | peak worker MiB | "
          "client peak MiB | in-memory peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = row["voxels"] / row["seconds"] / 1e6
        mem = row.get("in_memory_seconds")
        mem_rate = row["voxels"] / mem / 1e6 if mem else nan
        per_gvox = row["graph_mib"] / 1024 * 1e9 / row["voxels"]
        print(f"| {row['factor']}x {' x '.join(map(str, row['shape']))} | "
              f"{row['voxels'] / 1e6:.0f} M | {row['fragments']} | {row['edges']} | "
              f"{row['graph_mib']:.1f} | {per_gvox:.2f} | {row['seconds']:.1f} | {rate:.2f} | "
              f"{mem if mem else nan:.1f} | {mem_rate:.2f} | "
              f"{rate / mem_rate if mem else nan:.2f} | {row['worker_peak_mib']:.0f} | "
              f"{row['client_peak_mib']:.0f} | {row.get('in_memory_peak_mib', nan):.0f} |")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        memory = last.get("in_memory_peak_mib", nan) / first.get("in_memory_peak_mib", nan)
        print(f"\npeak worker memory over {last['voxels'] / first['voxels']:.0f}x the volume: "
              f"{last['worker_peak_mib'] / first['worker_peak_mib']:.2f}x (target: within "
              f"1.5x); in memory {memory:.2f}x")


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_blockwise(paths, folder, chunks, workers, memory_limit):
    """Seconds of reconstruct, evaluate, membrane; the peak worker memory (MiB)."""
    from neuron3d.metrics import scores_from_table

    seconds = {}
    with blockwise.engine(f"local:{workers}", memory_limit) as client:
        start = time.perf_counter()
        blockwise.reconstruct(client, paths["cytoplasm"], paths["overlap"],
                              folder / "recon.zarr", chunks)
        seconds["reconstruct"] = time.perf_counter() - start
        start = time.perf_counter()
        scores_from_table(blockwise.contingency_table(client, paths["truth"],
                                                      folder / "recon.zarr", chunks))
        seconds["evaluate"] = time.perf_counter() - start
        start = time.perf_counter()
        blockwise.per_slice(client, "membrane", paths["truth"], folder / "membrane.zarr",
                            chunks)
        seconds["membrane"] = time.perf_counter() - start
        peak = max(client.run(_peak_rss_mib).values())
    return seconds, peak


def _in_memory(paths, folder, chunks, queue):
    """What the commands do without --scheduler: read whole, compute, write the store."""
    from neuron3d import labels
    from neuron3d.metrics import evaluate
    from neuron3d.reconstruct import reconstruct

    seconds = {}
    start = time.perf_counter()
    cyto = zarrio.read_zarr(paths["cytoplasm"]) >= 127
    over = zarrio.read_zarr(paths["overlap"])[:-1] >= 127
    recon = reconstruct(cyto, over)
    del cyto, over
    zarrio.write_zarr(folder / "recon_memory.zarr", recon, chunks)
    seconds["reconstruct"] = time.perf_counter() - start
    del recon
    start = time.perf_counter()
    evaluate(zarrio.read_zarr(paths["truth"]), zarrio.read_zarr(folder / "recon_memory.zarr"))
    seconds["evaluate"] = time.perf_counter() - start
    start = time.perf_counter()
    zarrio.write_zarr(folder / "membrane_memory.zarr",
                      labels.membrane(zarrio.read_zarr(paths["truth"])), chunks)
    seconds["membrane"] = time.perf_counter() - start
    queue.put((seconds, _peak_rss_mib()))


def run_in_memory(paths, folder, chunks):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_in_memory, args=(paths, folder, chunks, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


#: --scale small: a tiny run of every operation that checks the script works (not a measure).
SMALL = {"base": (4, 64, 64), "agglomerate_base": (4, 64, 64), "chunks": (2, 32, 32),
         "workers": 1, "memory_limit": "1GiB", "factors": (1, 4)}
OPERATIONS = ("reconstruct", "agglomerate")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, nargs=3, default=(32, 512, 512))
    parser.add_argument("--agglomerate_base", type=int, nargs=3, default=(64, 512, 512))
    parser.add_argument("--chunks", type=int, nargs=3, default=(16, 256, 256))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory_limit", default="2GiB")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--in_memory_max", type=int, default=16,
                        help="largest factor also run in memory")
    parser.add_argument("--factors", type=int, nargs="+", default=FACTORS)
    parser.add_argument("--operations", nargs="+", choices=OPERATIONS, default=OPERATIONS,
                        help="reconstruct: reconstruct, evaluate and membrane; agglomerate")
    parser.add_argument("--scoring", choices=("median", "mean", "median_max"), default="median",
                        help="the agglomeration's boundary score")
    parser.add_argument("--fragments", choices=("2d", "3d"), default="2d",
                        help="the agglomeration's fragments: per slice, or 3-D (per block "
                             "blockwise, of the volume in memory)")
    parser.add_argument("--scale", choices=("full", "small"), default="full",
                        help="small: a tiny run that checks the script works (overrides the "
                             "sizes, chunks, workers and memory limit)")
    args = parser.parse_args(argv)
    if args.scale == "small":
        for key, value in SMALL.items():
            setattr(args, key, value)
    chunks = tuple(args.chunks)
    rows = []
    for factor in args.factors if "reconstruct" in args.operations else ():
        shape = (args.base[0] * factor,) + tuple(args.base[1:])
        folder = Path(tempfile.mkdtemp(prefix="bench_scale_"))
        try:
            paths = {k: str(v) for k, v in make_inputs(folder, shape, chunks).items()}
            voxels = int(np.prod(shape))
            runs = [run_blockwise(paths, folder, chunks, args.workers, args.memory_limit)
                    for _ in range(args.repeats)]
            row = {"factor": factor, "shape": shape, "voxels": voxels,
                   "blockwise": {op: statistics.median(r[0][op] for r in runs)
                                 for op in runs[0][0]},
                   "blockwise_peak_mib": max(r[1] for r in runs)}
            if factor <= args.in_memory_max:
                memory = [run_in_memory(paths, folder, chunks) for _ in range(args.repeats)]
                row["in_memory"] = {op: statistics.median(m[0][op] for m in memory)
                                    for op in memory[0][0]}
                row["in_memory_peak_mib"] = max(m[1] for m in memory)
            rows.append(row)
            print_row(row, flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if rows:
        print_table(rows)
    if "agglomerate" in args.operations:
        print_agglomerate_table(run_agglomerate(args, chunks))
    return 0


def print_row(row, flush=False):
    print(f"{row['factor']}x {row['shape']}: blockwise {row['blockwise']}, peak worker "
          f"{row['blockwise_peak_mib']:.0f} MiB; in memory {row.get('in_memory')}, peak "
          f"{row.get('in_memory_peak_mib', float('nan')):.0f} MiB", flush=flush)


def print_table(rows):
    print("\n| size | voxels | operation | blockwise s | blockwise Mvox/s | in memory s | "
          "in memory Mvox/s | ratio | peak worker MiB | in-memory peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for op, seconds in row["blockwise"].items():
            mem = row.get("in_memory", {}).get(op)
            rate = row["voxels"] / seconds / 1e6
            mem_rate = row["voxels"] / mem / 1e6 if mem else float("nan")
            print(f"| {row['factor']}x {' x '.join(map(str, row['shape']))} | "
                  f"{row['voxels'] / 1e6:.0f} M | {op} | {seconds:.1f} | {rate:.1f} | "
                  f"{mem if mem else float('nan'):.1f} | {mem_rate:.1f} | "
                  f"{rate / mem_rate if mem else float('nan'):.2f} | "
                  f"{row['blockwise_peak_mib']:.0f} | "
                  f"{row.get('in_memory_peak_mib', float('nan')):.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())

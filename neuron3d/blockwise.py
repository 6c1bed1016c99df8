"""Blockwise processing of zarr volumes on dask.distributed, equal to the in-memory results.

``--scheduler`` picks the engine: ``local:N`` starts a dask ``LocalCluster`` of N
worker processes on this machine; ``tcp://HOST:PORT`` connects to a running dask
scheduler (dask-jobqueue on SLURM/PBS, dask-kubernetes, ``dask scheduler`` by
hand...).  Workers read their inputs from and write their outputs to zarr stores
on a file system they share with the client.  Each task holds one output chunk
plus its halo.

The block grid is the output store's chunk grid, so no two tasks write the same
chunk.  What each operation reads around its block, and why that is exact:

* membrane, cytoplasm: a 1-pixel halo in y and x (the 3 x 3 in-slice
  neighbourhood); at the volume's faces no halo, as in memory.
* overlap: the next slice, plus the 1-pixel halo in y and x for the membranes.
* consecutive: the next slice.
* eroskele: whole slices (blocks span the slice in y and x): the skeleton of a
  pixel depends on its whole connected component, which no fixed halo bounds.
* reconstruct / evaluation volume: 3D connected components per block (cc3d);
  the labels touching across each block face are paired from the planes the
  labelling tasks hold; one union-find over those pairs (scipy's sparse
  connected components); then each block is labelled again and written with its
  slice of the map.  **Canonical numbering**: objects are numbered 1..K in the C order
  (z, then y, then x) of their first voxel in the output, the same numbering the
  in-memory path gives (it renumbers in order of first appearance), so both
  results are equal bit for bit.  6-connectivity only (the thesis' choice):
  18/26 would also need the blocks that touch at edges and corners.
* evaluate: a sparse contingency table of (true, predicted) pairs per block,
  summed; every score is computed from that sum, as in memory.
"""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from itertools import product

import numpy as np

from . import labels as L
from . import zarrio

# ---------------------------------------------------------------------------------------------
# the engine


def parse_scheduler(spec, name="--scheduler"):
    """``("local", N)`` for ``local:N`` (N >= 1), ``("address", spec)`` for ``tcp://HOST:PORT``
    (or tls://, ucx://...), else ValueError naming ``name``."""
    spec = str(spec).strip()
    if spec.startswith("local:"):
        count = spec.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{name} local:N needs a number of worker processes N >= 1, "
                             f"got {spec!r}")
        return "local", int(count)
    if "://" in spec and spec.split("://", 1)[1]:
        return "address", spec
    raise ValueError(f"{name} must be local:N (a LocalCluster of N worker processes) or the "
                     f"address of a dask scheduler such as tcp://HOST:8786, got {spec!r}")


def check_memory_limit(text, name="--memory_limit"):
    """Bytes per worker from ``"2GiB"``, ``"500MB"``... (dask's notation); ValueError if bad."""
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(text)
    except (ValueError, TypeError):
        value = None
    if value is None or value <= 0:
        raise ValueError(f"{name} must be a size such as 2GiB or 500MB, got {text!r}")
    return int(value)


# glibc's allocator in the LocalCluster's workers.  dask sets MALLOC_TRIM_THRESHOLD_=65536,
# which also turns off glibc's adaptive mmap threshold: every array above 128 KiB is then a
# fresh mmap whose pages fault in, and a block's arrays are megabytes (the 16x volume of
# benchmarks/bench_scale.py: reconstruct 8.1 s on 2 workers with dask's setting, 4.0 s with
# this one).  Arrays below 32 MiB come from the heap and are reused instead; up to 128 MiB
# of freed heap is kept before it is returned.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 128 * 2**20}


@contextmanager
def engine(spec, memory_limit=None, connect_timeout=5.0):
    """A dask.distributed ``Client`` for ``--scheduler spec`` (see :func:`parse_scheduler`).

    A LocalCluster (one thread per worker process, dashboard on 127.0.0.1) is closed
    on exit.  The dashboard's address is printed on stderr.  An unreachable address
    raises ValueError after ``connect_timeout`` seconds.
    """
    kind, value = parse_scheduler(spec)
    limit = check_memory_limit(memory_limit) if memory_limit is not None else "auto"
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    if kind == "local":
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v
                              for k, v in WORKER_MALLOC.items()}):
            cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                   memory_limit=limit, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        if memory_limit is not None:
            raise ValueError("--memory_limit applies to --scheduler local:N; a running "
                             "scheduler's workers have their own limits")
        try:
            client = Client(value, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"--scheduler {value}: no dask scheduler answered within "
                             f"{connect_timeout:g} s ({type(exc).__name__})") from None
    print(f"dask: {len(client.scheduler_info()['workers'])} workers, dashboard "
          f"{client.dashboard_link}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(client, function, items, desc):
    """``[function(item) for item in items]`` on the cluster, with a progress bar on stderr."""
    return gather_with_progress(client.map(function, list(items), pure=False), desc)


def gather_with_progress(futures, desc):
    """The results of ``futures`` in their order, with a progress bar on stderr as they
    complete."""
    from dask.distributed import as_completed

    from .progress import StepProgress

    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(futures)
    bar = StepProgress(len(futures), desc=desc, every_seconds=10, final_line=True,
                       unit="block")
    try:
        for done, future in enumerate(as_completed(futures), 1):
            results[index[future.key]] = future.result()
            bar.update(done)
    finally:
        bar.close()
    return results


# ---------------------------------------------------------------------------------------------
# blocks


def block_grid(shape, chunks):
    """The regions (tuples of slices) of the chunk grid ``chunks`` over ``shape`` (3-D), in C
    order."""
    ranges = [[slice(start, min(start + c, s)) for start in range(0, s, c)]
              for s, c in zip(shape[:3], chunks[:3])]
    return list(product(*ranges))


def read_region(array, region, halo=(0, 0, 0), extra_after_z=0):
    """Read ``region`` of ``array`` grown by ``halo`` (clipped to the array) and
    ``extra_after_z`` more slices after it; returns (data, the region's slices within it)."""
    starts, stops, inner = [], [], []
    for axis, (s, h) in enumerate(zip(region, halo)):
        size = array.shape[axis]
        lo = max(0, s.start - h)
        hi = min(size, s.stop + h + (extra_after_z if axis == 0 else 0))
        starts.append(lo)
        stops.append(hi)
        inner.append(slice(s.start - lo, s.stop - lo))
    data = np.asarray(array[tuple(slice(a, b) for a, b in zip(starts, stops))])
    return data, tuple(inner)


_OPENED = {}  # per process: (path, mode) -> (the store folder's identity, zarr.Array)
_METADATA = (".zarray", "zarr.json", "0/.zarray", "0/zarr.json")


def _cached(path, mode, opener):
    """``opener()``, reused while the store folder at ``path`` and its array's metadata file
    are the same ones (inode, modification time, size): a worker opens each store once, not
    once per block (zarr's open reads several metadata files, about 2.5 ms).  A store
    replaced under the same name (the atomic writes rename a new folder in) or resized in
    place is opened again.  On a network file system that caches attributes (NFS), a
    replacement is seen when the cached attributes expire, as any reader sees it."""
    import os

    try:
        info = os.stat(path)
    except OSError:
        return opener()  # the opener names the missing store
    identity = [(info.st_ino, info.st_dev, info.st_mtime_ns)]
    for name in _METADATA:  # and the array's own metadata (changed by a resize in place)
        try:
            meta = os.stat(os.path.join(path, name))
        except OSError:
            continue
        identity.append((name, meta.st_ino, meta.st_mtime_ns, meta.st_size))
    identity = tuple(identity)
    key = (os.path.abspath(path), mode)
    hit = _OPENED.get(key)
    if hit is not None and hit[0] == identity:
        return hit[1]
    array = opener()
    if len(_OPENED) >= 32:
        _OPENED.clear()
    _OPENED[key] = (identity, array)
    return array


def open_input(path, what="input"):
    """The image array of the zarr store ``path`` for reading (see
    :func:`neuron3d.zarrio.open_array`; ``what`` names it in errors), opened once per
    process."""
    return _cached(str(path), "r", lambda: zarrio.open_array(path, what))


def open_output(path):
    """The array ``0`` of the OME-Zarr store being written at ``path`` (a store
    :func:`neuron3d.zarrio.creating` made), for writing blocks; opened once per process."""
    import zarr

    return _cached(str(path), "r+",
                   lambda: zarr.open_array(store=str(path), path="0", mode="r+"))


# ---------------------------------------------------------------------------------------------
# per-slice operations


def _labels_block(data, source):
    from .io import as_label_stack

    return as_label_stack(data, source)


def _label_op(src, dst, region, op):
    """membrane or cytoplasm of one block (1-pixel halo in y and x)."""
    data, inner = read_region(open_input(src), region, (0, 1, 1))
    data = _labels_block(data, src)
    mask = L.membrane(data, src)
    out = mask if op == "membrane" else L.cytoplasm(data, mask, src)
    open_output(dst)[region] = zarrio.as_stored(out[inner])


def _overlap_op(src, dst, region):
    """overlap planes of one block: its slices, the next one, a 1-pixel halo in y and x."""
    data, inner = read_region(open_input(src), region, (0, 1, 1), extra_after_z=1)
    out = L.overlap(_labels_block(data, src), source=src)[: region[0].stop - region[0].start]
    open_output(dst)[region] = zarrio.as_stored(out[(slice(None),) + inner[1:]])


def _first_channel(data):
    return data[..., 0] if data.ndim == 4 else data


def _consecutive_op(src, dst, region):
    data, _ = read_region(open_input(src), region, extra_after_z=1)
    out = L.consecutive(_first_channel(data), src)[: region[0].stop - region[0].start]
    open_output(dst)[region + (slice(None),)] = out


def _eroskele_op(src, dst, region, erosions, threshold):
    data, _ = read_region(open_input(src), region)
    out = L.eroskele(_first_channel(data) >= threshold, erosions, src)
    open_output(dst)[region] = zarrio.as_stored(out)


OPERATIONS = {"membrane": functools.partial(_label_op, op="membrane"),
              "cytoplasm": functools.partial(_label_op, op="cytoplasm"),
              "overlap": _overlap_op, "consecutive": _consecutive_op, "eroskele": _eroskele_op}


def per_slice(client, operation, source, output, chunks=None, erosions=10, threshold=127):
    """Run a process3D.py operation (:data:`OPERATIONS`) blockwise from zarr ``source`` to zarr
    ``output`` (written atomically, chunks ``chunks``).  Returns the output's shape."""
    array = open_input(source)
    shape = tuple(array.shape[:3])
    if operation in ("membrane", "cytoplasm", "overlap") and array.ndim != 3:
        raise ValueError(f"label stack must be 3-D (z, y, x), got shape {array.shape} from "
                         f"{source}")
    out_shape = shape if operation in ("membrane", "cytoplasm", "eroskele") else \
        (shape[0] - 1,) + shape[1:]
    if operation == "consecutive":
        out_shape += (3,)
    chunks = zarrio.chunks_for(out_shape, chunks)
    grid_chunks = chunks
    extra = {}
    if operation == "eroskele":  # whole slices: see the module's docstring
        grid_chunks = (chunks[0],) + out_shape[1:3]
        extra = {"erosions": L.check_count(erosions, "--erosions"), "threshold": threshold}
    with zarrio.creating(output, out_shape, np.uint8, chunks) as out:
        if out_shape[0]:  # one slice has no overlap: an empty (0, y, x) store
            task = functools.partial(OPERATIONS[operation], str(source), _store_path(out),
                                     **extra)
            run_tasks(client, task, block_grid(out_shape, grid_chunks), f"{operation} blocks")
    return out_shape


def _store_path(array):
    """The folder of the store that holds ``array`` (the group, for an OME-Zarr image)."""
    return str(array.store.root)


# ---------------------------------------------------------------------------------------------
# 3D connected components: reconstruct and the evaluation volume


def _masks_from_images(cytoplasm, overlap, threshold, region):
    """Cytoplasm planes of ``region`` and the overlap planes that follow each of them (the
    last slice of the volume has none), thresholded as reconstruct3D.py reads images."""
    cyto = open_input(cytoplasm)
    over = open_input(overlap)
    z = region[0]
    cyto_block = _first_channel(np.asarray(cyto[region])) >= threshold
    stop = min(z.stop, cyto.shape[0] - 1)
    over_block = _first_channel(np.asarray(over[(slice(z.start, stop),) + region[1:]])) \
        >= threshold
    return cyto_block, over_block


def _masks_from_labels(source, region):
    """The cytoplasm and overlap planes of ground-truth labels (the evaluation volume's
    input): the block, the next slice and a 1-pixel halo in y and x."""
    array = open_input(source)
    data, inner = read_region(array, region, (0, 1, 1), extra_after_z=1)
    data = _labels_block(data, source)
    mask = L.membrane(data, source)
    count = region[0].stop - region[0].start
    cyto = L.cytoplasm(data, mask, source)[:count]
    over = L.overlap(data, mask, source)[:count]
    return cyto[(slice(None),) + inner[1:]], over[(slice(None),) + inner[1:]]


def _block_labels(masks, region):
    """The block's interleaved planes (its cytoplasm planes, each followed by its overlap
    plane; none after the volume's last slice), labelled by cc3d with 6-connectivity:
    (labels uint32 numbered 1..count in the block, count).  Deterministic, so pass 1 and
    pass 3 label a block alike."""
    import cc3d

    cyto, over = masks(region=region)
    planes = np.zeros((len(cyto) + len(over),) + cyto.shape[1:], dtype=bool)
    planes[0::2] = cyto
    planes[1::2] = over
    ids, count = cc3d.connected_components(planes, connectivity=6, return_N=True,
                                           out_dtype=np.uint32)
    return ids, int(count)


def _label_pass(masks, shape, region):
    """Pass 1: label one block; return its count, the block's labels seen in cytoplasm
    planes with the C-order index of each one's first voxel in the output volume, and its
    first and last interleaved plane along each axis (held by the cluster until the face
    pairs are taken, never by the client)."""
    import fastremap

    ids, count = _block_labels(masks, region)
    faces = [(np.take(ids, 0, axis=axis).copy(), np.take(ids, -1, axis=axis).copy())
             for axis in range(3)]
    kept = np.ascontiguousarray(ids[0::2])  # fastremap's indices are C order of a contiguous
    values, first = fastremap.unique(kept, return_index=True)  # array; 30x np.unique
    if len(values) and values[0] == 0:
        values, first = values[1:], first[1:]
    dz, dy, dx = np.unravel_index(first, kept.shape)
    z0, y0, x0 = (s.start for s in region)
    index = ((dz + z0).astype(np.uint64) * shape[1] + (dy + y0)) * shape[2] + (dx + x0)
    return count, values.astype(np.uint32), index.astype(np.uint64), faces


def _face_pass(block, *upper):
    """Pass 2: the block's summary without its planes, and the distinct label pairs (this
    block, next block) that touch across its three upper faces (6-connectivity: the same
    pixel on both sides); ``upper`` holds the pass-1 result of the next block along z, y
    and x (None at the volume's faces)."""
    import fastremap

    count, values, first, faces = block
    pairs = []
    for axis, neighbour in enumerate(upper):
        if neighbour is None:
            pairs.append(np.zeros((0, 2), np.uint32))
            continue
        a = faces[axis][1].ravel().astype(np.uint64)
        b = neighbour[3][axis][0].ravel()
        both = (a > 0) & (b > 0)
        packed = fastremap.unique((a[both] << np.uint64(32)) | b[both])
        pairs.append(np.stack([packed >> np.uint64(32), packed & np.uint64(0xFFFFFFFF)],
                              axis=1).astype(np.uint32))
    return count, values, first, pairs


def _relabel_pass(masks, output, item):
    """Pass 3: the block labelled again (as in pass 1), its cytoplasm planes written with
    block-local labels replaced by final ones."""
    region, mapping = item
    ids, _ = _block_labels(masks, region)
    open_output(output)[region] = mapping[ids[0::2]]


def label_volume(client, masks, shape, output, chunks=None):
    """3D connected components of interleaved cytoplasm and overlap planes, blockwise.

    Pass 1 labels each block with cc3d; pass 2 pairs the labels that touch across each
    block's upper faces (it runs as soon as the block and its three upper neighbours are
    labelled, on the planes those tasks hold, so nothing but the small pairs reaches the
    client and no scratch store is written); one union-find on the client joins the pairs;
    pass 3 labels each block again (cc3d is deterministic and cheaper than storing and
    re-reading the local labels) and writes it relabelled with its slice of the map.

    Parameters
    ----------
    client : dask.distributed.Client
    masks : callable
        ``masks(region=...) -> (cytoplasm planes, overlap planes)`` of a block, bool (the
        overlap planes that follow each cytoplasm plane; none after the last slice).
    shape : tuple of int
        (z, y, x) of the output.
    output : str or Path
        The zarr store written (atomically), chunked ``chunks``.

    Returns
    -------
    int
        K, the number of objects.  Output labels are 1..K in the C order of each object's
        first voxel, dtype the smallest unsigned type of at least 16 bits holding K: the
        result of :func:`neuron3d.reconstruct.reconstruct`, bit for bit.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .io import smallest_uint

    shape = tuple(shape)
    chunks = zarrio.chunks_for(shape, chunks)
    grid = block_grid(shape, chunks)
    index = {tuple(s.start for s in region): i for i, region in enumerate(grid)}

    def upper(region, axis):
        start = [s.start for s in region]
        start[axis] = region[axis].stop
        return index.get(tuple(start))

    neighbours = [[upper(region, axis) for axis in range(3)] for region in grid]
    labelled = client.map(functools.partial(_label_pass, masks, shape), grid, pure=False)
    # Face tasks go before the labelling still queued (higher priority), so each block's
    # planes are released soon after its neighbours are labelled: the cluster holds about
    # one layer of blocks' faces, whatever the volume.
    upper_of = [[None if n[axis] is None else labelled[n[axis]] for n in neighbours]
                for axis in range(3)]
    paired = client.map(_face_pass, labelled, *upper_of, pure=False, priority=1)
    del labelled
    first = gather_with_progress(paired, "label blocks")
    del paired
    counts = np.array([c for c, _, _, _ in first], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    # One union-find over the touching pairs; node 0 is the background.
    edges = [np.zeros((0, 2), np.int64)]
    for i, (_, _, _, touching) in enumerate(first):
        for axis, pairs in enumerate(touching):
            if len(pairs):
                j = neighbours[i][axis]
                edges.append(np.stack([pairs[:, 0] + offsets[i], pairs[:, 1] + offsets[j]],
                                      axis=1).astype(np.int64))
    edges = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)
    # Each object's first voxel: the least over its blocks' first voxels.
    none = np.iinfo(np.uint64).max
    node_first = np.full(total + 1, none, dtype=np.uint64)
    for i, (_, values, firsts, _) in enumerate(first):
        node_first[offsets[i] + values.astype(np.int64)] = firsts
    component_first = np.full(component.max() + 1, none, dtype=np.uint64)
    np.minimum.at(component_first, component, node_first)
    present = np.flatnonzero(component_first != none)
    order = present[np.argsort(component_first[present], kind="stable")]
    count = len(order)
    dtype = smallest_uint(max(count, np.iinfo(np.uint16).max))
    final = np.zeros(component.max() + 1, dtype=dtype)
    final[order] = np.arange(1, count + 1, dtype=dtype)
    mapping = final[component]
    mapping[0] = 0
    with zarrio.creating(output, shape, dtype, chunks) as out:
        tasks = [(region, mapping[offsets[i]:offsets[i] + counts[i] + 1].copy())
                 for i, region in enumerate(grid)]
        for _, part in tasks:
            part[0] = 0  # the block's background (its slice starts at the previous block's)
        run_tasks(client, functools.partial(_relabel_pass, masks, _store_path(out)), tasks,
                  "relabel blocks")
    return count


def reconstruct(client, cytoplasm, overlap, output, chunks=None, threshold=127):
    """reconstruct3D.py's thesis method blockwise: zarr images in, zarr labels out."""
    from .reconstruct import check_threshold

    threshold = check_threshold(threshold, "--threshold")
    shape = check_reconstruct_inputs(cytoplasm, overlap)
    masks = functools.partial(_masks_from_images, str(cytoplasm), str(overlap), threshold)
    return label_volume(client, masks, shape, output, chunks)


def check_reconstruct_inputs(cytoplasm, overlap):
    """The shape of the reconstruction of zarr ``cytoplasm`` and ``overlap`` images; ValueError
    unless there are N - 1 (or N, the last ignored) overlap planes of the same size."""
    cyto = open_input(cytoplasm, "--input_dir_cytoplasm")
    over = open_input(overlap, "--input_dir_overlap")
    if tuple(over.shape[1:3]) != tuple(cyto.shape[1:3]) or \
            over.shape[0] not in (cyto.shape[0] - 1, cyto.shape[0]):
        raise ValueError(f"expected {cyto.shape[0] - 1} overlap planes of "
                         f"{cyto.shape[1]} x {cyto.shape[2]} for {cyto.shape[0]} cytoplasm "
                         f"slices ({cytoplasm}), got {tuple(over.shape[:3])} from {overlap}")
    return tuple(cyto.shape[:3])


def check_same_shape(predicted, references):
    """ValueError unless the zarr label volumes ``predicted`` and each of ``references``
    (flag -> path) have one shape; returns it."""
    shape = tuple(open_input(predicted, "--predicted").shape)
    for flag, path in references.items():
        other = tuple(open_input(path, flag).shape)
        if other != shape:
            raise ValueError(f"shapes differ: predicted {predicted} is {shape}, {flag} {path} "
                             f"is {other}")
    return shape


def evaluation_volume(client, labels, output, chunks=None):
    """process3D.py --operation evaluation blockwise: zarr labels in, zarr labels out."""
    array = open_input(labels)
    if array.ndim != 3:
        raise ValueError(f"label stack must be 3-D (z, y, x), got shape {array.shape} from "
                         f"{labels}")
    masks = functools.partial(_masks_from_labels, str(labels))
    return label_volume(client, masks, tuple(array.shape), output, chunks)


# ---------------------------------------------------------------------------------------------
# evaluation: contingency tables per block, summed


def _table_pass(true, pred, region):
    from .io import as_label_stack
    from .metrics import contingency

    t = as_label_stack(np.asarray(open_input(true)[region]), true)
    p = as_label_stack(np.asarray(open_input(pred)[region]), pred)
    table = contingency(t, p, true, pred)
    return table.true, table.pred, table.counts


def contingency_table(client, true, pred, chunks=None):
    """The contingency table of two zarr label volumes, summed over blocks: equal to
    :func:`neuron3d.metrics.contingency` of the whole volumes (both are sorted by
    (true, predicted))."""
    from .metrics import Contingency, sorted_table

    shape = check_same_shape(pred, {"--true": true})
    grid = block_grid(shape, zarrio.chunks_for(shape, chunks or open_input(true).chunks[:3]))
    parts = run_tasks(client, functools.partial(_table_pass, str(true), str(pred)), grid,
                      "contingency blocks")
    return sorted_table(Contingency(np.concatenate([a for a, _, _ in parts]),
                                    np.concatenate([b for _, b, _ in parts]),
                                    np.concatenate([c for _, _, c in parts]),
                                    int(np.prod(shape))))


# ---------------------------------------------------------------------------------------------
# the command lines' options


def add_arguments(parser, chunks=True):
    """--scheduler, --memory_limit (and --chunks) for a script that can run blockwise."""
    group = parser.add_argument_group(
        "large volumes (zarr + dask; see documentation/cluster.md)")
    group.add_argument("--scheduler", metavar="SPEC",
                       help="process blockwise on dask: local:N (a LocalCluster of N worker "
                            "processes on this machine) or tcp://HOST:PORT (a running dask "
                            "scheduler); inputs and outputs must then be .zarr stores. "
                            "Default: the whole volume in memory")
    group.add_argument("--memory_limit", metavar="BYTES",
                       help="memory limit of each local:N worker, e.g. 2GiB (default: the "
                            "machine's memory shared between the workers)")
    if chunks:
        group.add_argument("--chunks", type=int, nargs=3, metavar=("Z", "Y", "X"),
                           help="chunk shape of the .zarr stores written (default "
                                f"{' '.join(map(str, zarrio.DEFAULT_CHUNKS))}, clipped to the "
                                "volume); with --scheduler also the blocks processed")
    return group


def check_arguments(args, inputs, outputs):
    """Check the engine options before any work: ``--scheduler`` needs every path in
    ``inputs`` and ``outputs`` (flag -> path) to be a .zarr store; --chunks and
    --memory_limit are well formed."""
    if getattr(args, "chunks", None) is not None:
        zarrio.check_chunks(args.chunks)
    if args.memory_limit is not None:
        if args.scheduler is None:
            raise ValueError("--memory_limit applies to --scheduler local:N")
        check_memory_limit(args.memory_limit)
    if args.scheduler is None:
        return
    parse_scheduler(args.scheduler)
    for flag, path in {**inputs, **outputs}.items():
        if path is not None and not zarrio.is_zarr(path):
            raise ValueError(f"--scheduler processes .zarr stores: {flag} must end in .zarr, "
                             f"got {path}")

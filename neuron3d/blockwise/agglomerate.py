"""reconstruct3D.py --method agglomerate blockwise: zarr membrane and overlap in, zarr labels out.

Passes over blocks of whole slices (``--chunks`` Z slices each, the full y and x: a
fragment is a 2D watershed of its whole slice, or with ``fragments="3d"`` a 3-D watershed
of the block), each a named task:

1. :func:`fragment_task`: each slice's watershed fragments exactly as in memory
   (:func:`neuron3d.agglomerate.fragments`), numbered 1..n in the slice, written to a
   temporary uint32 store; it returns each slice's count and each fragment's first voxel.
   With ``fragments="3d"`` one 3-D watershed of the block's slices instead, its fragments
   numbered 1..n in order of first appearance and counted at the block's last slice (so
   every slice of the block shares the block's offset): a fragment then spans slices but
   not a block face;
2. the client turns the counts into per-slice offsets (a cumulative sum): fragment IDs
   1..F, the in-memory numbering;
3. :func:`graph_task`: the block's region graph (:mod:`neuron3d.blockwise.regiongraph`):
   in-plane contacts in its slices, between-slice contacts from each slice to the next,
   the last one with a one-slice halo (the next block's first slice), with the in-memory
   rim fill on each pair of slices;
4. on the client, the blocks' graphs (in block order: waterz's edge order) are merged by
   :func:`neuron3d.blockwise.regiongraph.merge`, waterz's merging replayed exactly, for
   every threshold in one run; regions are numbered in the order of their first voxel;
5. :func:`write_task`: each block's fragments looked up in each threshold's table and
   written, one label store per threshold.

The result equals :func:`neuron3d.agglomerate.agglomerate` bit for bit: of its per-slice
fragments, or with ``fragments="3d"`` of ``fragment_ids`` cut by a 3-D watershed per block
(:func:`block_fragments`; with one block, its ``fragment_mode="3d"``).  Each edge of the
region graph still lies in one block (fragments do not cross block faces, and the contacts
across a face are that block's halo pair), which is what makes the parts add up.  The client holds
the region graph (edges, sparse histograms) and one table of F entries per threshold; a
worker holds one block plus a slice.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import zarrio
from ..atomic import check_outputs_apart, staging_dir
from .executor import check_block_memory, run_tasks, task
from .grid import block_grid
from .ops import first_channel
from .regiongraph import BLOCKWISE_SCORINGS, block_edges, concatenate, merge, segment_labels

__all__ = ["BLOCK_3D", "agglomerate_stores", "block_chunks", "block_fragments",
           "check_agglomerate_inputs", "fragment_task", "graph_task", "region_graph",
           "write_task"]

#: About the bytes a graph task holds per voxel read: fragments (8), membrane and overlap
#: (4 + 4), affinities (12), the contacts and their sort (about 40).
_BYTES_PER_VOXEL = 72

_MEMBRANE, _OVERLAP = "--input_dir_membrane", "--input_dir_overlap"

#: The block depth advised for 3-D fragments, and theirs when no chunks are given: on
#: fibsem-medulla blocks of 64 slices cost nothing measurable, and with 32 or fewer c merged
#: more (documentation/cluster.md).
BLOCK_3D = 64


def block_chunks(shape, chunks, fragments):
    """The chunks (blocks of ``chunks[0]`` whole slices) of an agglomeration or sweep of a
    volume of ``shape``: ``chunks``, or the default, whose depth is :data:`BLOCK_3D` for 3-D
    fragments.  3-D fragments in thinner blocks are warned about on stderr."""
    if fragments == "3d" and chunks is None:
        chunks = (BLOCK_3D,) + tuple(zarrio.DEFAULT_CHUNKS[1:])
    chunks = zarrio.chunks_for(shape, chunks)
    if fragments == "3d" and chunks[0] < min(BLOCK_3D, shape[0]):
        print(f"warning: --fragments 3d in blocks of {chunks[0]} slices: fragments end at "
              f"every block face, and blocks of fewer than {BLOCK_3D} slices merged more on "
              "fibsem-medulla (documentation/cluster.md)", file=sys.stderr)
    return chunks


def check_agglomerate_inputs(membrane, overlap):
    """The (z, y, x) shape of the agglomeration of zarr ``membrane`` and ``overlap`` stores,
    checked from their metadata (before the engine starts).

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the store and the value: a store that is not a numeric image stack, overlap
        slices of another size or count (N - 1, or N with the last ignored), stores chunked
        differently.
    """
    arrays = {}
    for flag, path in ((_MEMBRANE, membrane), (_OVERLAP, overlap)):
        array = zarrio.open_input(path, flag)
        if array.ndim not in (3, 4):
            raise ValueError(f"{flag} {path}: expected a (z, y, x) stack of probabilities, "
                             f"got shape {tuple(array.shape)}")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{flag} {path}: expected probabilities (float in [0, 1] or "
                             f"uint8 0..255), got dtype {array.dtype}")
        arrays[flag] = array
    mem, over = arrays[_MEMBRANE], arrays[_OVERLAP]
    depth = mem.shape[0]
    if depth == 0:
        raise ValueError(f"{_MEMBRANE} {membrane} has no slices")
    if tuple(over.shape[1:3]) != tuple(mem.shape[1:3]) or \
            over.shape[0] not in (depth - 1, depth):
        raise ValueError(f"{_OVERLAP} {overlap}: expected {depth - 1} overlap slices of "
                         f"{mem.shape[1]} x {mem.shape[2]} for {depth} membrane slices "
                         f"({membrane}), got {tuple(over.shape[:3])}")
    mz, oz = mem.chunks[0], over.chunks[0]  # a chunk of all slices: N and N - 1 agree
    if tuple(over.chunks[1:3]) != tuple(mem.chunks[1:3]) or \
            (mz != oz and not (mz >= depth - 1 and oz >= over.shape[0])):
        raise ValueError(f"{_OVERLAP} {overlap} is chunked {tuple(over.chunks[:3])}, "
                         f"{_MEMBRANE} {membrane} {tuple(mem.chunks[:3])}: write both with "
                         "the same --chunks")
    return tuple(mem.shape[:3])


def _probabilities(source, flag, region):
    from ..agglomerate import _probabilities as probabilities

    data = first_channel(zarrio.read_block(zarrio.open_input(source, flag), region))
    return probabilities(data, f"{flag} {source}")


def _block_3d(data, options):
    """One 3-D watershed of a block (:func:`neuron3d.agglomerate.fragments` with
    ``mode="3d"``): uint32 fragments 1..n in order of first appearance, and n."""
    from ..agglomerate import fragments

    labels = fragments(data, *options, workers=1, mode="3d")
    count = int(labels.max())
    if count >= 2**32:
        raise ValueError(f"a block of {len(data)} slices holds {count} fragments, more than its "
                         "uint32 store takes: give --chunks fewer slices")
    return labels.astype(np.uint32, copy=False), count


def block_fragments(membrane, depth, seed_threshold=0.2, sigma=0.0, min_distance=5):
    """The fragments the blockwise agglomeration cuts with ``fragments="3d"`` in blocks of
    ``depth`` whole slices, of an in-memory (z, y, x) membrane stack: uint64 IDs 1..F, each
    block's one 3-D watershed in order of first appearance after the blocks before it.  Give
    them to :func:`neuron3d.agglomerate.agglomerate` as ``fragment_ids`` for the in-memory
    equal of the blockwise result.

    Raises
    ------
    ValueError
        If ``depth`` is not a whole number >= 1, a fragment option is out of range or the
        stack is not a (z, y, x) probability.
    """
    if isinstance(depth, bool) or int(depth) != depth or depth < 1:
        raise ValueError(f"blocks must be a whole number of slices >= 1, got {depth!r}")
    depth = int(depth)
    out, top = np.empty(np.shape(membrane), dtype=np.uint64), 0
    for z in range(0, len(membrane), depth):
        labels, count = _block_3d(membrane[z:z + depth],
                                  (seed_threshold, sigma, int(min_distance)))
        out[z:z + depth] = labels.astype(np.uint64) + np.uint64(top)
        top += count
    return out


def _first_voxels(labels, count, offset):
    """The C-order index (plus ``offset``) of the first voxel of each of the fragments
    1..``count`` of ``labels``, in the order of the fragments."""
    import fastremap

    values, index = fastremap.unique(np.ascontiguousarray(labels), return_index=True)
    first = np.full(count, np.iinfo(np.uint64).max, dtype=np.uint64)
    first[values.astype(np.int64) - 1] = index.astype(np.uint64) + np.uint64(offset)
    return first


def fragment_task(membrane, fragments, shape, options, mode, region):
    """Pass 1: the watershed fragments of the block, written to the uint32 store
    ``fragments``: of each slice, numbered 1..n in the slice (``mode`` ``2d``), or one 3-D
    watershed of the block, numbered 1..n in the block (``3d``); returns (n of each slice,
    for ``3d`` all at the block's last slice; the C-order index in the volume of each
    fragment's first voxel, in the order of the fragments)."""
    from ..agglomerate import _slice_fragments

    data = _probabilities(membrane, _MEMBRANE, region)
    plane = shape[1] * shape[2]
    if mode == "3d":
        out, count = _block_3d(data, options)
        counts = np.zeros(len(data), dtype=np.int64)
        counts[-1] = count
        zarrio.open_output(fragments)[region] = out
        return counts, _first_voxels(out, count, region[0].start * plane)
    out = np.empty(data.shape, dtype=np.uint32)
    counts, firsts = [], []
    for k, image in enumerate(data):
        labels, count = _slice_fragments(image, *options)
        out[k] = labels
        counts.append(count)
        firsts.append(_first_voxels(out[k], count, (region[0].start + k) * plane))
    zarrio.open_output(fragments)[region] = out
    return np.array(counts, dtype=np.int64), np.concatenate(firsts)


def _global_fragments(fragments, region, offsets):
    local = zarrio.read_block(zarrio.open_input(fragments), region)
    return local.astype(np.uint64) + offsets.astype(np.uint64)[:, None, None]


def graph_task(membrane, overlap, fragments, depth, scoring, z_threshold, item):
    """Pass 3: the region graph of one block (its slices and the contacts to the next
    slice); ``item`` is (region, the offsets of the slices read)."""
    from ..agglomerate import _affinities, _rim_fill

    region, offsets = item
    z = region[0]
    stop = min(z.stop + 1, depth)
    read = (slice(z.start, stop),) + region[1:]
    frags = _global_fragments(fragments, read, offsets)
    mem = _probabilities(membrane, _MEMBRANE, read)
    over = _probabilities(overlap, _OVERLAP, (slice(z.start, stop - 1),) + region[1:])
    affs = _affinities(mem, over)
    if z_threshold is not None and len(frags) > 1:
        _rim_fill(affs, frags, mem, z_threshold, scoring, 1)
    return block_edges(frags, affs, z.stop - z.start, len(over), scoring)


def write_task(fragments, outputs, item):
    """Pass 5: the block's labels at each threshold (``item``: region, the slices' offsets,
    the lowest fragment ID of the block, and one table slice per output)."""
    region, offsets, low, tables = item
    frags = _global_fragments(fragments, region, offsets)
    index = (frags - np.uint64(low)).astype(np.intp)
    for output, table in zip(outputs, tables):
        zarrio.open_output(output)[region] = table[index]


def region_graph(membrane, overlap, scoring="median", seed_threshold=0.2, sigma=0.0,
                 min_distance=5, z_threshold=0.3):
    """The in-memory volume's fragments and region graph, as the blockwise passes build them
    (one block): (fragments uint64, :class:`~neuron3d.blockwise.regiongraph.RegionGraph`).
    For measuring and testing; :func:`neuron3d.agglomerate.agglomerate` uses waterz."""
    from ..agglomerate import _affinities, _rim_fill, check_inputs, fragments

    membrane, overlap = check_inputs(membrane, overlap)
    frags = fragments(membrane, seed_threshold, sigma, min_distance, workers=1)
    affs = _affinities(membrane, overlap)
    if z_threshold is not None and len(frags) > 1:
        _rim_fill(affs, frags, membrane, z_threshold, scoring, 1)
    return frags, block_edges(frags, affs, len(frags), len(overlap), scoring)


def agglomerate_stores(client, membrane, overlap, outputs, thresholds, chunks=None,
                       scoring="median", seed_threshold=0.2, sigma=0.0, min_distance=5,
                       z_threshold=0.3, fragments="2d"):
    """:func:`neuron3d.agglomerate.agglomerate` blockwise, one label store per threshold.

    Parameters
    ----------
    client : dask.distributed.Client or SerialExecutor
        The engine (:func:`neuron3d.blockwise.engine`).
    membrane, overlap : str or Path
        zarr stores of membrane probabilities (N slices) and overlap probabilities (N - 1,
        or N with the last ignored): float in [0, 1] or uint8 0..255, chunked alike.
    outputs : sequence of str or Path
        One label store per threshold (written atomically; an existing store is replaced).
    thresholds : sequence of float
        Merge thresholds in [0, 1].
    chunks : tuple of 3 int, optional
        Chunks of the stores written; blocks are ``chunks[0]`` whole slices (default
        :func:`block_chunks`).
    scoring : {"median", "mean", "median_max"}
        See :data:`neuron3d.agglomerate.SCORINGS`.
    seed_threshold, sigma, min_distance, z_threshold :
        As for :func:`neuron3d.agglomerate.agglomerate`.
    fragments : {"2d", "3d"}
        Per-slice fragments, or one 3-D watershed per block (:func:`block_fragments`).

    Returns
    -------
    dict
        ``counts`` (objects per threshold, in the order given), ``fragments`` (F),
        ``edges`` and ``graph_bytes`` (the region graph the client held).

    Raises
    ------
    ValueError, FileNotFoundError
        Bad input (see :func:`check_agglomerate_inputs`), naming the store or flag; nothing
        is written then.
    """
    from ..agglomerate import _check_fragment_options, check_fragment_mode, check_thresholds

    outputs = [str(o) for o in outputs]
    check_outputs_apart({_MEMBRANE: membrane, _OVERLAP: overlap},
                        [(f"output (threshold {t})", o) for t, o in zip(thresholds, outputs)])
    values = check_thresholds(thresholds, "--merge_threshold")
    if len(values) != len(outputs):
        raise ValueError(f"{len(values)} thresholds for {len(outputs)} outputs")
    if scoring not in BLOCKWISE_SCORINGS:
        raise ValueError(f"--scoring {scoring}: blockwise agglomeration scores "
                         f"{', '.join(BLOCKWISE_SCORINGS)}")
    if z_threshold is not None and not 0.0 < z_threshold <= 1.0:
        raise ValueError(f"z_threshold must be in (0, 1] or None, got {z_threshold}")
    _check_fragment_options(seed_threshold, sigma, min_distance)
    check_fragment_mode(fragments)
    shape = check_agglomerate_inputs(membrane, overlap)
    chunks = block_chunks(shape, chunks, fragments)
    grid = block_grid(shape, (chunks[0],) + shape[1:])
    check_block_memory(client, (chunks[0] + 1) * shape[1] * shape[2] * _BYTES_PER_VOXEL,
                       "the agglomeration (blocks of --chunks Z whole slices)")
    options = (seed_threshold, sigma, int(min_distance))
    with staging_dir(Path(outputs[0]), "a .zarr folder") as tmp:
        try:
            return _passes(client, membrane, overlap, outputs, values, chunks, scoring,
                           z_threshold, shape, grid, options, tmp, fragments)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class _Fragments:
    """What passes 1-3 leave: the fragment store, each slice's count and offset, each
    fragment's first voxel, the region graph."""

    def __init__(self, store, counts, first_index, graph):
        self.store, self.counts, self.first_index, self.graph = store, counts, first_index, graph
        self.offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        self.total = int(counts.sum())

    def block(self, region, halo=0):
        """The offsets of the slices of ``region`` (and ``halo`` more, within the volume)."""
        return self.offsets[region[0].start:min(region[0].stop + halo, len(self.counts))]

    def span(self, region):
        """The lowest fragment ID of ``region`` and one past its highest."""
        z0, z1 = region[0].start, region[0].stop
        return (int(self.offsets[z0]) + 1,
                int(self.offsets[z1 - 1] + self.counts[z1 - 1]) + 1)


def _fragments_and_graph(client, membrane, overlap, shape, grid, chunks, options, scoring,
                         z_threshold, tmp, mode="2d"):
    """Passes 1-3: fragments (kept in ``tmp``; ``mode`` as :func:`fragment_task` takes it)
    and the region graph."""
    depth = shape[0]
    with zarrio.creating(tmp / "fragments.zarr", shape, np.uint32, chunks,
                         pyramid=False) as frag_array:
        parts = run_tasks(client, task(fragment_task, str(membrane),
                                       zarrio.store_path(frag_array), shape, options, mode),
                          grid, "fragment blocks")
    counts = np.concatenate([c for c, _ in parts])
    first_index = np.concatenate([[0]] + [f for _, f in parts]).astype(np.uint64)
    del parts
    frags = _Fragments(str(tmp / "fragments.zarr"), counts, first_index, None)
    items = [(region, frags.block(region, 1)) for region in grid]
    graphs = run_tasks(client, task(graph_task, str(membrane), str(overlap), frags.store,
                                    depth, scoring, z_threshold), items, "graph blocks")
    frags.graph = concatenate(graphs)
    return frags


def _passes(client, membrane, overlap, outputs, values, chunks, scoring, z_threshold, shape,
            grid, options, tmp, mode):
    """The passes of :func:`agglomerate_stores`, the fragments kept in ``tmp``."""
    fr = _fragments_and_graph(client, membrane, overlap, shape, grid, chunks, options,
                              scoring, z_threshold, tmp, mode)
    frag_store, graph, total, first_index = fr.store, fr.graph, fr.total, fr.first_index
    order = sorted(set(values))
    roots = dict(zip(order, merge(graph, total + 1, order)))
    tables = {}
    for t in order:
        tables[t] = segment_labels(roots.pop(t), first_index)
    result = {"counts": [tables[t][1] for t in values], "fragments": total,
              "edges": len(graph), "graph_bytes": graph.nbytes}
    fr.graph = graph = None
    with contextlib.ExitStack() as stack:
        stores = [zarrio.store_path(stack.enter_context(
            zarrio.creating(out, shape, tables[t][0].dtype, chunks, kind="labels",
                            client=client)))
            for t, out in zip(values, outputs)]
        writes = []
        for region in grid:
            low, high = fr.span(region)
            writes.append((region, fr.block(region), low,
                           [tables[t][0][low:high] for t in values]))
        run_tasks(client, task(write_task, frag_store, stores), writes, "label blocks")
    return result


"""3D connected components blockwise: reconstruct and the evaluation volume.

The passes of igneous' CCL, each a named task, over a grid built by
:mod:`neuron3d.blockwise.grid`:

1. :func:`label_block_task` labels each block's interleaved cytoplasm and overlap planes
   with cc3d (6-connectivity);
2. :func:`face_pairs_task` pairs the labels that touch across the block's three upper
   faces (it runs as soon as the block and its upper neighbours are labelled, on the
   planes those tasks hold, so only the small pairs reach the client);
3. :func:`union_find` (on the client) joins the pairs and numbers the objects;
4. :func:`relabel_block_task` labels each block again (cc3d is deterministic and cheaper
   than storing and re-reading the local labels) and writes it with its slice of the map.

**Canonical numbering**: objects are numbered 1..K in the C order (z, then y, then x) of
their first voxel in the output, the numbering the in-memory path gives (it renumbers in
order of first appearance), so both results are equal bit for bit.  6-connectivity only
(the thesis' choice): 18/26 would also need the blocks that touch at edges and corners.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import labels as L
from .. import zarrio
from ..atomic import check_outputs_apart
from .executor import check_block_memory, gather_with_progress, run_tasks, task
from .grid import block_grid, read_region, read_size, upper_neighbours
from .ops import check_operation_input, first_channel

__all__ = ["check_reconstruct_inputs", "evaluation_volume", "face_pairs_task",
           "label_block_task", "label_volume", "reconstruct", "relabel_block_task",
           "union_find"]

#: About the bytes a labelling task holds per voxel of its block: the interleaved bool
#: planes (2 per slice) and their uint32 labels, the masks and what was read.
_BYTES_PER_VOXEL = 2 * (1 + 4) + 8


def masks_from_images(cytoplasm, overlap, threshold, region):
    """Cytoplasm planes of ``region`` and the overlap planes that follow each of them (the
    last slice of the volume has none), thresholded as reconstruct3D.py reads images."""
    cyto = zarrio.open_input(cytoplasm)
    over = zarrio.open_input(overlap)
    z = region[0]
    cyto_block = first_channel(zarrio.read_block(cyto, region)) >= threshold
    stop = min(z.stop, cyto.shape[0] - 1)
    over_block = first_channel(zarrio.read_block(over, (slice(z.start, stop),) + region[1:])) \
        >= threshold
    return cyto_block, over_block


def masks_from_labels(source, region):
    """The cytoplasm and overlap planes of ground-truth labels (the evaluation volume's
    input): the block, the next slice and a 1-pixel halo in y and x."""
    from ..io import as_label_stack

    data, inner = read_region(zarrio.open_input(source), region, (0, 1, 1), extra_after_z=1)
    data = as_label_stack(data, source)
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


def label_block_task(masks, shape, region):
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


def face_pairs_task(block, *upper):
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


def relabel_block_task(masks, output, item):
    """Pass 4: the block labelled again (as in pass 1), its cytoplasm planes written with
    block-local labels replaced by final ones."""
    region, mapping = item
    ids, _ = _block_labels(masks, region)
    zarrio.open_output(output)[region] = mapping[ids[0::2]]


def union_find(summaries, neighbours):
    """Pass 3, on the client: join the blocks' touching labels and number the objects.

    Parameters
    ----------
    summaries : list
        Per block, what :func:`face_pairs_task` returned: (count, labels, first voxel of
        each label, the pairs across each upper face).
    neighbours : list
        Per block, the index of its upper neighbour along each axis (or None).

    Returns
    -------
    mapping : numpy.ndarray
        Final ID of every block-local label, indexed by the label plus the block's offset
        (node 0 is the background); dtype fits K.
    offsets, counts : numpy.ndarray
        Each block's offset into ``mapping`` and its number of labels.
    count : int
        K, the number of objects.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = np.array([c for c, _, _, _ in summaries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    # One union-find over the touching pairs; node 0 is the background.
    edges = [np.zeros((0, 2), np.int64)]
    for i, (_, _, _, touching) in enumerate(summaries):
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
    for i, (_, values, firsts, _) in enumerate(summaries):
        node_first[offsets[i] + values.astype(np.int64)] = firsts
    component_first = np.full(component.max() + 1, none, dtype=np.uint64)
    np.minimum.at(component_first, component, node_first)
    present = np.flatnonzero(component_first != none)
    order = present[np.argsort(component_first[present], kind="stable")]
    count = len(order)
    dtype = L.label_dtype(count)
    final = np.zeros(component.max() + 1, dtype=dtype)
    final[order] = np.arange(1, count + 1, dtype=dtype)
    mapping = final[component]
    mapping[0] = 0
    return mapping, offsets, counts, count


def label_volume(client, masks, shape, output, chunks=None, block_bytes=0):
    """3D connected components of interleaved cytoplasm and overlap planes, blockwise.

    Parameters
    ----------
    client : dask.distributed.Client or SerialExecutor
        The engine (:func:`neuron3d.blockwise.engine`).
    masks : callable
        ``masks(region=...) -> (cytoplasm planes, overlap planes)`` of a block, bool (the
        overlap planes that follow each cytoplasm plane; none after the last slice).
    shape : tuple of int
        (z, y, x) of the output.
    output : str or Path
        The zarr store written (atomically), chunked ``chunks``.
    block_bytes : int
        Bytes per voxel the masks of a block read, beside the labelling's own.

    Returns
    -------
    int
        K, the number of objects.  Output labels are 1..K in the C order of each object's
        first voxel, dtype the smallest unsigned type of at least 16 bits holding K: the
        result of :func:`neuron3d.reconstruct.reconstruct`, bit for bit.
    """
    shape = tuple(shape)
    chunks = zarrio.chunks_for(shape, chunks)
    grid = block_grid(shape, chunks)
    check_block_memory(client, read_size(grid[0], (0, 1, 1), 1) *
                       (_BYTES_PER_VOXEL + block_bytes), "the connected components")
    neighbours = upper_neighbours(grid)
    labelled = client.map(task(label_block_task, masks, shape), grid, pure=False)
    # Face tasks go before the labelling still queued (higher priority), so each block's
    # planes are released soon after its neighbours are labelled: the cluster holds about
    # one layer of blocks' faces, whatever the volume.
    upper_of = [[None if n[axis] is None else labelled[n[axis]] for n in neighbours]
                for axis in range(3)]
    paired = client.map(task(face_pairs_task), labelled, *upper_of, pure=False, priority=1)
    del labelled, upper_of
    summaries = gather_with_progress(paired, "label blocks")
    del paired
    mapping, offsets, counts, count = union_find(summaries, neighbours)
    with zarrio.creating(output, shape, mapping.dtype, chunks, kind="labels",
                         client=client) as out:
        tasks = [(region, mapping[offsets[i]:offsets[i] + counts[i] + 1].copy())
                 for i, region in enumerate(grid)]
        for _, part in tasks:
            part[0] = 0  # the block's background (its slice starts at the previous block's)
        run_tasks(client, task(relabel_block_task, masks, zarrio.store_path(out)), tasks,
                  "relabel blocks")
    return count


def reconstruct(client, cytoplasm, overlap, output, chunks=None, threshold=L.FOREGROUND):
    """reconstruct3D.py's thesis method blockwise: zarr images in, zarr labels out."""
    from ..reconstruct import check_threshold

    check_outputs_apart({"--input_dir_cytoplasm": cytoplasm, "--input_dir_overlap": overlap},
                        {"output": output})
    threshold = check_threshold(threshold, "--threshold")
    shape = check_reconstruct_inputs(cytoplasm, overlap)
    masks = functools.partial(masks_from_images, str(cytoplasm), str(overlap), threshold)
    return label_volume(client, masks, shape, output, chunks, block_bytes=2)


def check_reconstruct_inputs(cytoplasm, overlap):
    """The shape of the reconstruction of zarr ``cytoplasm`` and ``overlap`` images; ValueError
    unless there are N - 1 (or N, the last ignored) overlap planes of the same size."""
    cyto = zarrio.open_input(cytoplasm, "--input_dir_cytoplasm")
    over = zarrio.open_input(overlap, "--input_dir_overlap")
    if tuple(over.shape[1:3]) != tuple(cyto.shape[1:3]) or \
            over.shape[0] not in (cyto.shape[0] - 1, cyto.shape[0]):
        raise ValueError(f"expected {cyto.shape[0] - 1} overlap planes of "
                         f"{cyto.shape[1]} x {cyto.shape[2]} for {cyto.shape[0]} cytoplasm "
                         f"slices ({cytoplasm}), got {tuple(over.shape[:3])} from {overlap}")
    return tuple(cyto.shape[:3])


def evaluation_volume(client, labels, output, chunks=None):
    """process3D.py --operation evaluation blockwise: zarr labels in, zarr labels out."""
    check_outputs_apart({"input": labels}, {"output": output})
    array = check_operation_input("evaluation", labels)
    masks = functools.partial(masks_from_labels, str(labels))
    return label_volume(client, masks, tuple(array.shape), output, chunks,
                        block_bytes=np.dtype(array.dtype).itemsize * 4)

"""The contingency table of two zarr label volumes, blockwise: one sparse table of (true,
predicted) pairs per block, summed; every score of evaluate3D.py is computed from that sum,
as in memory."""

from __future__ import annotations

import numpy as np

from .. import zarrio
from .executor import check_block_memory, run_tasks, task
from .grid import block_grid
from .ops import check_label_dtype

__all__ = ["check_same_shape", "contingency_table", "table_task"]


def table_task(true, pred, region):
    """One block's contingency table: (true labels, predicted labels, counts)."""
    from ..io import as_label_stack
    from ..metrics import contingency

    t = as_label_stack(zarrio.read_block(zarrio.open_input(true), region), true)
    p = as_label_stack(zarrio.read_block(zarrio.open_input(pred), region), pred)
    table = contingency(t, p, true, pred)
    return table.true, table.pred, table.counts


def check_same_shape(predicted, references):
    """ValueError unless the zarr label volumes ``predicted`` and each of ``references``
    (flag -> path) have one shape and hold labels (bool or integers: checked from the
    metadata, before any block is read); returns the shape."""
    array = zarrio.open_input(predicted, "--predicted")
    check_label_dtype(array, predicted)
    shape = tuple(array.shape)
    for flag, path in references.items():
        other = zarrio.open_input(path, flag)
        if tuple(other.shape) != shape:
            raise ValueError(f"shapes differ: predicted {predicted} is {shape}, {flag} {path} "
                             f"is {tuple(other.shape)}")
        check_label_dtype(other, path)
    return shape


def contingency_table(client, true, pred, chunks=None):
    """The contingency table of two zarr label volumes, summed over blocks: equal to
    :func:`neuron3d.metrics.contingency` of the whole volumes (both are sorted by
    (true, predicted))."""
    from ..metrics import Contingency, sorted_table

    shape = check_same_shape(pred, {"--true": true})
    grid = block_grid(shape, zarrio.chunks_for(shape,
                                               chunks or zarrio.open_input(true).chunks[:3]))
    voxels = int(np.prod([s.stop - s.start for s in grid[0]]))
    itemsizes = (zarrio.open_input(true).dtype.itemsize + zarrio.open_input(pred).dtype.itemsize)
    check_block_memory(client, voxels * (2 * itemsizes + 24), "the contingency table")
    parts = run_tasks(client, task(table_task, str(true), str(pred)), grid,
                      "contingency blocks")
    return sorted_table(Contingency(np.concatenate([a for a, _, _ in parts]),
                                    np.concatenate([b for _, b, _ in parts]),
                                    np.concatenate([c for _, _, c in parts]),
                                    int(np.prod(shape))))

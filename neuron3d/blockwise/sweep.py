"""python -m neuron3d.sweep blockwise: every threshold from one region graph, scored from
contingency tables of fragments.

The fragments and the region graph are built once (passes 1-3 of
:mod:`neuron3d.blockwise.agglomerate`) and merged once through the increasing thresholds.
A segmentation at a threshold maps every fragment to one label, so its contingency table
against a reference is the reference's table against the *fragments* (one pass over the
blocks, whatever the number of thresholds) with each fragment replaced by its label and
equal pairs summed (:func:`neuron3d.metrics.sorted_table`).  No label volume is written;
every score equals :func:`neuron3d.sweep.sweep`'s bit for bit (the tables are equal and
sorted alike).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .. import zarrio
from ..atomic import check_outputs_apart, staging_dir
from .agglomerate import (
    _MEMBRANE,
    _OVERLAP,
    _fragments_and_graph,
    _global_fragments,
    block_chunks,
    check_agglomerate_inputs,
)
from .executor import check_block_memory, run_tasks, task
from .grid import block_grid
from .ops import check_label_dtype
from .regiongraph import BLOCKWISE_SCORINGS, merge, segment_labels

__all__ = ["check_sweep_inputs", "reference_table_task", "sweep_stores"]


def reference_table_task(fragments, reference, item):
    """One block's contingency table of the labels ``reference`` against the fragments:
    (true labels, fragment IDs, counts)."""
    from ..io import as_label_stack
    from ..metrics import contingency

    region, offsets = item
    frags = _global_fragments(fragments, region, offsets)
    true = as_label_stack(zarrio.read_block(zarrio.open_input(reference), region), reference)
    table = contingency(true, frags, reference, "the fragments")
    return table.true, table.pred, table.counts


def check_sweep_inputs(membrane, overlap, labels, evaluation=None):
    """The (z, y, x) shape of a blockwise sweep's stores and its references ({flag: (kind,
    path)}), checked from their metadata (before the engine starts): see
    :func:`neuron3d.blockwise.check_agglomerate_inputs`; the label stores must have that
    shape and hold integers."""
    shape = check_agglomerate_inputs(membrane, overlap)
    references = {"--labels": ("labels", labels)}
    if evaluation is not None:
        references["--evaluation"] = ("evaluation volume", evaluation)
    _check_references(shape, references)
    return shape, references


def _check_references(shape, references):
    for flag, (kind, path) in references.items():
        array = zarrio.open_input(path, flag)
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"shapes differ: the {kind} {path} is {tuple(array.shape)}, the "
                             f"membranes are {tuple(shape)}")
        check_label_dtype(array, path)


def sweep_stores(client, membrane, overlap, labels, evaluation=None, thresholds=None,
                 chunks=None, scoring="median", scratch=None, criterion="voi", fragments="2d"):
    """:func:`neuron3d.sweep.sweep` of zarr stores, blockwise.

    Parameters
    ----------
    client : dask.distributed.Client or SerialExecutor
        The engine (:func:`neuron3d.blockwise.engine`).
    membrane, overlap : str or Path
        zarr stores as :func:`neuron3d.blockwise.agglomerate_stores` reads them.
    labels, evaluation : str or Path
        zarr label stores of the same shape (``evaluation`` optional).
    thresholds : sequence of float
        The grid (default :data:`neuron3d.sweep.THRESHOLDS`).
    chunks : tuple of 3 int, optional
        Blocks are ``chunks[0]`` whole slices (default
        :func:`neuron3d.blockwise.agglomerate.block_chunks`).
    scoring : {"median", "mean", "median_max"}
    criterion : str
        How the threshold is chosen (:data:`neuron3d.thresholds.CRITERIA`).
    scratch : str or Path
        A path beside which the temporary fragment store is made (the sweep file).
    fragments : {"2d", "3d"}
        Per-slice fragments, or one 3-D watershed per block
        (:func:`neuron3d.blockwise.agglomerate.block_fragments`).

    Returns
    -------
    dict
        As :func:`neuron3d.sweep.sweep`.
    """
    from ..agglomerate import check_fragment_mode, check_thresholds
    from ..metrics import Contingency, scores_from_table, sorted_table
    from ..thresholds import CRITERIA, THRESHOLDS, check_criterion, choose

    inputs = {_MEMBRANE: membrane, _OVERLAP: overlap, "--labels": labels,
              "--evaluation": evaluation}
    if scratch is not None:
        check_outputs_apart(inputs, {"--output": scratch})
    check_criterion(criterion)
    check_fragment_mode(fragments)
    values = check_thresholds(THRESHOLDS if thresholds is None else thresholds, "--thresholds")
    if scoring not in BLOCKWISE_SCORINGS:
        raise ValueError(f"--scoring {scoring}: blockwise agglomeration scores "
                         f"{', '.join(BLOCKWISE_SCORINGS)}")
    shape, references = check_sweep_inputs(membrane, overlap, labels, evaluation)
    chunks = block_chunks(shape, chunks, fragments)
    grid = block_grid(shape, (chunks[0],) + shape[1:])
    from .agglomerate import _BYTES_PER_VOXEL

    check_block_memory(client, (chunks[0] + 1) * shape[1] * shape[2] * _BYTES_PER_VOXEL,
                       "the agglomeration (blocks of --chunks Z whole slices)")
    target = Path(scratch if scratch is not None else str(membrane).rstrip("/") + ".sweep")
    with staging_dir(target, "a file") as tmp:
        try:
            fr = _fragments_and_graph(client, membrane, overlap, shape, grid, chunks,
                                      (0.2, 0.0, 5), scoring, 0.3, tmp, fragments)
            items = [(region, fr.block(region)) for region in grid]
            tables = {}
            for flag, (_, path) in references.items():
                parts = run_tasks(client, task(reference_table_task, fr.store, str(path)),
                                  items, f"{flag.lstrip('-')} blocks")
                tables[flag] = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    total = int(np.prod(shape))
    true, frag, counts = tables["--labels"]
    sizes = np.bincount(frag.astype(np.int64), weights=counts,
                        minlength=fr.total + 1).astype(np.int64)
    order = sorted(set(values))
    roots = dict(zip(order, merge(fr.graph, fr.total + 1, order)))
    rows = {}
    for t in order:
        table, count = segment_labels(roots.pop(t), fr.first_index)
        scores = {}
        for flag, (true, frag, counts) in tables.items():
            pred = table[frag.astype(np.int64)].astype(np.uint64)
            scores[flag] = scores_from_table(sorted_table(Contingency(true, pred, counts,
                                                                      total)))
        label_sizes = np.bincount(table.astype(np.int64), weights=sizes,
                                  minlength=count + 1).astype(np.int64)[1:]
        label_sizes = label_sizes[label_sizes > 0]
        small = label_sizes < 100
        rows[t] = {"threshold": float(t), "labels": scores["--labels"],
                   "evaluation": scores.get("--evaluation"),
                   "small": {"objects": int(len(label_sizes)), "small_objects": int(small.sum()),
                             "small_voxel_share": float(label_sizes[small].sum() / total)}}
    ordered = [rows[t] for t in values]
    result = {"rows": ordered, "chosen": choose(ordered, criterion), "scoring": scoring,
              "criterion": CRITERIA[criterion], "criterion_name": criterion}
    # recorded as the in-memory sweep records it (per-slice fragments: no key); 3-D
    # fragments depend on the blocks' depth too
    return result if fragments == "2d" else {**result, "fragments": fragments,
                                             "block_slices": int(chunks[0])}

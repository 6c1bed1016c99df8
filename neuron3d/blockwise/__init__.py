"""Blockwise processing of zarr volumes, equal to the in-memory results bit for bit.

``--scheduler`` picks the engine (:mod:`~neuron3d.blockwise.executor`): ``local:N`` starts
a dask ``LocalCluster`` of N worker processes on this machine; ``tcp://HOST:PORT``
connects to a running dask scheduler (dask-jobqueue on SLURM/PBS, dask-kubernetes,
``dask scheduler`` by hand...); without it the same tasks run serially in this process.
Workers read their inputs from and write their outputs to zarr stores on a file system
they share with the client.  Each task holds one output chunk plus its halo.

The block grid (:mod:`~neuron3d.blockwise.grid`) is the output store's chunk grid, so no
two tasks write the same chunk.  The package, by concern:

* :mod:`~neuron3d.blockwise.executor`: the dask client or the serial executor, tasks that
  return bad input instead of raising it, the memory a block needs, the shared CLI flags;
* :mod:`~neuron3d.blockwise.ops`: process3D.py's per-slice operations as a table of
  (halo, output shape, kernel), and why each halo is exact;
* :mod:`~neuron3d.blockwise.ccl`: reconstruct and the evaluation volume, 3D connected
  components in named passes (label, face pairs, union-find, relabel);
* :mod:`~neuron3d.blockwise.contingency`: evaluate3D.py's contingency table, per block,
  summed;
* :mod:`~neuron3d.blockwise.agglomerate`: reconstruct3D.py --method agglomerate (fragments
  and region graph per block of whole slices, gathered and merged on the client as waterz
  merges, :mod:`~neuron3d.blockwise.regiongraph`), and the sweep of its thresholds
  (:mod:`~neuron3d.blockwise.sweep`).

The zarr stores each process opens once (``open_input``, ``open_output``) live with zarr,
in :mod:`neuron3d.zarrio`; they are importable from here too.
"""

from ..zarrio import open_input, open_output, store_path
from .agglomerate import agglomerate_stores, block_fragments, check_agglomerate_inputs
from .ccl import (
    check_reconstruct_inputs,
    evaluation_volume,
    face_pairs_task,
    label_block_task,
    label_volume,
    reconstruct,
    relabel_block_task,
    union_find,
)
from .contingency import check_same_shape, contingency_table
from .executor import (
    MIN_WORKER_MEMORY,
    WORKER_MALLOC,
    SerialExecutor,
    add_arguments,
    check_arguments,
    check_block_memory,
    check_memory_limit,
    engine,
    gather_with_progress,
    parse_scheduler,
    probe_scheduler,
    run_tasks,
    task,
)
from .grid import block_grid, read_region, upper_neighbours
from .ops import OPERATIONS, Operation, check_operation_input, per_slice, run_block
from .sweep import sweep_stores

__all__ = ["MIN_WORKER_MEMORY", "OPERATIONS", "Operation", "SerialExecutor", "WORKER_MALLOC",
           "add_arguments", "agglomerate_stores", "block_fragments", "block_grid",
           "check_agglomerate_inputs", "check_arguments", "check_block_memory",
           "check_memory_limit", "check_operation_input", "check_reconstruct_inputs",
           "check_same_shape", "contingency_table", "engine", "evaluation_volume",
           "face_pairs_task", "gather_with_progress", "label_block_task", "label_volume",
           "open_input", "open_output", "parse_scheduler", "per_slice", "probe_scheduler",
           "read_region", "reconstruct", "relabel_block_task", "run_block", "run_tasks",
           "store_path", "sweep_stores", "task", "union_find", "upper_neighbours"]

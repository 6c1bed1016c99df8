"""process3D.py's per-slice operations blockwise: one table of (halo, output shape, kernel).

Each operation is data (:class:`Operation`, in daisy's spirit): what a block reads around
itself, the shape and channels of what it writes, and a kernel that maps what was read to
the output of those voxels.  One task function (:func:`run_block`) reads, validates, runs the
kernel, crops and writes, for every operation.  Why each halo is exact:

* membrane, cytoplasm: a 1-pixel halo in y and x (the 3 x 3 in-slice
  neighbourhood); at the volume's faces no halo, as in memory.
* overlap: the next slice, plus the 1-pixel halo in y and x for the membranes.
* consecutive: the next slice.
* eroskele: whole slices (blocks span the slice in y and x): the skeleton of a
  pixel depends on its whole connected component, which no fixed halo bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import labels as L
from .. import zarrio
from ..atomic import check_outputs_apart
from .executor import check_block_memory, run_tasks, task
from .grid import block_grid, read_region, read_size

__all__ = ["OPERATIONS", "Operation", "check_label_dtype", "check_operation_input", "per_slice",
           "run_block"]


def first_channel(data):
    """The first channel of a (z, y, x, c) block; a (z, y, x) block unchanged."""
    return data[..., 0] if data.ndim == 4 else data


def _membrane(data, source):
    return L.membrane(data, source)


def _cytoplasm(data, source):
    return L.cytoplasm(data, L.membrane(data, source), source)


def _overlap(data, source):
    return L.overlap(data, source=source)


def _consecutive(data, source):
    return L.consecutive(first_channel(data), source)


def _eroskele(data, source, erosions, threshold):
    return L.eroskele(first_channel(data) >= threshold, erosions, source)


@dataclass(frozen=True)
class Operation:
    """A per-slice operation run blockwise.

    Attributes
    ----------
    kernel : callable
        ``kernel(data, source, **params)``: the output of the voxels read (``data``, the
        block grown by the halo), bool or uint8; its first ``len(block)`` slices and the
        block's rows and columns are written.
    halo : tuple of 3 int
        Voxels read before and after the block along z, y and x (clipped to the volume).
    next_slices : int
        Slices read after the block (and after the halo) along z.
    fewer_slices : int
        The output has this many slices fewer than the input (overlap planes between
        slices: 1).
    channels : int or None
        The output's trailing channel axis (consecutive: 3 colours).
    whole_slices : bool
        Blocks span whole slices in y and x (no halo in y and x bounds the kernel).
    labels : bool
        The input is a label stack (integer dtype, no negative values).
    bytes_per_voxel : int
        About how many bytes the kernel holds per input voxel read, beside the input's own
        (for :func:`neuron3d.blockwise.check_block_memory`).
    """

    kernel: Callable
    halo: tuple = (0, 0, 0)
    next_slices: int = 0
    fewer_slices: int = 0
    channels: int | None = None
    whole_slices: bool = False
    labels: bool = False
    bytes_per_voxel: int = 8

    def output_shape(self, shape):
        """The output's shape for an input of (z, y, x) ``shape``."""
        out = (shape[0] - self.fewer_slices,) + tuple(shape[1:3])
        return out + ((self.channels,) if self.channels else ())

    def block_bytes(self, region, itemsize):
        """About the memory one task of ``region`` needs (input, kernel, output)."""
        return read_size(region, self.halo, self.next_slices) * (itemsize + self.bytes_per_voxel)


#: The operations process3D.py runs blockwise, by name.
OPERATIONS = {
    "membrane": Operation(_membrane, halo=(0, 1, 1), labels=True, bytes_per_voxel=10),
    "cytoplasm": Operation(_cytoplasm, halo=(0, 1, 1), labels=True, bytes_per_voxel=12),
    "overlap": Operation(_overlap, halo=(0, 1, 1), next_slices=1, fewer_slices=1,
                         labels=True, bytes_per_voxel=16),
    "consecutive": Operation(_consecutive, next_slices=1, fewer_slices=1, channels=3,
                             bytes_per_voxel=4),
    "eroskele": Operation(_eroskele, whole_slices=True, bytes_per_voxel=24),
}


def check_label_dtype(array, source):
    """ValueError unless the zarr ``array`` (from ``source``) can hold labels: bool or an
    integer dtype (checked from the metadata, before any block is submitted)."""
    if array.dtype.kind not in "biu":
        raise ValueError(f"label stack must have an integer dtype, got {array.dtype} from "
                         f"{source}")


def check_operation_input(operation, source):
    """The zarr array of ``source`` if ``operation`` (a name of :data:`OPERATIONS`, or
    ``"evaluation"``) can run on it: a label operation needs a 3-D store of bool or integers.
    Checked from the metadata, so a script can call it before it starts the engine.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming ``source`` (or the operation) and what was expected.
    """
    if operation != "evaluation" and operation not in OPERATIONS:
        raise ValueError(f"no blockwise operation {operation!r} (expected one of "
                         f"{', '.join(OPERATIONS)}, evaluation)")
    array = zarrio.open_input(source)
    if operation == "evaluation" or OPERATIONS[operation].labels:
        if array.ndim != 3:
            raise ValueError(f"label stack must be 3-D (z, y, x), got shape {array.shape} from "
                             f"{source}")
        check_label_dtype(array, source)
    return array


def run_block(operation, source, output, region, **params):
    """One task: ``operation`` (a name of :data:`OPERATIONS`) on the block ``region`` of the
    output, read from zarr ``source`` and written into zarr ``output``."""
    from ..io import as_label_stack

    op = OPERATIONS[operation]
    data, inner = read_region(zarrio.open_input(source), region, op.halo, op.next_slices)
    if op.labels:
        data = as_label_stack(data, source)
    out = op.kernel(data, source, **params)
    target = region + ((slice(None),) if op.channels else ())
    zarrio.open_output(output)[target] = zarrio.as_stored(out[inner])


def per_slice(client, operation, source, output, chunks=None, erosions=10,
              threshold=L.FOREGROUND):
    """Run a process3D.py operation (:data:`OPERATIONS`) blockwise from zarr ``source`` to zarr
    ``output`` (written atomically, chunks ``chunks``).  Returns the output's shape.

    ``client`` is the engine (:func:`neuron3d.blockwise.engine`).  Bad input (an output that
    is or lies inside the input, a float label store, a block too large for the workers'
    memory) is refused before any block is submitted.
    """
    check_outputs_apart({"input": source}, {"output": output})
    array = check_operation_input(operation, source)
    op = OPERATIONS[operation]
    shape = tuple(array.shape[:3])
    out_shape = op.output_shape(shape)
    chunks = zarrio.chunks_for(out_shape, chunks)
    grid_chunks = (chunks[0],) + out_shape[1:3] if op.whole_slices else chunks
    params = {}
    if operation == "eroskele":  # whole slices: see the module's docstring
        params = {"erosions": L.check_count(erosions, "--erosions"), "threshold": threshold}
    grid = block_grid(out_shape, grid_chunks)
    if grid:
        check_block_memory(client, op.block_bytes(grid[0], np.dtype(array.dtype).itemsize),
                           f"--operation {operation}")
    with zarrio.creating(output, out_shape, np.uint8, chunks, client=client) as out:
        if out_shape[0]:  # one slice has no overlap: an empty (0, y, x) store
            run_tasks(client, task(run_block, operation, str(source), zarrio.store_path(out),
                                   **params), grid, f"{operation} blocks")
    return out_shape

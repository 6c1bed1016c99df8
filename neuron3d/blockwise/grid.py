"""The block grid: the regions a blockwise task writes, and how a task reads one with its halo.

Daisy's terms: the *total ROI* is the output volume, the *write ROI* of a task is one chunk
of the output store's chunk grid (so no two tasks write the same chunk), its *read ROI* is
that region grown by the operation's halo, clipped to the input.
"""

from __future__ import annotations

from itertools import product

from .. import zarrio


def block_grid(shape, chunks):
    """The regions (tuples of slices) of the chunk grid ``chunks`` over ``shape`` (3-D), in C
    order."""
    ranges = [[slice(start, min(start + c, s)) for start in range(0, s, c)]
              for s, c in zip(shape[:3], chunks[:3])]
    return list(product(*ranges))


def upper_neighbours(grid):
    """For each region of ``grid`` (from :func:`block_grid`), the index of the next region
    along z, y and x (``None`` at the volume's faces): the blocks it shares a face with."""
    index = {tuple(s.start for s in region): i for i, region in enumerate(grid)}

    def upper(region, axis):
        start = [s.start for s in region]
        start[axis] = region[axis].stop
        return index.get(tuple(start))

    return [[upper(region, axis) for axis in range(3)] for region in grid]


def read_region(array, region, halo=(0, 0, 0), extra_after_z=0):
    """Read ``region`` of ``array`` grown by ``halo`` (clipped to the array) and
    ``extra_after_z`` more slices after it; returns (data, the region's slices within it).
    A chunk that cannot be decoded is a ValueError naming the store."""
    starts, stops, inner = [], [], []
    for axis, (s, h) in enumerate(zip(region, halo)):
        size = array.shape[axis]
        lo = max(0, s.start - h)
        hi = min(size, s.stop + h + (extra_after_z if axis == 0 else 0))
        starts.append(lo)
        stops.append(hi)
        inner.append(slice(s.start - lo, s.stop - lo))
    data = zarrio.read_block(array, tuple(slice(a, b) for a, b in zip(starts, stops)))
    return data, tuple(inner)


def read_size(region, halo=(0, 0, 0), extra_after_z=0):
    """The number of voxels :func:`read_region` reads for ``region`` at most (unclipped)."""
    count = 1
    for axis, (s, h) in enumerate(zip(region, halo)):
        count *= s.stop - s.start + 2 * h + (extra_after_z if axis == 0 else 0)
    return count

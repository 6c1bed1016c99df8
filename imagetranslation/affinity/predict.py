"""Affinities of a whole volume from the affinity network, tile by tile.

The volume is cut into tiles of at most ``tile`` voxels per axis; each tile is predicted with
``margin`` voxels of context on every side that has data (mirrored and padded to the network's
multiple where it has not), and only its centre is kept.  A volume no larger than one tile is
predicted in one piece.
"""

from __future__ import annotations

import math

import numpy as np

from ..data import to_model_range

#: Default tile (z, y, x) and context margin in voxels.
TILE = (96, 192, 192)
MARGIN = 16


def _pad_to(array, multiple):
    """``array`` (z, y, x) mirrored at its far ends up to multiples of ``multiple``."""
    pad = [(0, (-s) % m) for s, m in zip(array.shape, multiple)]
    if not any(p for _, p in pad):
        return array
    mode = "reflect" if all(s > p for s, (_, p) in zip(array.shape, pad)) else "symmetric"
    return np.pad(array, pad, mode=mode)


def _starts(size, tile):
    count = max(1, math.ceil(size / tile))
    return [i * tile for i in range(count)]


def predict_volume(model, em, multiple, tile=TILE, margin=MARGIN):
    """Affinities of ``em``.

    Parameters
    ----------
    model : keras.Model
        (1, z, y, x, 1) -> (1, z, y, x, 3).
    em : numpy.ndarray
        (z, y, x) EM (uint8, or float in [0, 255]).
    multiple : tuple of int
        Each input side must be a multiple of these (:func:`network.multiple`).
    tile : tuple of int
        Largest tile (z, y, x) predicted at once, margins excluded.
    margin : int
        Context on each side of a tile, in voxels.

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) float32 affinities in [0, 1], waterz's layout.
    """
    em = to_model_range(em)
    shape = em.shape
    out = np.zeros((3,) + shape, dtype=np.float32)
    grid = [_starts(s, t) for s, t in zip(shape, tile)]
    tiles = [(z, y, x) for z in grid[0] for y in grid[1] for x in grid[2]]
    for start in tiles:
        core = tuple(slice(o, min(o + t, s)) for o, t, s in zip(start, tile, shape))
        outer = tuple(slice(max(c.start - margin, 0), min(c.stop + margin, s))
                      for c, s in zip(core, shape))
        block = _pad_to(em[outer], multiple)
        predicted = model(block[None, ..., None], training=False)
        predicted = np.asarray(predicted)[0]
        inner = tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer))
        out[(slice(None), *core)] = np.moveaxis(predicted[inner], -1, 0)
    out[0, 0] = out[1, :, 0] = out[2, :, :, 0] = 0  # no predecessor
    return out


def to_uint8(affs):
    """(3, z, y, x) affinities in [0, 1] as a (z, y, x, 3) uint8 stack (the file layout)."""
    return np.moveaxis(np.clip(np.rint(affs * 255), 0, 255).astype(np.uint8), 0, -1)

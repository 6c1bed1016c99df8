"""Synthetic serial-section EM volumes with dense neuron labels (the project's default data).

The generator imitates SNEMI3D: neurites run through z as tubes whose
centres drift and whose elliptical cross-sections change size and
orientation; some start or end inside the volume, some branch off a parent
(the branch keeps the parent's ID).  Every voxel belongs to a neuron: each
pixel takes the ID of the nearest neurite under a weighted, anisotropic
distance measured on smoothly warped coordinates, so boundaries are wavy
rather than straight Voronoi edges.

The EM image has dark membranes a few pixels thick, textured lighter
cytoplasm with per-neuron brightness, dark organelle-like blobs (mitochondria)
and small vesicles that can be mistaken for membrane, blur, noise and
slice-to-slice brightness and contrast changes.  Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import membrane
from .progress import progress

__all__ = ["check_seed", "check_shape", "synthetic_em", "synthetic_labels", "synthetic_volume"]

#: Mean distance in pixels between neurite centres in a slice.
SPACING = 34.0
#: Block size for the candidate search in :func:`synthetic_labels`.
BLOCK = 4


@dataclass
class _Track:
    ident: int
    z0: int
    z1: int  # exclusive
    pos: np.ndarray  # (n, 2) centre per slice z0..z1-1
    weight: np.ndarray  # (n,) size factor
    angle: np.ndarray  # (n,) ellipse orientation
    aspect: np.ndarray  # (n,) ellipse elongation >= 1


def _smooth_walk(rng, n, start, step, lo=None, hi=None, inertia=0.9):
    """A random walk with momentum (values drift smoothly through z)."""
    out = np.empty(n)
    value, velocity = start, 0.0
    for i in range(n):
        velocity = inertia * velocity + rng.normal(0.0, step)
        value = value + velocity
        if lo is not None and value < lo:
            value, velocity = lo, abs(velocity)
        if hi is not None and value > hi:
            value, velocity = hi, -abs(velocity)
        out[i] = value
    return out


def _make_track(rng, ident, z0, z1, start, height, width):
    n = z1 - z0
    drift = rng.normal(0.0, 0.6, size=2)
    walk = np.stack([_smooth_walk(rng, n, 0.0, 0.25) for _ in range(2)], axis=1)
    pos = start + walk + np.arange(n)[:, None] * drift
    pos[:, 0] = np.clip(pos[:, 0], -SPACING, height + SPACING)
    pos[:, 1] = np.clip(pos[:, 1], -SPACING, width + SPACING)
    weight = np.exp(_smooth_walk(rng, n, rng.normal(0.0, 0.3), 0.03, -0.7, 0.7))
    angle = _smooth_walk(rng, n, rng.uniform(0, np.pi), 0.04)
    aspect = 1.0 + np.abs(_smooth_walk(rng, n, rng.uniform(0.0, 0.8), 0.04, 0.0, 1.5))
    return _Track(ident, z0, z1, pos, weight, angle, aspect)


def _tracks(rng, shape):
    depth, height, width = shape
    margin = SPACING
    area = (height + 2 * margin) * (width + 2 * margin)
    count = max(2, int(round(area / SPACING**2)))
    tracks = []
    ident = 0
    for _ in range(count):
        ident += 1
        z0, z1 = 0, depth
        if depth > 4 and rng.random() < 0.25:
            z0 = int(rng.integers(1, depth - 1))
        if depth > 4 and rng.random() < 0.25:
            z1 = int(rng.integers(z0 + 1, depth))
        start = rng.uniform([-margin, -margin], [height + margin, width + margin])
        tracks.append(_make_track(rng, ident, z0, z1, start, height, width))
    # Branches: a child leaves its parent's centre and keeps the parent's ID.
    for parent in list(tracks):
        if parent.z1 - parent.z0 > 6 and rng.random() < 0.2:
            zb = int(rng.integers(parent.z0 + 1, parent.z1 - 3))
            start = parent.pos[zb - parent.z0] + rng.normal(0.0, 2.0, size=2)
            child = _make_track(rng, parent.ident, zb, parent.z1, start, height, width)
            away = rng.normal(0.0, 1.0, size=2)
            away *= rng.uniform(0.8, 1.6) / (np.linalg.norm(away) + 1e-9)
            child.pos = child.pos + np.arange(len(child.pos))[:, None] * away
            child.weight = child.weight * 0.7
            tracks.append(child)
    return tracks


def _smooth_noise(rng, shape, cell, amplitude):
    """Smooth random field: coarse Gaussian noise on a grid of spacing ``cell``,
    interpolated separably with Gaussian weights (fast matrix products)."""
    field = None
    mats = []
    for size, step in zip(shape, cell):
        nodes = np.arange(-2, int(np.ceil(size / step)) + 3) * step
        weights = np.exp(-0.5 * ((np.arange(size)[:, None] - nodes[None, :]) / (0.75 * step)) ** 2)
        weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
        mats.append(weights.astype(np.float32))
    field = rng.normal(0.0, amplitude, size=tuple(m.shape[1] for m in mats)).astype(np.float32)
    field = np.tensordot(mats[0], field, axes=(1, 0))
    field = np.tensordot(field, mats[1], axes=(1, 1)).transpose(0, 2, 1)
    return np.tensordot(field, mats[2], axes=(2, 1))


def synthetic_labels(shape, seed=0):
    """Dense neuron IDs for a (z, y, x) volume.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint32, IDs 1..K renumbered in order of appearance, no 0.
    """
    from scipy.spatial import cKDTree  # imported here: the CLIs import this module's checks

    depth, height, width = shape
    rng = np.random.default_rng(seed)
    tracks = _tracks(rng, shape)
    warp_y = _smooth_noise(rng, shape, (6, 24, 24), 5.0).astype(np.float32)
    warp_x = _smooth_noise(rng, shape, (6, 24, 24), 5.0).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Middles of BLOCK x BLOCK blocks (clipped into the image) and each pixel's block.
    mid_y = np.minimum(np.arange(0, height, BLOCK) + BLOCK // 2, height - 1)
    mid_x = np.minimum(np.arange(0, width, BLOCK) + BLOCK // 2, width - 1)
    block_row = (np.arange(height) // BLOCK)[:, None]
    block_col = (np.arange(width) // BLOCK)[None, :]
    out = np.empty(shape, dtype=np.uint32)
    for z in progress(range(depth), desc="synthetic labels"):
        live = [t for t in tracks if t.z0 <= z < t.z1]
        idx = [z - t.z0 for t in live]
        centres = np.array([t.pos[i] for t, i in zip(live, idx)], dtype=np.float32)
        weight = np.array([t.weight[i] for t, i in zip(live, idx)], dtype=np.float32)
        angle = np.array([t.angle[i] for t, i in zip(live, idx)], dtype=np.float32)
        aspect = np.array([t.aspect[i] for t, i in zip(live, idx)], dtype=np.float32)
        ids = np.array([t.ident for t in live], dtype=np.uint32)
        wy, wx = warp_y[z], warp_x[z]
        py = (yy + wy).ravel()
        px = (xx + wx).ravel()
        # Candidate neurites per BLOCK x BLOCK block (nearest centres to the
        # block's warped middle): 1/BLOCK^2 of the tree queries.
        k = min(8, len(live))
        by, bx = np.meshgrid(mid_y, mid_x, indexing="ij")
        query = np.stack([(by + wy[by, bx]).ravel(), (bx + wx[by, bx]).ravel()], axis=1)
        _, block_cand = cKDTree(centres).query(query, k=k)
        block_cand = block_cand.reshape(by.shape + (k,))
        cand = block_cand[block_row, block_col].reshape(len(py), k)
        dy = py[:, None] - centres[cand, 0]
        dx = px[:, None] - centres[cand, 1]
        cos, sin = np.cos(angle[cand]), np.sin(angle[cand])
        along = cos * dy + sin * dx
        across = (-sin * dy + cos * dx) * aspect[cand]
        dist = (along**2 + across**2) / weight[cand] ** 2
        best = cand[np.arange(len(py)), np.argmin(dist, axis=1)]
        out[z] = ids[best].reshape(height, width)
    import fastremap

    out, _ = fastremap.renumber(out, preserve_zero=True, in_place=True)
    return out.astype(np.uint32, copy=False)


def _blobs(rng, labels, count, radius_yx, radius_z, depth_scale):
    """Mask of ellipsoidal blobs, each clipped to the neuron at its centre."""
    depth, height, width = labels.shape
    mask = np.zeros(labels.shape, dtype=bool)
    for _ in range(count):
        cz, cy, cx = (rng.integers(0, s) for s in labels.shape)
        ry, rx = rng.uniform(*radius_yx, size=2)
        rz = rng.uniform(*radius_z) * depth_scale
        z0, z1 = max(0, int(cz - rz)), min(depth, int(cz + rz) + 1)
        y0, y1 = max(0, int(cy - ry)), min(height, int(cy + ry) + 1)
        x0, x1 = max(0, int(cx - rx)), min(width, int(cx + rx) + 1)
        gz, gy, gx = np.ogrid[z0:z1, y0:y1, x0:x1]
        inside = ((gz - cz) / max(rz, 0.5)) ** 2 + ((gy - cy) / ry) ** 2 + ((gx - cx) / rx) ** 2
        inside = inside <= 1
        inside &= labels[z0:z1, y0:y1, x0:x1] == labels[cz, cy, cx]
        mask[z0:z1, y0:y1, x0:x1] |= inside
    return mask


def synthetic_em(labels, seed=0):
    """Render an EM-like uint8 volume for ``labels``.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) dense IDs.
    seed : int
        Random seed.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8.
    """
    from scipy import ndimage

    rng = np.random.default_rng([seed, 1])
    shape = labels.shape
    depth, height, width = shape
    # Per-neuron cytoplasm brightness and smooth texture.
    brightness = rng.normal(175.0, 12.0, size=int(labels.max()) + 1).astype(np.float32)
    image = brightness[labels]
    image += _smooth_noise(rng, shape, (2, 6, 6), 9.0).astype(np.float32)
    # Organelles: mitochondria-like dark ellipsoids and small vesicles.
    area = height * width
    mito = _blobs(rng, labels, int(area / 2500 * max(1, depth / 6)), (3.0, 9.0), (1.5, 5.0), 1.0)
    vesicles = np.zeros(shape, dtype=bool)
    for radius in (1, 2):
        seeds = rng.random(shape) < 1.0 / (120 * radius**2)
        disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius + 0.3
        vesicles |= ndimage.binary_dilation(seeds, structure=disk[np.newaxis])
    image[mito] = 95.0 + rng.normal(0.0, 6.0)
    image[vesicles] -= 55.0
    # Dark membranes, 3-4 pixels thick.
    walls = ndimage.binary_dilation(membrane(labels), structure=np.ones((1, 2, 2), bool))
    image[walls] = 55.0
    image = ndimage.gaussian_filter(image, sigma=(0, 1.1, 1.1))
    image += rng.normal(0.0, 11.0, size=shape).astype(np.float32)
    gain = rng.normal(1.0, 0.06, size=(depth, 1, 1)).astype(np.float32)
    offset = rng.normal(0.0, 9.0, size=(depth, 1, 1)).astype(np.float32)
    image = (image - 128.0) * gain + 128.0 + offset
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def check_shape(shape, name="shape"):
    """Return ``shape`` as a tuple of three ints >= 1; raise ValueError naming ``name``."""
    try:
        values = tuple(shape)
    except TypeError:
        values = (shape,)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or v < 1 for v in values):
        raise ValueError(f"{name} must be three whole numbers >= 1 (z, y, x), got "
                         f"{' '.join(map(str, values))}")
    return tuple(int(v) for v in values)


def check_seed(seed, name="seed"):
    """Return ``seed`` as an int; raise ValueError naming ``name`` unless it is >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {seed!r}")
    return int(seed)


def synthetic_volume(shape=(64, 512, 512), seed=0):
    """EM and labels in SNEMI3D's format.

    Parameters
    ----------
    shape : tuple of int
        (z, y, x) sizes, each >= 1.
    seed : int
        Random seed >= 0; the same seed gives the same bytes.

    Returns
    -------
    em : numpy.ndarray
        (z, y, x) uint8.
    labels : numpy.ndarray
        (z, y, x) uint32 dense IDs 1..K (no 0).

    Raises
    ------
    ValueError
        If ``shape`` or ``seed`` is invalid (see :func:`check_shape`, :func:`check_seed`).
    """
    shape = check_shape(shape)
    seed = check_seed(seed)
    ids = synthetic_labels(shape, seed)
    return synthetic_em(ids, seed), ids

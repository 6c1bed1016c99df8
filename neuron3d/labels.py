"""Label images: membrane, cytoplasm, overlap, consecutive pairs, thinning, quadrants.

All functions take and return numpy arrays in (z, y, x) order; definitions
follow GUIDE §3 exactly.
"""

from __future__ import annotations

import numpy as np

QUADRANTS = ("a", "b", "c", "d")


def _span(start_shift, end_shift):
    """Slice dropping ``start_shift`` leading and ``end_shift`` trailing items (negatives flip)."""
    lo = max(start_shift, 0) + max(-end_shift, 0)
    hi = max(end_shift, 0) + max(-start_shift, 0)
    return slice(lo, -hi if hi else None)


def membrane(labels):
    """Membrane mask: the labels in a pixel's 3 x 3 in-slice neighbourhood differ.

    Equivalent to ``minimum_filter != maximum_filter`` with size (1, 3, 3) and
    scipy's ``reflect`` border mode (a mirrored border repeats the edge pixel, so
    it never adds a new label: only in-image neighbours matter).  Computed with
    four shifted comparisons instead of two sorting filters.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool, True on membrane pixels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label stack must be 3-D (z, y, x), got shape {labels.shape}")
    out = np.zeros(labels.shape, dtype=bool)
    # Each pair of neighbours (p, p + (dy, dx)) that differ marks both pixels.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        here = (slice(None), _span(0, dy), _span(0, dx))
        there = (slice(None), _span(dy, 0), _span(dx, 0))
        differ = labels[here] != labels[there]
        out[here] |= differ
        out[there] |= differ
    return out


def cytoplasm(labels, membrane_mask=None):
    """Cytoplasm mask: ``label > 0`` and not membrane; (z, y, x) bool."""
    if membrane_mask is None:
        membrane_mask = membrane(labels)
    return (np.asarray(labels) > 0) & ~membrane_mask


def overlap(labels, membrane_mask=None):
    """Overlap masks between consecutive slices.

    With ``m_z = label_z`` off-membrane and 0 on membrane, image z is
    ``(m_z == m_{z+1}) & (m_z > 0)``.

    Returns
    -------
    numpy.ndarray
        (z - 1, y, x) bool (empty along z for a single slice).
    """
    labels = np.asarray(labels)
    if membrane_mask is None:
        membrane_mask = membrane(labels)
    off = np.where(membrane_mask, 0, labels)
    return (off[:-1] == off[1:]) & (off[:-1] > 0)


def consecutive(images):
    """RGB pairs of consecutive slices: red = slice z, green = slice z + 1, blue = 0.

    Parameters
    ----------
    images : numpy.ndarray
        (z, y, x) uint8 images.

    Returns
    -------
    numpy.ndarray
        (z - 1, y, x, 3) uint8.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"image stack must be 3-D (z, y, x), got shape {images.shape}")
    out = np.zeros(images.shape[:1] and (max(images.shape[0] - 1, 0),) + images.shape[1:] + (3,),
                   dtype=np.uint8)
    out[..., 0] = to_uint8(images[:-1])
    out[..., 1] = to_uint8(images[1:])
    return out


def to_uint8(images):
    """Images as uint8: bool to 0/255, integers clipped to 0..255, floats rounded and clipped."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool:
        return images.astype(np.uint8) * 255
    if np.issubdtype(images.dtype, np.floating):
        images = np.round(images)
    return np.clip(images, 0, 255).astype(np.uint8)


#: The 4-connected 3 x 3 cross, applied within each slice.
CROSS_2D = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)


def eroskele(foreground, erosions=10):
    """Thin overlap masks: erode ``erosions`` times with the 3 x 3 cross, then skeletonize.

    Erosion treats pixels outside the image as background; both steps work
    slice by slice (2-D).

    Parameters
    ----------
    foreground : numpy.ndarray
        (z, y, x) bool masks.
    erosions : int
        Number of erosions (the thesis used 10); 0 skeletonizes directly.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    foreground = np.asarray(foreground, dtype=bool)
    if erosions < 0:
        raise ValueError(f"number of erosions must be >= 0, got {erosions}")
    if erosions:
        foreground = ndimage.binary_erosion(
            foreground, structure=CROSS_2D, iterations=erosions, border_value=0
        )
    from .progress import progress

    out = np.zeros_like(foreground)
    for z, plane in enumerate(progress(foreground, desc="skeletonize")):
        if plane.any():
            out[z] = skeletonize(plane)
    return out


def split_quadrants(stack, source="stack"):
    """Split each slice into quadrants a, b, c, d (GUIDE §3).

    ``a = [:, H/2:, W/2:]``, ``b = [:, :H/2, W/2:]``, ``c = [:, :H/2, :W/2]``,
    ``d = [:, H/2:, :W/2]``.

    Raises
    ------
    ValueError
        If height or width is odd.
    """
    stack = np.asarray(stack)
    height, width = stack.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(
            f"cannot split {source} into quadrants: height and width must be even, "
            f"got {height} x {width}"
        )
    h, w = height // 2, width // 2
    return {
        "a": stack[:, h:, w:],
        "b": stack[:, :h, w:],
        "c": stack[:, :h, :w],
        "d": stack[:, h:, :w],
    }

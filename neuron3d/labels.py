"""Label images: membrane, cytoplasm, overlap, consecutive pairs, thinning, quadrants.

All functions take and return numpy arrays in (z, y, x) order.  Each function's
docstring states its exact definition.  Functions that check their input take a
``source`` (the file the array came from) to name in error messages.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FOREGROUND", "HALF", "MIN_LABEL_MAX", "check_count", "check_stack", "consecutive",
    "cytoplasm", "eroskele", "label_dtype", "membrane", "overlap", "smallest_uint",
    "split_quadrants",
]

#: Foreground of an 8-bit image (network output, mask PNG): ``value >= FOREGROUND``.  The
#: thesis binarized cytoplasm and overlap images at 127 before reconstructing, and GUIDE §3
#: keeps that level for ``reconstruct`` and ``eroskele``; 0/255 masks give the same result at
#: any level in 1..255, so only graded predictions see it.
FOREGROUND = 127
#: The 8-bit level of probability 0.5 (128 / 255 ~ 0.502): a predicted membrane pixel counts as
#: membrane when ``value >= HALF`` in the quality scores (``neuron3d.report``) and is the level
#: the calibration maps to (``neuron3d.calibrate``).  It is not :data:`FOREGROUND`: each level
#: reproduces what its step measured before the two were named, bit for bit.
HALF = 128
#: Label stacks are written in at least this many bits (the thesis wrote int16; 16 bits
#: unsigned keep small volumes' files as the thesis' readers expect).
MIN_LABEL_MAX = np.iinfo(np.uint16).max


def smallest_uint(max_value):
    """Smallest unsigned integer dtype that holds ``max_value``.

    Raises
    ------
    ValueError
        If ``max_value`` exceeds the uint64 range.
    """
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label {max_value} does not fit in uint64")


def label_dtype(count):
    """The dtype of a label stack with IDs 0..``count``: the smallest unsigned integer type
    of at least 16 bits that holds ``count`` (``smallest_uint(max(count, 65535))``).

    Parameters
    ----------
    count : int
        The largest ID (the number of objects when they are numbered 1..K).

    Returns
    -------
    numpy.dtype
        uint16, uint32 or uint64.
    """
    return smallest_uint(max(int(count), MIN_LABEL_MAX))


def check_stack(stack, source="stack", what="stack", min_slices=1, channels=False):
    """Check that ``stack`` is a (z, y, x) stack with slices of at least 1 x 1 pixel.

    Parameters
    ----------
    stack : array_like
        The stack.
    source : str or Path
        Where it came from (a file or folder name), for messages.
    what : str
        What it is (``"label stack"``, ``"overlap images"``), for messages.
    min_slices : int
        Fewest slices accepted (0 where an empty stack is meaningful, such as the
        N - 1 overlap images of a one-slice volume).
    channels : bool
        Also accept (z, y, x, c) stacks.

    Returns
    -------
    numpy.ndarray
        ``stack`` as an array (no copy).

    Raises
    ------
    ValueError
        If it is not 3-D (or 4-D with ``channels``), has fewer than
        ``min_slices`` slices, or its slices have no pixels; the message names
        ``source`` and the shape.
    """
    stack = np.asarray(stack)
    dims = (3, 4) if channels else (3,)
    if stack.ndim not in dims:
        raise ValueError(f"{what} must be 3-D (z, y, x), got shape {stack.shape} from {source}")
    if stack.shape[0] < min_slices:
        raise ValueError(f"{what} has no slices (shape {stack.shape}) in {source}"
                         if stack.shape[0] == 0 else
                         f"{what} needs at least {min_slices} slices, got shape {stack.shape} "
                         f"from {source}")
    if 0 in stack.shape[1:3]:
        raise ValueError(f"{what} has empty slices (height x width {stack.shape[1]} x "
                         f"{stack.shape[2]}, shape {stack.shape}) in {source}")
    return stack


def check_count(value, name, minimum=0):
    """Return ``value`` as an int; raise ValueError naming ``name`` unless it is a whole
    number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _span(start_shift, end_shift):
    """Slice dropping ``start_shift`` leading and ``end_shift`` trailing items (negatives flip)."""
    lo = max(start_shift, 0) + max(-end_shift, 0)
    hi = max(end_shift, 0) + max(-start_shift, 0)
    return slice(lo, -hi if hi else None)


def membrane(labels, source="labels"):
    """Membrane mask: the labels in a pixel's 3 x 3 in-slice neighbourhood differ.

    Equivalent to ``minimum_filter != maximum_filter`` with size (1, 3, 3) and
    scipy's ``reflect`` border mode (a mirrored border repeats the edge pixel, so
    it never adds a new label: only in-image neighbours matter).  Computed with
    four shifted comparisons instead of two sorting filters.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels, at least one slice of at least 1 x 1.
    source : str or Path
        Where ``labels`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool, True on membrane pixels.

    Raises
    ------
    ValueError
        If ``labels`` is not 3-D or is empty (see :func:`check_stack`).
    """
    labels = check_stack(labels, source, "label stack")
    out = np.zeros(labels.shape, dtype=bool)
    # Each pair of neighbours (p, p + (dy, dx)) that differ marks both pixels.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        here = (slice(None), _span(0, dy), _span(0, dx))
        there = (slice(None), _span(dy, 0), _span(dx, 0))
        differ = labels[here] != labels[there]
        out[here] |= differ
        out[there] |= differ
    return out


def cytoplasm(labels, membrane_mask=None, source="labels"):
    """Cytoplasm mask: ``label > 0`` and not membrane (see :func:`membrane`).

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels.
    membrane_mask : numpy.ndarray, optional
        ``membrane(labels)`` if already computed.
    source : str or Path
        Where ``labels`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool.
    """
    labels = check_stack(labels, source, "label stack")
    if membrane_mask is None:
        membrane_mask = membrane(labels, source)
    return (labels > 0) & ~membrane_mask


def overlap(labels, membrane_mask=None, source="labels"):
    """Overlap masks between consecutive slices.

    With ``m_z = label_z`` off-membrane and 0 on membrane, image z is
    ``(m_z == m_{z+1}) & (m_z > 0)``: the same neuron, off-membrane, in both
    slices z and z + 1.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels.
    membrane_mask : numpy.ndarray, optional
        ``membrane(labels)`` if already computed.
    source : str or Path
        Where ``labels`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z - 1, y, x) bool (empty along z for a single slice).
    """
    labels = check_stack(labels, source, "label stack")
    if membrane_mask is None:
        membrane_mask = membrane(labels, source)
    off = np.where(membrane_mask, 0, labels)
    return (off[:-1] == off[1:]) & (off[:-1] > 0)


def consecutive(images, source="images"):
    """RGB pairs of consecutive slices: red = slice z, green = slice z + 1, blue = 0.

    Parameters
    ----------
    images : numpy.ndarray
        (z, y, x) images, converted with :func:`to_uint8`.
    source : str or Path
        Where ``images`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z - 1, y, x, 3) uint8 (empty along z for a single slice).
    """
    images = check_stack(images, source, "image stack")
    out = np.zeros((images.shape[0] - 1,) + images.shape[1:] + (3,), dtype=np.uint8)
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


def eroskele(foreground, erosions=10, source="foreground"):
    """Thin overlap masks: erode ``erosions`` times with the 3 x 3 cross, then skeletonize.

    Erosion uses the 4-connected 3 x 3 cross and treats pixels outside the
    image as background; skeletonization is scikit-image's 2-D ``skeletonize``.
    Both work slice by slice.

    Parameters
    ----------
    foreground : numpy.ndarray
        (z, y, x) bool masks.
    erosions : int
        Number of erosions (the thesis used 10); 0 skeletonizes directly.
    source : str or Path
        Where ``foreground`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool.

    Raises
    ------
    ValueError
        If ``erosions`` is not a whole number >= 0 or the stack is empty.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    erosions = check_count(erosions, "erosions")
    foreground = check_stack(foreground, source, "image stack").astype(bool, copy=False)
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
    """Split each slice into quadrants a, b, c, d.

    With ``h = H // 2`` and ``w = W // 2`` for slices of H x W pixels::

        c = stack[:, :h, :w]      b = stack[:, :h, w:2w]
        d = stack[:, h:2h, :w]    a = stack[:, h:2h, w:2w]

    (c top left, b top right, d bottom left, a bottom right).  For even sizes
    this is the thesis' ``[:, H/2:, W/2:]`` etc.; for an odd height or width the
    four quadrants stay equal, ``h x w`` each, and the last row or column is
    dropped.

    Parameters
    ----------
    stack : numpy.ndarray
        (z, y, x) or (z, y, x, c).
    source : str or Path
        Where ``stack`` came from, for error messages.

    Returns
    -------
    dict
        ``{"a": ..., "b": ..., "c": ..., "d": ...}``, views of ``stack``.

    Raises
    ------
    ValueError
        If the stack is empty, or its height or width is 1 (the quadrants
        would be empty); the message names ``source`` and the shape.
    """
    stack = check_stack(stack, source, "stack", channels=True)
    height, width = stack.shape[1:3]
    if height < 2 or width < 2:
        raise ValueError(
            f"cannot split {source} into quadrants: height and width must be at least 2, "
            f"got {height} x {width} (shape {stack.shape})"
        )
    h, w = height // 2, width // 2
    return {
        "a": stack[:, h:2 * h, w:2 * w],
        "b": stack[:, :h, w:2 * w],
        "c": stack[:, :h, :w],
        "d": stack[:, h:2 * h, :w],
    }

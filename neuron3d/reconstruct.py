"""3D reconstruction: interleave cytoplasm and overlap planes, label connected components."""

from __future__ import annotations

import numpy as np

from .labels import check_stack, cytoplasm, label_dtype, membrane, overlap

__all__ = [
    "CONNECTIVITIES", "THRESHOLDS", "check_connectivity", "check_planes", "check_threshold",
    "evaluation_volume", "interleave", "reconstruct",
]

CONNECTIVITIES = (6, 18, 26)
#: Thresholds accepted by :func:`check_threshold` (8-bit images: 0 or less would make
#: every pixel foreground, more than 255 none).
THRESHOLDS = (1, 255)


def check_threshold(threshold, name="threshold"):
    """Return the binarization threshold (foreground is ``value >= threshold``) as an int.

    Images are 8-bit, so only 1..255 splits them into two classes: 0 or less makes
    every pixel foreground, more than 255 none.

    Raises
    ------
    ValueError
        If ``threshold`` is not a whole number in 1..255; the message names ``name``.
    """
    low, high = THRESHOLDS
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) \
            or not low <= threshold <= high:
        raise ValueError(f"{name} must be a whole number in {low}..{high} (foreground is "
                         f"value >= {name}), got {threshold!r}")
    return int(threshold)


def check_connectivity(connectivity, name="connectivity"):
    """Return ``connectivity`` if it is 6, 18 or 26; raise ValueError naming ``name``."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"{name} must be one of 6, 18, 26, got {connectivity!r}")
    return int(connectivity)


def check_planes(cytoplasm_masks, overlap_masks, cytoplasm_source="cytoplasm",
                 overlap_source="overlap"):
    """Check that N >= 1 cytoplasm and N - 1 overlap masks of one slice size fit together.

    Parameters
    ----------
    cytoplasm_masks : numpy.ndarray
        (N, y, x), N >= 1, slices of at least 1 x 1.
    overlap_masks : numpy.ndarray
        (N - 1, y, x).
    cytoplasm_source, overlap_source : str or Path
        Where the masks came from (files or folders), for error messages.

    Returns
    -------
    tuple of numpy.ndarray
        Both as bool arrays.

    Raises
    ------
    ValueError
        If a stack is not 3-D, there is no cytoplasm slice, or the counts or the
        slice sizes do not fit; the message names the sources and the numbers.
    """
    cyto = check_stack(cytoplasm_masks, cytoplasm_source, "cytoplasm stack").astype(
        bool, copy=False)
    over = check_stack(overlap_masks, overlap_source, "overlap stack", min_slices=0).astype(
        bool, copy=False)
    if len(over) != len(cyto) - 1:
        raise ValueError(
            f"{len(cyto)} cytoplasm slices ({cytoplasm_source}) need {len(cyto) - 1} overlap "
            f"slices, got {len(over)} ({overlap_source})"
        )
    if cyto.shape[1:] != over.shape[1:]:
        raise ValueError(
            f"cytoplasm slices ({cytoplasm_source}) are {cyto.shape[1:]} but overlap slices "
            f"({overlap_source}) are {over.shape[1:]}"
        )
    return cyto, over


def interleave(cytoplasm_masks, overlap_masks, cytoplasm_source="cytoplasm",
               overlap_source="overlap"):
    """Interleave N cytoplasm planes with N - 1 overlap planes.

    Parameters
    ----------
    cytoplasm_masks : numpy.ndarray
        (N, y, x) bool, N >= 1.
    overlap_masks : numpy.ndarray
        (N - 1, y, x) bool.
    cytoplasm_source, overlap_source : str or Path
        Where the masks came from (files or folders), for error messages.

    Returns
    -------
    numpy.ndarray
        (2N - 1, y, x) bool: C0, O0, C1, O1, ..., C(N-1).

    Raises
    ------
    ValueError
        As :func:`check_planes`.
    """
    cyto, over = check_planes(cytoplasm_masks, overlap_masks, cytoplasm_source, overlap_source)
    planes = np.empty((2 * len(cyto) - 1,) + cyto.shape[1:], dtype=bool)
    planes[0::2] = cyto
    planes[1::2] = over
    return planes


def reconstruct(cytoplasm_masks, overlap_masks, connectivity=6, cytoplasm_source="cytoplasm",
                overlap_source="overlap"):
    """Label neurons from cytoplasm and overlap masks.

    The N cytoplasm and N - 1 overlap planes are interleaved (C0, O0, C1, ...,
    C(N-1), see :func:`interleave`), their foreground is labelled with 3D
    connected components (``cc3d``; 6-connectivity = face neighbours), the
    overlap planes are dropped, and the IDs renumbered 1..K in order of first
    appearance (an object living only in overlap planes vanishes).  Background
    is 0.

    Parameters
    ----------
    cytoplasm_masks : numpy.ndarray
        (N, y, x) bool.
    overlap_masks : numpy.ndarray
        (N - 1, y, x) bool.
    connectivity : {6, 18, 26}
        3D neighbourhood; 6 (face neighbours) is the thesis' choice.
    cytoplasm_source, overlap_source : str or Path
        Where the masks came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (N, y, x) labels, background 0, the smallest unsigned dtype of at least
        16 bits that holds K.

    Raises
    ------
    ValueError
        As :func:`interleave`, or for a connectivity other than 6, 18, 26.
    """
    import cc3d
    import fastremap

    connectivity = check_connectivity(connectivity)
    planes = interleave(cytoplasm_masks, overlap_masks, cytoplasm_source, overlap_source)
    components = cc3d.connected_components(planes, connectivity=connectivity)
    kept = np.ascontiguousarray(components[0::2])
    kept, mapping = fastremap.renumber(kept, preserve_zero=True, in_place=True)
    count = len(mapping) - (0 in mapping)
    return kept.astype(label_dtype(count), copy=False)


def evaluation_volume(labels, connectivity=6, source="labels"):
    """The best reconstruction the representation allows for ground-truth ``labels``.

    Reconstructs the volume's own cytoplasm and overlap masks (no thinning),
    replacing the thesis' downloaded ``evaluate_<q>.tif``; membranes become 0.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) ground-truth IDs.
    connectivity : {6, 18, 26}
        As in :func:`reconstruct`.
    source : str or Path
        Where ``labels`` came from, for error messages.

    Returns
    -------
    numpy.ndarray
        (z, y, x) labels as :func:`reconstruct` returns them.
    """
    mask = membrane(labels, source)
    return reconstruct(cytoplasm(labels, mask, source), overlap(labels, mask, source),
                       connectivity, source, source)

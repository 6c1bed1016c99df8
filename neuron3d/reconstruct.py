"""3D reconstruction: interleave cytoplasm and overlap planes, label connected components."""

from __future__ import annotations

import numpy as np

from .io import smallest_uint
from .labels import cytoplasm, membrane, overlap

CONNECTIVITIES = (6, 18, 26)


def interleave(cytoplasm_masks, overlap_masks):
    """Interleave N cytoplasm planes with N - 1 overlap planes.

    Parameters
    ----------
    cytoplasm_masks : numpy.ndarray
        (N, y, x) bool.
    overlap_masks : numpy.ndarray
        (N - 1, y, x) bool.

    Returns
    -------
    numpy.ndarray
        (2N - 1, y, x) bool: C0, O0, C1, O1, ..., C(N-1).

    Raises
    ------
    ValueError
        If the counts or the slice sizes do not fit.
    """
    cyto = np.asarray(cytoplasm_masks, dtype=bool)
    over = np.asarray(overlap_masks, dtype=bool)
    if cyto.ndim != 3 or over.ndim != 3:
        raise ValueError(
            f"cytoplasm and overlap must be 3-D stacks, got shapes {cyto.shape} and {over.shape}"
        )
    if len(cyto) == 0:
        raise ValueError("no cytoplasm slices given")
    if len(over) != len(cyto) - 1:
        raise ValueError(
            f"{len(cyto)} cytoplasm slices need {len(cyto) - 1} overlap slices, got {len(over)}"
        )
    if cyto.shape[1:] != over.shape[1:]:
        raise ValueError(
            f"cytoplasm slices are {cyto.shape[1:]} but overlap slices are {over.shape[1:]}"
        )
    planes = np.empty((2 * len(cyto) - 1,) + cyto.shape[1:], dtype=bool)
    planes[0::2] = cyto
    planes[1::2] = over
    return planes


def reconstruct(cytoplasm_masks, overlap_masks, connectivity=6):
    """Label neurons from cytoplasm and overlap masks (GUIDE §3 *reconstruct*).

    The 2N - 1 interleaved planes are labelled with 3D connected components
    (``cc3d``), the overlap planes dropped, and the IDs renumbered 1..K in
    order of first appearance (an object living only in overlap planes vanishes).

    Parameters
    ----------
    cytoplasm_masks : numpy.ndarray
        (N, y, x) bool.
    overlap_masks : numpy.ndarray
        (N - 1, y, x) bool.
    connectivity : {6, 18, 26}
        3D neighbourhood; 6 (face neighbours) is the thesis' choice.

    Returns
    -------
    numpy.ndarray
        (N, y, x) labels, background 0, the smallest unsigned dtype of at least
        16 bits that holds K.
    """
    import cc3d
    import fastremap

    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of 6, 18, 26, got {connectivity}")
    planes = interleave(cytoplasm_masks, overlap_masks)
    components = cc3d.connected_components(planes, connectivity=connectivity)
    kept = np.ascontiguousarray(components[0::2])
    kept, mapping = fastremap.renumber(kept, preserve_zero=True, in_place=True)
    count = len(mapping) - (0 in mapping)
    return kept.astype(smallest_uint(max(count, np.iinfo(np.uint16).max)), copy=False)


def evaluation_volume(labels, connectivity=6):
    """The best reconstruction the representation allows for ground-truth ``labels``.

    Reconstructs the volume's own cytoplasm and overlap masks (no thinning),
    replacing the thesis' downloaded ``evaluate_<q>.tif``; membranes become 0.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) ground-truth IDs.

    Returns
    -------
    numpy.ndarray
        (z, y, x) labels as :func:`reconstruct` returns them.
    """
    mask = membrane(labels)
    return reconstruct(cytoplasm(labels, mask), overlap(labels, mask), connectivity)

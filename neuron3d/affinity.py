"""Nearest-neighbour affinities: from labels (training targets), and agglomerated (reconstruction).

The field's representation for isotropic EM (Lee et al. 2017, Funke et al. 2018): for each voxel
and each axis, the probability that it belongs to the same neuron as its predecessor along that
axis.  A 3D network (``python -m imagetranslation.affinity``) predicts them from EM; this module
makes its targets from ground truth, cuts the predicted affinities into fragments and merges them
with waterz -- the z-affinities come from the EM itself instead of from two slices' membranes and
an overlap image, so a neurite running within the slice plane is not split.

Layout (waterz's): ``affs[d, z, y, x]`` is the affinity between voxel (z, y, x) and its
predecessor along axis d, i.e. (z - 1, y, x) for d = 0, (z, y - 1, x) for d = 1 and
(z, y, x - 1) for d = 2.  Index 0 of each axis has no predecessor; its value is 0 and never read.
"""

from __future__ import annotations

import numpy as np

from .agglomerate import (
    SCORINGS,
    _check_fragment_options,
    _probabilities,
    _quiet_stdout,
    _slice_fragments,
    _waterz,
    _workers,
    check_thresholds,
    fragments,
)

__all__ = ["FRAGMENTS", "affinity_fragments", "affinity_quality", "agglomerate_affinities",
           "boundary_f1", "boundary_map", "check_affinities", "edge_mask", "label_affinities",
           "read_affinities", "zwatershed_fragments"]

#: How fragments are cut from affinities, the default first: "3d", a watershed of the 3-D
#: boundary map seeded at the maxima of its distance transform (the best on fibsem-medulla's d
#: with NN-6's predictions, documentation/affinities.md); "zwatershed", waterz's own watershed
#: of the affinity graph (Zlateski & Seung 2015: regions grow along edges from the highest
#: affinity down; exact on perfect affinities; :func:`zwatershed_fragments`); "2d", the
#: boundary map's watersheds per slice (as the membrane path).
FRAGMENTS = ("3d", "zwatershed", "2d")


def label_affinities(labels):
    """The affinities of a label volume: 1 where a voxel and its predecessor share a label.

    Label 0 is background (a boundary): an edge touching it has affinity 0.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels.

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) float32 in {0, 1}, waterz's layout (see the module's docstring); 0 at index 0
        of each axis.

    Raises
    ------
    ValueError
        If ``labels`` is not a 3-D integer array.

    Examples
    --------
    >>> label_affinities(np.array([[[1, 1, 2]]]))[2]
    array([[[0., 1., 0.]]], dtype=float32)
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3-D (z, y, x) stack, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    affs = np.zeros((3,) + labels.shape, dtype=np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[axis], before[axis] = slice(1, None), slice(None, -1)
        same = labels[tuple(here)] == labels[tuple(before)]
        same &= labels[tuple(here)] != 0
        affs[(axis, *here)] = same
    return affs


def edge_mask(shape):
    """Which entries of a (3, z, y, x) affinity array are edges: all but index 0 of each axis.

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) bool.
    """
    mask = np.ones((3,) + tuple(shape), dtype=bool)
    mask[0, 0] = mask[1, :, 0] = mask[2, :, :, 0] = False
    return mask


def boundary_f1(predicted, target, mask=None):
    """F1 of the cut edges: an edge is cut where the affinity is below 0.5.

    Parameters
    ----------
    predicted, target : numpy.ndarray
        (3, z, y, x) affinities (float in [0, 1]).
    mask : numpy.ndarray, optional
        (3, z, y, x) bool, the edges that count (default: all with a predecessor).

    Returns
    -------
    float
        2 TP / (2 TP + FP + FN); 1.0 when neither has a cut edge.
    """
    return _cut_scores(predicted, target, mask)["f1"]


def _cut_scores(predicted, target, mask=None):
    """:func:`neuron3d.metrics.pixel_scores` of the cut edges (affinity below 0.5)."""
    from .metrics import pixel_scores

    if mask is None:
        mask = edge_mask(target.shape[1:])
    return pixel_scores((predicted < 0.5) & mask, (target < 0.5) & mask)


def affinity_quality(predicted, labels):
    """How well predicted affinities cut a labelled volume's edges: the precision, recall and
    :func:`boundary_f1` of the cut edges (affinity below 0.5), and the F1 per axis.

    Parameters
    ----------
    predicted : numpy.ndarray
        (3, z, y, x) affinities in [0, 1].
    labels : numpy.ndarray
        (z, y, x) ground-truth labels of the same volume.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``f1_z``, ``f1_y``, ``f1_x``.
    """
    target = label_affinities(labels)
    if np.shape(predicted) != target.shape:
        raise ValueError(f"affinities of shape {np.shape(predicted)} do not fit labels of shape "
                         f"{np.shape(labels)}")
    mask = edge_mask(target.shape[1:])
    quality = dict(_cut_scores(predicted, target, mask))
    for axis, name in enumerate("zyx"):
        quality[f"f1_{name}"] = boundary_f1(predicted[axis:axis + 1], target[axis:axis + 1],
                                            mask[axis:axis + 1])
    return quality


def check_affinities(affs, source="affinities"):
    """``affs`` as C-contiguous float32 in [0, 1], shape (3, z, y, x).

    Accepts float in [0, 1] or uint8 0..255 (scaled by 1/255).

    Raises
    ------
    ValueError
        Naming ``source``, if the array is not (3, z, y, x) or not a probability.
    """
    array = np.asarray(affs)
    if array.ndim != 4 or array.shape[0] != 3:
        raise ValueError(f"{source} must be a (3, z, y, x) affinity stack (z, y and x "
                         f"affinities), got shape {array.shape}")
    return np.ascontiguousarray(_probabilities(array, source, ndim=4))


def read_affinities(path, what="affinities"):
    """Read an affinity stack file: (z, y, x, 3) (channels z, y, x; uint8 0..255 or float in
    [0, 1]), as written by ``python -m imagetranslation.affinity --mode test``.

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) float32 in [0, 1], waterz's layout.

    Raises
    ------
    ValueError
        Naming the file, if it is not a (z, y, x, 3) stack of probabilities.
    """
    from .io import read_stack

    stack = read_stack(path, what=what)
    if stack.ndim != 4 or stack.shape[-1] != 3:
        raise ValueError(f"{what} {path} must be a (z, y, x, 3) affinity stack (z, y and x "
                         f"affinities), got shape {stack.shape}")
    return check_affinities(np.moveaxis(stack, -1, 0), f"{what} {path}")


def boundary_map(affs, planes="2d"):
    """The boundary probability of each voxel: 1 - its lowest affinity to a neighbour.

    ``planes="2d"`` reads the four in-plane neighbours (y and x affinities, the voxel's own and
    its successors'); ``"3d"`` the six.  Edges off the volume do not count; a voxel without
    any neighbour gets 0.

    Parameters
    ----------
    affs : numpy.ndarray
        (3, z, y, x) float32 affinities in [0, 1] (see :func:`check_affinities`).
    planes : {"2d", "3d"}

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 in [0, 1].
    """
    if planes not in ("2d", "3d"):
        raise ValueError(f"planes must be 2d or 3d, got {planes!r}")
    lowest = np.ones(affs.shape[1:], dtype=np.float32)
    for axis in range(3) if planes == "3d" else (1, 2):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[axis], before[axis] = slice(1, None), slice(None, -1)
        edge = affs[(axis, *here)]
        np.minimum(lowest[tuple(here)], edge, out=lowest[tuple(here)])  # to its predecessor
        np.minimum(lowest[tuple(before)], edge, out=lowest[tuple(before)])  # to its successor
    return np.subtract(1, lowest, out=lowest)


def affinity_fragments(affs, planes="2d", seed_threshold=0.2, sigma=0.0, min_distance=5,
                       workers=None):
    """Watershed fragments of an affinity volume.

    ``planes="2d"``: :func:`neuron3d.agglomerate.fragments` of the in-plane boundary map (one
    watershed per slice, as the membrane path); ``"3d"``: one watershed of the 3-D boundary map,
    seeded at the maxima of the 3-D distance transform of ``boundary < seed_threshold``.

    Parameters
    ----------
    affs : numpy.ndarray
        (3, z, y, x) affinities (float in [0, 1] or uint8 0..255).
    planes : {"2d", "3d"}
        See :data:`FRAGMENTS`.
    seed_threshold, sigma, min_distance, workers :
        As in :func:`neuron3d.agglomerate.fragments`.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint64 fragment IDs 1..F, no 0.
    """
    affs = check_affinities(affs)
    boundary = boundary_map(affs, planes)
    if planes == "2d":
        return fragments(boundary, seed_threshold, sigma, min_distance, workers)
    _check_fragment_options(seed_threshold, sigma, min_distance)
    labels, _ = _slice_fragments(boundary, seed_threshold, sigma, int(min_distance))
    return labels.astype(np.uint64)


def zwatershed_fragments(affs):
    """Fragments of waterz's watershed of the affinity graph, every voxel in one.

    waterz's watershed (Zlateski & Seung 2015, thresholds 0.0001 and 0.9999) leaves voxels
    without any affinity above 0.0001 to a neighbour unassigned (0; on predicted affinities,
    the voxels deep in a membrane); they are given to the nearest fragment by a watershed of
    the 3-D boundary map (:func:`boundary_map`) seeded with the fragments
    (``skimage.segmentation.watershed``).  A volume without any fragment is one.

    Parameters
    ----------
    affs : numpy.ndarray
        (3, z, y, x) float32 affinities in [0, 1], C-contiguous.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint64 fragment IDs 1..F, no 0.
    """
    import fastremap
    import waterz
    from skimage.segmentation import watershed

    with _quiet_stdout():
        frags = next(iter(waterz.agglomerate(affs, [0.0]))).copy()  # no merge below 0
    if not frags.any():
        return np.ones(frags.shape, dtype=np.uint64)
    if not frags.all():
        frags = watershed(boundary_map(affs, "3d"), markers=frags.astype(np.int64))
    frags, _ = fastremap.renumber(frags, in_place=True)
    return np.ascontiguousarray(frags, dtype=np.uint64)


def agglomerate_affinities(affs, thresholds=(0.5,), scoring="median", mode="3d",
                           seed_threshold=0.2, sigma=0.0, min_distance=5, workers=None,
                           source="affinities"):
    """Reconstruct neurons from predicted affinities (``reconstruct3D.py --method agglomerate
    --input_affinities``): :func:`affinity_fragments`, then waterz merges neighbouring regions
    while ``1 - statistic`` of the affinities on their boundary is below each threshold.

    Unlike the membrane path (:func:`neuron3d.agglomerate.agglomerate`) the affinities are
    used as they are: every contact between two fragments, within a slice or across slices,
    is a predicted affinity.

    Parameters
    ----------
    affs : numpy.ndarray
        (3, z, y, x) affinities, float in [0, 1] or uint8 0..255.
    thresholds : float or sequence of float
        Merge thresholds in [0, 1]; higher merges more.
    scoring : {"median", "mean", "median_max"}
        See :data:`neuron3d.agglomerate.SCORINGS`.
    mode : {"3d", "zwatershed", "2d"}
        How fragments are cut (see :data:`FRAGMENTS`).
    seed_threshold, sigma, min_distance, workers :
        See :func:`affinity_fragments` (unused by "zwatershed").
    source : str
        Where the affinities came from, for messages.

    Returns
    -------
    list of numpy.ndarray
        One (z, y, x) label volume per threshold, in the order given (every voxel labelled,
        IDs 1..K in order of first appearance, the smallest unsigned dtype of >= 16 bits).

    Raises
    ------
    ValueError
        For affinities that are not (3, z, y, x) probabilities, a threshold outside [0, 1], an
        unknown scoring or fragment mode.
    """
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    if mode not in FRAGMENTS:
        raise ValueError(f"fragments must be one of {', '.join(FRAGMENTS)}, got {mode!r}")
    values = check_thresholds(thresholds)
    affs = check_affinities(affs, source)
    if mode == "zwatershed":
        frags = zwatershed_fragments(affs)
    else:
        frags = affinity_fragments(affs, mode, seed_threshold, sigma, min_distance,
                                   _workers(workers))
    return _waterz(affs, np.ascontiguousarray(frags, dtype=np.uint64), values, scoring)

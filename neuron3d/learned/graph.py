"""The region graph of a label stack and the features of its edges.

Two regions of a (z, y, x) label stack are neighbours (an *edge*) where they touch across a
*face*: two pixels side by side in one slice (an in-plane face, along y or x) or one pixel
above the other in consecutive slices (a between-slice face).  Every face carries a boundary
value, high where the two voxels belong to different neurons:

* in-plane: ``max(membrane[p], membrane[q])`` (waterz's ``1 - affinity`` of the agglomeration,
  :func:`neuron3d.agglomerate.affinities`);
* between slices z and z + 1: ``1 - overlap[z]`` at that (y, x).  A face *speaks* when the
  membrane is below ``z_threshold`` in both slices (the overlap image is 0 on membranes by
  definition, so elsewhere its 0 says nothing; see :func:`neuron3d.agglomerate.agglomerate`).

Everything is vectorised over faces with numpy: the faces are gathered slice by slice, their
edges found with one ``numpy.unique`` and their statistics from one sort by (edge, value).
A group of faces an edge does not have (an edge with no between-slice face has no ``z_``
statistics) is :data:`MISSING` (NaN; the classifier learns where a missing value goes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EM_FEATURES", "FEATURES", "MISSING", "QUANTILES", "EdgeTable", "edge_labels",
    "edge_table", "feature_names", "majority", "quantiles_by_group",
]

#: Quantiles of the boundary values of each edge (numpy's default, linear interpolation).
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: The value of a feature whose faces an edge does not have.
MISSING = float("nan")

_STATS = ("faces", "mean") + tuple(f"q{round(100 * q):02d}" for q in QUANTILES)
#: The features computed without EM, in column order.
FEATURES = (
    tuple(f"in_{s}" for s in _STATS)           # in-plane faces: max(membrane p, membrane q)
    + tuple(f"z_{s}" for s in _STATS)          # between-slice faces: 1 - overlap
    + ("z_speaking_share", "z_speaking_mean",  # faces off the membrane in both slices
       "z_share",                              # between-slice faces / all faces
       "size_min", "size_max",                 # the two regions' voxel counts
       "slices_min", "slices_max",             # the slices each region spans
       "membrane_min", "membrane_max",         # the regions' mean membrane value
       "contact")                              # faces / smaller region's voxels
)
#: The features added when EM is given.
EM_FEATURES = ("em_mean_min", "em_mean_max", "em_mean_difference", "em_std_min", "em_std_max",
               "em_boundary_mean")


def feature_names(em=False):
    """The feature columns: :data:`FEATURES`, then :data:`EM_FEATURES` when ``em``."""
    return FEATURES + (EM_FEATURES if em else ())


@dataclass
class EdgeTable:
    """The region graph of a label stack and its edge features.

    Attributes
    ----------
    edges : numpy.ndarray
        (E, 2) int64 region IDs of each edge, lower first, edges in increasing order.
    features : numpy.ndarray
        (E, F) float64, columns :attr:`names`.
    names : tuple of str
        The feature names (:func:`feature_names`).
    regions : int
        The largest region ID (regions are 1..``regions``; 0 is no region).
    """

    edges: np.ndarray
    features: np.ndarray
    names: tuple
    regions: int

    def column(self, name):
        """The feature ``name`` of every edge."""
        return self.features[:, self.names.index(name)]


def _lerp(a, b, t):
    """numpy's quantile interpolation (``numpy.quantile``'s ``_lerp``), bit for bit."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def quantiles_by_group(groups, values, count, quantiles=QUANTILES):
    """Per-group size, mean and quantiles of ``values``, as ``numpy.quantile`` gives them.

    Parameters
    ----------
    groups : numpy.ndarray
        (n,) int group index of each value, in 0..``count`` - 1.
    values : numpy.ndarray
        (n,) values.
    count : int
        Number of groups.
    quantiles : sequence of float
        In [0, 1].

    Returns
    -------
    numpy.ndarray
        (count, 2 + len(quantiles)) float64: size, mean, then each quantile (linear
        interpolation, equal to ``numpy.quantile`` of the group's values in float64);
        :data:`MISSING` for the statistics of an empty group (size 0).
    """
    groups = np.asarray(groups, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    out = np.full((count, 2 + len(quantiles)), MISSING)
    sizes = np.bincount(groups, minlength=count)
    out[:, 0] = sizes
    present = sizes > 0
    if not present.any():
        return out
    order = np.lexsort((values, groups))
    ordered = values[order]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[present]
    n = sizes[present]
    out[present, 1] = np.bincount(groups, weights=values, minlength=count)[present] / n
    for k, q in enumerate(quantiles):
        position = q * (n - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, n - 1)
        out[present, 2 + k] = _lerp(ordered[starts + low], ordered[starts + high],
                                    position - low)
    return out


def _checked(segments, membrane, overlap, em):
    """The inputs as arrays of the right shapes: int64 labels, float32 probabilities."""
    from ..agglomerate import check_inputs

    segments = np.asarray(segments)
    if segments.ndim != 3 or not (np.issubdtype(segments.dtype, np.integer)
                                  or segments.dtype == bool):
        raise ValueError(f"segments must be a 3-D integer (z, y, x) stack, got shape "
                         f"{segments.shape} and dtype {segments.dtype}")
    membrane, overlap = check_inputs(membrane, overlap)
    if segments.shape != membrane.shape:
        raise ValueError(f"segments have shape {segments.shape}, the membrane stack "
                         f"{membrane.shape}")
    if em is not None:
        em = np.asarray(em)
        if em.shape != membrane.shape:
            raise ValueError(f"EM has shape {em.shape}, the membrane stack {membrane.shape}")
        em = em.astype(np.float64)
    return segments.astype(np.int64), membrane, overlap, em


#: The two pixels of an in-plane face: (y, x) and its predecessor along y, then along x.
_IN_PLANE = (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
             ((slice(None), slice(1, None)), (slice(None), slice(None, -1))))


def _faces(segments, membrane, overlap, em, z_threshold):
    """Every face between two different regions > 0, gathered slice by slice.

    Returns (a, b, value, between, speaking, em_value) of equal length: lower and higher
    region ID, boundary value, whether between slices, whether it speaks (between-slice
    faces only) and the mean EM of its two voxels (in-plane faces; 0 when no EM).
    """
    parts = []
    depth = len(segments)

    def add(p, q, value, between, speaking, em_value):
        keep = (p != q) & (p > 0) & (q > 0)
        if not keep.any():
            return
        p, q = p[keep], q[keep]
        parts.append((np.minimum(p, q), np.maximum(p, q), value[keep],
                      np.full(len(p), between), speaking[keep], em_value[keep]))

    for z in range(depth):
        s, m = segments[z], membrane[z]
        e = em[z] if em is not None else None
        for here, there in _IN_PLANE:
            value = np.maximum(m[here], m[there]).ravel()
            em_value = np.zeros(value.shape) if e is None else ((e[here] + e[there]) / 2).ravel()
            add(s[here].ravel(), s[there].ravel(), value, False, np.zeros(value.shape, bool),
                em_value)
        if z + 1 < depth:
            value = (1 - overlap[z]).ravel()
            speaking = ((membrane[z] < z_threshold) & (membrane[z + 1] < z_threshold)).ravel()
            add(s.ravel(), segments[z + 1].ravel(), value, True, speaking,
                np.zeros(value.shape))
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0)
    return tuple(np.concatenate(column) for column in zip(*parts))


def _region_statistics(segments, membrane, em, regions):
    """Per region 0..regions: voxels, slices spanned, mean membrane, EM mean and std."""
    flat = segments.ravel()
    sizes = np.bincount(flat, minlength=regions + 1).astype(np.float64)
    safe = np.maximum(sizes, 1)
    present = np.concatenate([np.unique(s) for s in segments])
    slices = np.bincount(present, minlength=regions + 1).astype(np.float64)
    mem = np.bincount(flat, weights=membrane.ravel().astype(np.float64),
                      minlength=regions + 1) / safe
    stats = {"size": sizes, "slices": slices, "membrane": mem}
    if em is not None:
        mean = np.bincount(flat, weights=em.ravel(), minlength=regions + 1) / safe
        square = np.bincount(flat, weights=em.ravel() ** 2, minlength=regions + 1) / safe
        stats["em_mean"] = mean
        stats["em_std"] = np.sqrt(np.maximum(square - mean ** 2, 0))
    return stats


def edge_table(segments, membrane, overlap, em=None, z_threshold=0.3):
    """The region graph of ``segments`` and its edge features (:data:`FEATURES`).

    Parameters
    ----------
    segments : numpy.ndarray
        (z, y, x) integer region IDs (fragments, or an over-segmentation such as waterz's at a
        low threshold); 0 is no region (its faces are skipped).  A region may span slices.
    membrane : numpy.ndarray
        (z, y, x) membrane probability, float in [0, 1] or uint8 0..255 (scaled by 1/255).
    overlap : numpy.ndarray
        (z - 1, y, x) overlap probability between slices z and z + 1 (or z slices, the last
        ignored), same dtypes.
    em : numpy.ndarray, optional
        (z, y, x) EM intensities (any numeric dtype, used as they are); adds
        :data:`EM_FEATURES`.
    z_threshold : float
        Membrane probability below which (in both slices) a between-slice face speaks.

    Returns
    -------
    EdgeTable
        One row per pair of touching regions.  For each edge: the count, mean and
        :data:`QUANTILES` of its in-plane face values (``in_``) and of its between-slice face
        values (``z_``), the share of its between-slice faces that speak and their mean value,
        the share of its faces between slices, the two regions' voxel counts, slice spans and
        mean membrane (min, max), the faces per voxel of the smaller region; with EM the
        regions' EM means (min, max, absolute difference), standard deviations (min, max) and
        the mean EM over the in-plane faces.  Missing statistics are :data:`MISSING`.

    Raises
    ------
    ValueError
        If the shapes disagree, ``segments`` is not a 3-D integer stack or the probabilities
        are not probabilities.
    """
    segments, membrane, overlap, em = _checked(segments, membrane, overlap, em)
    if segments.size and segments.min() < 0:
        raise ValueError(f"segments must not be negative, got {segments.min()}")
    regions = int(segments.max()) if segments.size else 0
    a, b, value, between, speaking, em_value = _faces(segments, membrane, overlap, em,
                                                      z_threshold)
    codes, index = np.unique(a * (regions + 1) + b, return_inverse=True)
    count = len(codes)
    edges = np.stack([codes // (regions + 1), codes % (regions + 1)], axis=1).astype(np.int64)
    names = feature_names(em is not None)
    features = np.empty((count, len(names)))
    column = {name: k for k, name in enumerate(names)}

    def put(prefix, block):
        for k, stat in enumerate(_STATS):
            features[:, column[f"{prefix}_{stat}"]] = block[:, k]

    index = index.ravel()
    put("in", quantiles_by_group(index[~between], value[~between], count))
    put("z", quantiles_by_group(index[between], value[between], count))
    z_faces = features[:, column["z_faces"]]
    spoken = index[between & speaking]
    speaking_count = np.bincount(spoken, minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        features[:, column["z_speaking_share"]] = np.where(
            z_faces > 0, speaking_count / np.maximum(z_faces, 1), MISSING)
        features[:, column["z_speaking_mean"]] = np.where(
            speaking_count > 0,
            np.bincount(spoken, weights=value[between & speaking], minlength=count)
            / np.maximum(speaking_count, 1), MISSING)
    faces = features[:, column["in_faces"]] + z_faces
    features[:, column["z_share"]] = z_faces / np.maximum(faces, 1)
    stats = _region_statistics(segments, membrane, em, regions)
    low, high = edges[:, 0], edges[:, 1]
    for name, key in (("size", "size"), ("slices", "slices"), ("membrane", "membrane")):
        features[:, column[f"{name}_min"]] = np.minimum(stats[key][low], stats[key][high])
        features[:, column[f"{name}_max"]] = np.maximum(stats[key][low], stats[key][high])
    features[:, column["contact"]] = faces / np.maximum(features[:, column["size_min"]], 1)
    if em is not None:
        mean, std = stats["em_mean"], stats["em_std"]
        features[:, column["em_mean_min"]] = np.minimum(mean[low], mean[high])
        features[:, column["em_mean_max"]] = np.maximum(mean[low], mean[high])
        features[:, column["em_mean_difference"]] = np.abs(mean[low] - mean[high])
        features[:, column["em_std_min"]] = np.minimum(std[low], std[high])
        features[:, column["em_std_max"]] = np.maximum(std[low], std[high])
        in_faces = features[:, column["in_faces"]]
        features[:, column["em_boundary_mean"]] = np.where(
            in_faces > 0,
            np.bincount(index[~between], weights=em_value[~between], minlength=count)
            / np.maximum(in_faces, 1), MISSING)
    return EdgeTable(edges, features, names, regions)


def majority(segments, truth):
    """The majority ground-truth body of every region.

    Parameters
    ----------
    segments : numpy.ndarray
        (z, y, x) non-negative integer region IDs.
    truth : numpy.ndarray
        (z, y, x) ground-truth body IDs, same shape; 0 counts as a body like any other
        (a region mostly on 0 has majority 0).

    Returns
    -------
    numpy.ndarray
        (max(segments) + 1,) int64: the body with the most voxels in each region (the lowest
        ID on ties), -1 for region IDs with no voxel.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    segments, truth = np.asarray(segments), np.asarray(truth)
    if segments.shape != truth.shape:
        raise ValueError(f"ground truth has shape {truth.shape}, the segments {segments.shape}")
    seg = segments.ravel().astype(np.int64)
    gt = truth.ravel().astype(np.int64)
    regions = int(seg.max()) if seg.size else 0
    width = int(gt.max()) + 1 if gt.size else 1
    pairs, counts = np.unique(seg * width + gt, return_counts=True)
    region, body = pairs // width, pairs % width
    # per region: the largest count first, then the lowest body
    order = np.lexsort((body, -counts, region))
    first = np.ones(len(order), bool)
    first[1:] = region[order][1:] != region[order][:-1]
    out = np.full(regions + 1, -1, dtype=np.int64)
    out[region[order][first]] = body[order][first]
    return out


def edge_labels(segments, truth, edges):
    """Ground-truth labels of edges: 1 (merge) if both regions' majority body is the same
    body > 0, else 0.

    Parameters
    ----------
    segments, truth : numpy.ndarray
        As for :func:`majority`.
    edges : numpy.ndarray
        (E, 2) region IDs (an :attr:`EdgeTable.edges`).

    Returns
    -------
    numpy.ndarray
        (E,) uint8.
    """
    body = majority(segments, truth)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    a, b = body[edges[:, 0]], body[edges[:, 1]]
    return ((a == b) & (a > 0)).astype(np.uint8)

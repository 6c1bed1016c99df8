"""Segmentation scores: the thesis' metrics, SNEMI3D's adapted Rand error, VOI.

Everything derives from one sparse contingency table of (true, predicted)
label pairs, computed once per volume pair (see :func:`contingency`).
Volumes are (z, y, x) integer label arrays of equal shape; 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Contingency", "adapted_rand", "adjusted_rand_index", "boundary_scores",
    "check_min_overlap", "contingency", "evaluate", "evaluate_references",
    "foreground_recall_precision", "pixel_scores", "scores_from_table", "sorted_table",
    "splits_merges", "variation_of_information",
]


@dataclass
class Contingency:
    """Counts ``n_ij`` of voxels with true label ``true[k]`` and predicted ``pred[k]``.

    Attributes
    ----------
    true, pred : numpy.ndarray
        Original label values of each non-zero table entry (uint64).
    counts : numpy.ndarray
        int64 voxel count of each entry.
    total : int
        Number of voxels.
    """

    true: np.ndarray
    pred: np.ndarray
    counts: np.ndarray
    total: int


def _compact(labels):
    """Relabel to 0..K (0 stays 0); returns (flat indices, original value of each index)."""
    import fastremap

    flat = np.ascontiguousarray(labels).reshape(-1)
    indices, mapping = fastremap.renumber(flat, preserve_zero=True)
    values = np.zeros(max(mapping.values(), default=0) + 1, dtype=np.uint64)
    values[list(mapping.values())] = list(mapping.keys())
    return indices, values


def check_min_overlap(min_overlap, name="min_overlap"):
    """Return ``min_overlap`` as an int; raise ValueError naming ``name`` unless it is >= 0."""
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, np.integer)) \
            or min_overlap < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {min_overlap!r}")
    return int(min_overlap)


def contingency(true, pred, true_source="true", pred_source="predicted"):
    """Contingency table of two label volumes of equal shape.

    Labels are renumbered to compact indices (``fastremap``); pairs are
    counted with a dense ``bincount`` when the table has at most 2**24 cells,
    with ``fastremap.unique`` of 64-bit pair keys otherwise.

    Parameters
    ----------
    true, pred : numpy.ndarray
        Label volumes of equal shape, any integer dtype.
    true_source, pred_source : str or Path
        Where the volumes came from (a file name), for error messages.

    Returns
    -------
    Contingency

    Raises
    ------
    ValueError
        If the shapes differ or the volumes hold no voxel.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: predicted {pred_source} is {pred.shape}, "
                         f"true {true_source} is {true.shape}")
    if true.size == 0:
        raise ValueError(f"no voxels to score: predicted {pred_source} and true {true_source} "
                         f"have shape {true.shape}")
    ti, tvals = _compact(true)
    pi, pvals = _compact(pred)
    n_pred = len(pvals)
    keys = ti.astype(np.int64) * n_pred + pi.astype(np.int64, copy=False)
    if len(tvals) * n_pred <= 1 << 24:
        table = np.bincount(keys, minlength=len(tvals) * n_pred)
        keys = np.flatnonzero(table)
        counts = table[keys]
    else:
        import fastremap

        keys, counts = fastremap.unique(keys, return_counts=True)
    return sorted_table(Contingency(tvals[keys // n_pred], pvals[keys % n_pred],
                                    counts.astype(np.int64), int(true.size)))


def sorted_table(table):
    """``table`` with one entry per (true, predicted) pair (counts of repeated pairs summed),
    sorted by true then predicted label.

    Every table is sorted before any score is computed, so that float sums run in one order
    and tables built differently (in memory, or summed over blocks) give the same bits.
    """
    true = np.asarray(table.true, dtype=np.uint64)
    pred = np.asarray(table.pred, dtype=np.uint64)
    order = np.lexsort((pred, true))
    true, pred, counts = true[order], pred[order], np.asarray(table.counts, np.int64)[order]
    if len(true):
        start = np.flatnonzero(np.concatenate(
            [[True], (true[1:] != true[:-1]) | (pred[1:] != pred[:-1])]))
        true, pred, counts = true[start], pred[start], np.add.reduceat(counts, start)
    return Contingency(true, pred, counts, table.total)


def _pairs(x):
    """Sum of x * (x - 1) / 2 as a Python int (exact)."""
    x = x.astype(np.int64)
    return int((x * (x - 1) // 2).sum())


def _sums(keys, counts):
    """Per-label totals: sum of ``counts`` grouped by ``keys``."""
    _, inverse = np.unique(keys, return_inverse=True)
    return np.bincount(inverse, weights=counts).astype(np.int64)


def adjusted_rand_index(table):
    """Hubert & Arabie's ARI over all voxels, 0 an ordinary label (= sklearn's)."""
    n = table.total
    sum_ij = _pairs(table.counts)
    sum_a = _pairs(_sums(table.true, table.counts))
    sum_b = _pairs(_sums(table.pred, table.counts))
    total_pairs = n * (n - 1) // 2
    if total_pairs == 0:
        return 1.0
    expected = sum_a * sum_b / total_pairs
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both trivial partitions (as sklearn: perfect)
        return 1.0
    return float((sum_ij - expected) / (maximum - expected))


def splits_merges(table, min_overlap=10):
    """Thesis split and merge counts; entries with ``<= min_overlap`` voxels are dropped.

    splits = sum over true i > 0 of max(#kept predicted j > 0 in row i - 1, 0);
    merges likewise over predicted columns j > 0.
    """
    min_overlap = check_min_overlap(min_overlap)
    kept = (table.counts > min_overlap) & (table.true > 0) & (table.pred > 0)

    def excess(keys):
        if not kept.any():
            return 0
        _, per_label = np.unique(keys[kept], return_counts=True)
        return int(np.maximum(per_label - 1, 0).sum())

    return excess(table.true), excess(table.pred)


def foreground_recall_precision(table):
    """Recall and precision of the foreground: ``true > 0`` against ``pred > 0``."""
    both = int(table.counts[(table.true > 0) & (table.pred > 0)].sum())
    true_fg = int(table.counts[table.true > 0].sum())
    pred_fg = int(table.counts[table.pred > 0].sum())
    recall = both / true_fg if true_fg else 1.0
    precision = both / pred_fg if pred_fg else 1.0
    return recall, precision


def adapted_rand(table):
    """SNEMI3D adapted Rand error, precision and recall, as the challenge computes them.

    Rows of the contingency table are the true labels > 0 (voxels with true
    label 0 are ignored); columns are the predicted labels.  Predicted 0 inside
    the true foreground is handled with the challenge script's correction term
    (see Notes), which is *not* the same as counting each such voxel as its own
    singleton segment.

    Parameters
    ----------
    table : Contingency
        From :func:`contingency`.

    Returns
    -------
    dict
        ``error`` (1 - F1 of precision and recall), ``precision``, ``recall``;
        each in [0, 1].  0.0 precision / recall when their denominator is 0.

    Notes
    -----
    With ``p_ij`` the number of voxels with true label ``i > 0`` and predicted
    label ``j > 0``, ``c_i`` the number of voxels with true label ``i`` and
    predicted label 0, and ``n`` the number of voxels in the volume (all of
    them, true 0 included)::

        A  = sum_i (sum_j p_ij + c_i)^2
        B  = sum_j (sum_i p_ij)^2 + (sum_i c_i) / n
        AB = sum_ij p_ij^2        + (sum_i c_i) / n

        precision = AB / B,   recall = AB / A,
        error     = 1 - 2 * precision * recall / (precision + recall)

    The ``(sum_i c_i) / n`` term is the one in the SNEMI3D challenge's
    evaluation script, which published SNEMI3D scores use; it is kept for
    comparability.  It is much smaller than counting every predicted-0 voxel as
    a singleton segment (which would add ``sum_i c_i`` to both ``B`` and
    ``AB``).  Example: 4 voxels, all true label 1, all predicted 0: ``A = 16``,
    ``B = AB = 4 / 4 = 1``, so precision 1, recall 1/16 and error 15/17
    (singletons would give recall 4/16 = 1/4).

    ``skimage.metrics.adapted_rand_error`` differs in three ways: it counts
    unordered pairs of distinct voxels (``x * (x - 1)`` instead of ``x^2``, i.e.
    it subtracts the number of scored voxels from ``A``, ``B`` and ``AB``), it
    treats predicted 0 as an ordinary segment, and its precision and recall are
    swapped relative to these (its precision compares with ``A``, the true
    sizes, i.e. with the recall here).

    References
    ----------
    .. [1] I. Arganda-Carreras, S. C. Turaga, D. R. Berger, et al.,
       "Crowdsourcing the creation of image segmentation algorithms for
       connectomics", Frontiers in Neuroanatomy 9:142, 2015.
       doi:10.3389/fnana.2015.00142
    """
    n = table.total
    rows = table.true > 0
    fg_pred = rows & (table.pred > 0)
    p = table.counts[fg_pred].astype(np.float64)
    c_sum = float(table.counts[rows & (table.pred == 0)].sum())
    a = _sums(table.true[rows], table.counts[rows]).astype(np.float64)
    b = _sums(table.pred[fg_pred], table.counts[fg_pred]).astype(np.float64)
    correction = c_sum / n if n else 0.0
    sum_a = float((a * a).sum())
    sum_b = float((b * b).sum()) + correction
    sum_ab = float((p * p).sum()) + correction
    precision = sum_ab / sum_b if sum_b else 0.0
    recall = sum_ab / sum_a if sum_a else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"error": 1.0 - f1, "precision": precision, "recall": recall}


def variation_of_information(table):
    """VOI over voxels with true > 0, in bits: ``(split, merge)``.

    split = H(pred | true), merge = H(true | pred).
    """
    rows = table.true > 0
    counts = table.counts[rows].astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0, 0.0
    p_ij = counts / n
    p_i = _sums(table.true[rows], table.counts[rows]) / n
    p_j = _sums(table.pred[rows], table.counts[rows]) / n
    h_ij = -(p_ij * np.log2(p_ij)).sum()
    h_i = -(p_i * np.log2(p_i)).sum()
    h_j = -(p_j * np.log2(p_j)).sum()
    return float(max(h_ij - h_i, 0.0)), float(max(h_ij - h_j, 0.0))


def evaluate(true, pred, min_overlap=10, true_source="true", pred_source="predicted"):
    """All scores for a predicted segmentation against the truth.

    Parameters
    ----------
    true, pred : numpy.ndarray
        (z, y, x) label volumes of equal shape (any integer dtype; 0 = background).
    min_overlap : int
        Contingency entries with this many voxels or fewer are ignored for
        splits and merges (the thesis used 10).
    true_source, pred_source : str or Path
        Where the volumes came from (file names), for error messages.

    Returns
    -------
    dict
        splits, merges, adjusted_rand_index, recall, precision,
        adapted_rand_error, adapted_rand_precision, adapted_rand_recall,
        voi_split, voi_merge, true_objects, predicted_objects.

    Raises
    ------
    ValueError
        If the shapes differ, the volumes are empty or ``min_overlap`` is negative.
    """
    min_overlap = check_min_overlap(min_overlap)
    return scores_from_table(contingency(true, pred, true_source, pred_source), min_overlap)


def scores_from_table(table, min_overlap=10):
    """Every score of :func:`evaluate` from a contingency table (see :func:`sorted_table`)."""
    splits, merges = splits_merges(table, min_overlap)
    recall, precision = foreground_recall_precision(table)
    arand = adapted_rand(table)
    voi_split, voi_merge = variation_of_information(table)
    return {
        "splits": splits,
        "merges": merges,
        "adjusted_rand_index": adjusted_rand_index(table),
        "recall": recall,
        "precision": precision,
        "adapted_rand_error": arand["error"],
        "adapted_rand_precision": arand["precision"],
        "adapted_rand_recall": arand["recall"],
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "true_objects": int(len(np.unique(table.true[table.true > 0]))),
        "predicted_objects": int(len(np.unique(table.pred[table.pred > 0]))),
    }


def evaluate_references(pred, references, min_overlap=10, pred_source="predicted"):
    """Score one prediction against several references, e.g. the thesis' and the field's.

    The thesis scores a reconstruction against the *evaluation volume*
    (membranes are background 0, which the adapted Rand error ignores); the
    field scores it against the *ground-truth labels*, where every labelled voxel
    counts.  This gives both with one call.

    Parameters
    ----------
    pred : numpy.ndarray
        (z, y, x) predicted labels.
    references : dict
        ``{name: (volume, source)}``: each reference volume (same shape as
        ``pred``) with where it came from (a file name, for messages), in the
        order they should be reported.
    min_overlap : int
        As in :func:`evaluate`.
    pred_source : str or Path
        Where ``pred`` came from, for error messages.

    Returns
    -------
    dict
        ``{name: scores}`` with the scores of :func:`evaluate`, in the order of
        ``references``.

    Raises
    ------
    ValueError
        As :func:`evaluate`, naming the reference whose shape differs.
    """
    return {name: evaluate(volume, pred, min_overlap, source, pred_source)
            for name, (volume, source) in references.items()}


def pixel_scores(predicted, true):
    """Pixel precision, recall and F1 of a binary prediction.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        Boolean masks of equal shape (any dimensionality).

    Returns
    -------
    dict
        ``precision`` (true positives / predicted positives), ``recall`` (true positives /
        true positives + false negatives) and ``f1``; an empty denominator gives 1.0 when both
        masks are empty there (nothing to find, nothing wrongly found), else 0.0.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
    if predicted.shape != true.shape:
        raise ValueError(f"prediction has shape {predicted.shape}, ground truth {true.shape}")
    hits = int(np.count_nonzero(predicted & true))
    return _f1(hits, int(np.count_nonzero(predicted)), hits, int(np.count_nonzero(true)))


def _f1(precision_hits, predicted, recall_hits, true):
    precision = precision_hits / predicted if predicted else float(true == 0)
    recall = recall_hits / true if true else float(predicted == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def boundary_scores(predicted, true, tolerance=1):
    """Boundary precision, recall and F1 with a distance tolerance, slice by slice.

    The field's boundary measure for membrane maps: a predicted boundary pixel counts as
    correct if a true boundary pixel lies within ``tolerance`` pixels of it (Euclidean, in its
    own slice), and a true boundary pixel counts as found if a predicted one lies within
    ``tolerance`` of it.  Unlike the BSDS benchmark there is no one-to-one matching, so a
    thick predicted boundary is not penalised for its width.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        (z, y, x) or (y, x) boolean boundary masks of equal shape.
    tolerance : float
        In pixels, >= 0; 0 is :func:`pixel_scores`.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` and ``tolerance``.

    Raises
    ------
    ValueError
        If the shapes differ or the tolerance is negative.
    """
    from scipy import ndimage

    predicted, true = np.asarray(predicted, bool), np.asarray(true, bool)
    if predicted.shape != true.shape:
        raise ValueError(f"prediction has shape {predicted.shape}, ground truth {true.shape}")
    if not tolerance >= 0:
        raise ValueError(f"boundary tolerance must be >= 0 pixels, got {tolerance}")
    if predicted.ndim == 2:
        predicted, true = predicted[None], true[None]
    near_true = near_predicted = 0
    for p, t in zip(predicted, true):
        if t.any():  # distance of every pixel to the nearest true boundary pixel
            near_true += int(np.count_nonzero(p & (ndimage.distance_transform_edt(~t)
                                                   <= tolerance)))
        if p.any():
            near_predicted += int(np.count_nonzero(t & (ndimage.distance_transform_edt(~p)
                                                        <= tolerance)))
    scores = _f1(near_true, int(np.count_nonzero(predicted)), near_predicted,
                 int(np.count_nonzero(true)))
    return {**scores, "tolerance": tolerance}

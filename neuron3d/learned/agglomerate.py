"""Learned agglomeration: classify the edges of an over-segmentation, merge the likely ones.

1. *initial segments*: waterz's agglomeration (:func:`neuron3d.agglomerate.agglomerate`) at a
   low threshold (:data:`INITIAL_THRESHOLD`), so that the graph is small and nearly free of
   wrong merges;
2. *features*: :func:`neuron3d.learned.graph.edge_table`;
3. *merge probability*: the edge classifier (:mod:`neuron3d.learned.classifier`);
4. *merge*: every edge with probability above the threshold joins its two regions
   (:func:`merge`, union-find).  The probabilities are computed once on the initial graph and
   not re-computed after merges (a one-shot, "flat" agglomeration; gala re-scores merged
   edges), so the order of the merges does not change the result.

The classifier is trained on a volume with ground truth that the test never sees; its merge
threshold is chosen there too, by :func:`train` with spatially cross-validated probabilities.
"""

from __future__ import annotations

import numpy as np

from . import classifier as C
from .graph import edge_labels, edge_table, feature_names

__all__ = [
    "INITIAL_THRESHOLD", "THRESHOLDS", "apply", "choose", "cross_validated", "initial_segments",
    "merge", "relabel", "sweep", "train", "weights",
]

#: waterz's threshold for the initial over-segmentation (chosen, among 0.2, 0.3 and 0.4, by the
#: cross-validation on the demo's d: documentation/learned_agglomeration.md).
INITIAL_THRESHOLD = 0.2
#: The grid of merge-probability thresholds swept on the training volume.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def initial_segments(membrane, overlap, threshold=INITIAL_THRESHOLD, workers=None,
                     fragments="2d"):
    """waterz's median agglomeration of ``membrane`` and ``overlap`` at ``threshold``
    (:func:`neuron3d.agglomerate.agglomerate`) of per-slice (``fragments="2d"``) or 3-D
    (``"3d"``) watershed fragments: regions 1..K."""
    from ..agglomerate import agglomerate

    return agglomerate(membrane, overlap, [threshold], workers=workers,
                       fragment_mode=fragments)[0]


def merge(edges, probability, threshold, regions):
    """Join the regions of every edge whose probability is above ``threshold`` (union-find).

    Edges are taken in decreasing probability (ties in the order given); each joins the sets
    of its two regions.  The sets do not depend on that order (the probabilities are not
    re-computed after merges), only on which edges are above the threshold.

    Parameters
    ----------
    edges : numpy.ndarray
        (E, 2) region IDs in 1..``regions``.
    probability : numpy.ndarray
        (E,) merge probabilities.
    threshold : float
        Edges with probability strictly above it merge.
    regions : int
        The largest region ID.

    Returns
    -------
    numpy.ndarray
        (regions + 1,) int64: the set of each region, numbered 1.. in increasing order of the
        sets' smallest region; 0 stays 0.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    probability = np.asarray(probability, dtype=np.float64).ravel()
    if len(probability) != len(edges):
        raise ValueError(f"{len(edges)} edges but {len(probability)} probabilities")
    parent = np.arange(regions + 1, dtype=np.int64)
    above = np.flatnonzero(probability > threshold)
    order = above[np.argsort(-probability[above], kind="stable")]
    # vectorised union-find: hook roots onto the smaller root until every edge is inside a set
    a, b = edges[order, 0], edges[order, 1]
    while len(a):
        ra, rb = _find(parent, a), _find(parent, b)
        apart = ra != rb
        if not apart.any():
            break
        ra, rb = ra[apart], rb[apart]
        low, high = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, high, low)
        a, b = a[apart], b[apart]
    roots = _find(parent, np.arange(regions + 1))
    _, first = np.unique(roots, return_inverse=True)
    out = first.ravel().astype(np.int64)  # root 0 (region 0) is set 0
    return out


def _find(parent, nodes):
    """The root of each node, compressing ``parent``'s paths in place."""
    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            break
        roots = up
    parent[nodes] = roots
    return roots


def relabel(segments, sets):
    """``segments`` with each region replaced by its set, renumbered 1..K in order of first
    appearance (as :func:`neuron3d.agglomerate.agglomerate` numbers), in the smallest unsigned
    dtype of at least 16 bits that holds K."""
    import fastremap

    from ..labels import label_dtype

    labels = sets[np.asarray(segments, dtype=np.int64)]
    labels, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=True)
    count = len(mapping) - (0 in mapping)
    return labels.astype(label_dtype(count))


def _folds(segments, regions):
    """Two spatial folds of the regions: the half (along x) holding each one's centroid."""
    x = np.broadcast_to(np.arange(segments.shape[2]), segments.shape).ravel()
    flat = segments.ravel()
    sizes = np.maximum(np.bincount(flat, minlength=regions + 1), 1)
    centroid = np.bincount(flat, weights=x, minlength=regions + 1) / sizes
    return (centroid >= segments.shape[2] / 2).astype(np.int64)


def weights(table):
    """Training weights of edges: the square root of the smaller region's voxel count, so
    that the large regions whose wrong merges cost most weigh more than fragments do."""
    return np.sqrt(table.column("size_min"))


def cross_validated(table, labels, segments, seed=0, parameters=None):
    """Out-of-fold merge probabilities of every edge (2 folds: the two halves along x).

    A model fit on the edges inside one half predicts the edges inside the other; an edge
    between the halves gets the mean of both models.  A half whose edges hold one label only
    gives way to a model fit on all edges (recorded as ``fallback``).

    Returns
    -------
    probability : numpy.ndarray
        (E,) float64.
    fallback : bool
    """
    fold = _folds(np.asarray(segments, dtype=np.int64), table.regions)
    a, b = fold[table.edges[:, 0]], fold[table.edges[:, 1]]
    probability = np.zeros(len(labels))
    models, fallback = [], False
    for k in (0, 1):
        inside = (a == k) & (b == k)
        if len(np.unique(labels[inside])) < 2:
            fallback = True
            models = [C.fit(table.features, labels, table.names, seed, parameters,
                            weights(table))] * 2
            break
        models.append(C.fit(table.features[inside], labels[inside], table.names, seed,
                            parameters, weights(table)[inside]))
    for k in (0, 1):
        other = (a == 1 - k) & (b == 1 - k)
        probability[other] = C.predict(models[k], table.features[other])
    across = a != b
    if across.any():
        probability[across] = (C.predict(models[0], table.features[across])
                               + C.predict(models[1], table.features[across])) / 2
    return probability, fallback


def sweep(segments, table, probability, truth, thresholds=THRESHOLDS):
    """Score the merge at every threshold against ``truth`` (:func:`neuron3d.metrics.evaluate`).

    Returns
    -------
    list of dict
        Per threshold: ``threshold``, ``labels`` (the scores), ``objects``.
    """
    from ..metrics import evaluate

    rows = []
    for threshold in thresholds:
        labels = relabel(segments, merge(table.edges, probability, threshold, table.regions))
        scores = evaluate(truth, labels)
        rows.append({"threshold": float(threshold), "labels": scores,
                     "objects": scores["predicted_objects"]})
    return rows


#: How :func:`choose` chooses, as reports name it.
CRITERION = ("lowest VOI split + merge against the ground-truth labels, then lowest adapted "
             "Rand error, then lowest threshold, on cross-validated probabilities")


def choose(rows):
    """The threshold of :data:`CRITERION` among :func:`sweep`'s rows."""
    from ..thresholds import choose as choose_threshold

    return choose_threshold(rows, "voi")


def train(membrane, overlap, truth, em=None, seed=0, initial_threshold=INITIAL_THRESHOLD,
          thresholds=THRESHOLDS, z_threshold=0.3, parameters=None, workers=None,
          fragments="2d"):
    """Train the edge classifier on a volume with ground truth and choose its threshold there.

    Parameters
    ----------
    membrane, overlap : numpy.ndarray
        As for :func:`neuron3d.agglomerate.agglomerate`.
    truth : numpy.ndarray
        (z, y, x) ground-truth body IDs (0 = background or boundary).
    em : numpy.ndarray, optional
        (z, y, x) EM; adds the EM features.
    seed : int
        The classifier's seed.
    initial_threshold : float
        waterz's threshold for the initial segments.
    thresholds : sequence of float
        Merge-probability thresholds swept with cross-validated probabilities
        (:func:`cross_validated`); the one :func:`choose` picks is the model's ``threshold``.
    z_threshold : float
        See :func:`neuron3d.learned.graph.edge_table`.
    parameters : dict, optional
        Classifier settings (:data:`neuron3d.learned.classifier.PARAMETERS`).
    workers : int, optional
        Threads for the fragments.
    fragments : {"2d", "3d"}
        The initial segments' fragments (:func:`initial_segments`); the model records them
        and :func:`apply` cuts the same.

    Returns
    -------
    dict
        The model (:func:`neuron3d.learned.classifier.fit`, fit on every edge) with
        ``threshold`` (chosen), ``criterion``, ``sweep`` (the cross-validated rows),
        ``initial`` (its threshold, z_threshold, regions, edges) and ``oracle`` (the scores of
        merging exactly the edges the ground truth labels 1: the best the initial segments
        allow).

    Raises
    ------
    ValueError
        If the shapes disagree or the ground truth gives only one label to the edges.
    """
    from ..metrics import evaluate

    truth = np.asarray(truth)
    if truth.shape != np.shape(membrane):
        raise ValueError(f"ground truth has shape {truth.shape}, the membrane stack "
                         f"{np.shape(membrane)}")
    segments = initial_segments(membrane, overlap, initial_threshold, workers, fragments)
    table = edge_table(segments, membrane, overlap, em, z_threshold)
    labels = edge_labels(segments, truth, table.edges)
    model = C.fit(table.features, labels, table.names, seed, parameters, weights(table))
    probability, fallback = cross_validated(table, labels, segments, seed, parameters)
    rows = sweep(segments, table, probability, truth, thresholds)
    oracle = evaluate(truth, relabel(segments, merge(table.edges, labels, 0.5, table.regions)))
    model.update({
        "threshold": choose(rows),
        "criterion": CRITERION,
        "cross_validation": {"folds": "the two halves along x (by region centroid)",
                             "fallback": fallback},
        "sweep": rows,
        "initial": {"threshold": float(initial_threshold), "z_threshold": float(z_threshold),
                    "fragments": fragments, "regions": int(table.regions),
                    "edges": int(len(table.edges))},
        "oracle": oracle,
    })
    return model


def apply(model, membrane, overlap, em=None, thresholds=None, workers=None):
    """Segment with a trained model.

    Parameters
    ----------
    model : dict
        From :func:`train` (or :func:`neuron3d.learned.classifier.load`).
    membrane, overlap, em : numpy.ndarray
        As for :func:`train`; ``em`` must be given exactly when the model was trained with
        EM (its features differ otherwise).
    thresholds : sequence of float, optional
        Merge-probability thresholds (default: the model's ``threshold``).
    workers : int, optional
        Threads for the fragments.

    Returns
    -------
    list of numpy.ndarray
        One (z, y, x) label volume per threshold (IDs 1..K, every voxel labelled).

    Raises
    ------
    ValueError
        If the model was trained on another feature set (with EM and none is given, or the
        other way round) or the inputs disagree.
    """
    C.check_features(model, feature_names(em is not None))
    if thresholds is None:
        thresholds = [model["threshold"]]
    initial = model.get("initial") or {}
    # a model of before the fragments were recorded was trained on per-slice fragments
    segments = initial_segments(membrane, overlap, initial.get("threshold", INITIAL_THRESHOLD),
                                workers, initial.get("fragments", "2d"))
    table = edge_table(segments, membrane, overlap, em, initial.get("z_threshold", 0.3))
    probability = C.predict(model, table.features)
    return [relabel(segments, merge(table.edges, probability, t, table.regions))
            for t in thresholds]

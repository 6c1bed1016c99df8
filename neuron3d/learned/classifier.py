"""The edge classifier: scikit-learn's gradient boosting, saved as plain JSON.

A model is a JSON-compatible dict (no pickle: loading a model runs no code): the feature set it
was trained on, the trees of a fitted ``sklearn.ensemble.HistGradientBoostingClassifier`` and
how it was trained.  :func:`predict` evaluates the trees with numpy, equal to the fitted
classifier's ``predict_proba`` (the same comparisons and the same float64 sums), so applying a
model needs no scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = [
    "DECREASING", "FORMAT", "PARAMETERS", "VERSION", "check_features", "fit", "load",
    "monotonic", "predict", "save",
]

#: The ``format`` of a saved model, and its ``version`` (raised when its meaning changes).
FORMAT = "neuron3d.learned.model"
VERSION = 1

#: The classifier's settings (seeded; no early stopping, so the fit is deterministic).  Shallow,
#: regularised trees: a quadrant gives a few hundred to a few thousand edges, and deeper ones
#: (31 leaves, 200 iterations) put false merges of large regions at probabilities above 0.9 in
#: the cross-validation on the demo's d (documentation/learned_agglomeration.md).
PARAMETERS = {"max_iter": 100, "learning_rate": 0.1, "max_depth": 3, "min_samples_leaf": 20,
              "l2_regularization": 1.0, "early_stopping": False}

#: Features whose growth may only lower the merge probability: the statistics of the boundary
#: values (membrane, 1 - overlap) of an edge, not their counts or shares.
DECREASING = ("_mean", "_q10", "_q25", "_q50", "_q75", "_q90")


def monotonic(names):
    """The classifier's ``monotonic_cst`` for the feature ``names``: -1 (the merge probability
    does not grow with it) for the boundary-value statistics of :data:`DECREASING` (``in_``,
    ``z_``, ``z_speaking_mean``), 0 (unconstrained) for the rest."""
    return [-1 if name.startswith(("in_", "z_")) and name.endswith(DECREASING) else 0
            for name in names]


def fit(features, labels, names, seed=0, parameters=None, weights=None):
    """Fit the edge classifier and return it as a model dict.

    Parameters
    ----------
    features : numpy.ndarray
        (E, F) float features of the training edges.
    labels : numpy.ndarray
        (E,) 0/1: 1 where the edge joins two parts of one neuron.
    names : sequence of str
        The F feature names, recorded in the model.
    seed : int
        ``random_state`` of the classifier.
    parameters : dict, optional
        Overrides of :data:`PARAMETERS` (and of ``monotonic_cst``, :func:`monotonic`).
    weights : numpy.ndarray, optional
        (E,) sample weights.

    Returns
    -------
    dict
        ``format``, ``version``, ``features``, ``classifier`` (``kind``, ``parameters``,
        ``baseline``, ``trees``: per tree the node arrays ``feature``, ``threshold``,
        ``missing_left``, ``left``, ``right``, ``leaf``, ``value``), ``training`` (edges,
        positives, seed, scikit-learn version).

    Raises
    ------
    ValueError
        If the shapes disagree or the labels hold a single class.
    """
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    names = list(names)
    if features.ndim != 2 or features.shape != (len(labels), len(names)):
        raise ValueError(f"features have shape {features.shape}, expected "
                         f"({len(labels)}, {len(names)}) for {len(labels)} labels")
    classes = np.unique(labels)
    if len(classes) != 2 or not set(classes.tolist()) <= {0, 1}:
        raise ValueError("the training edges need both labels, merge (1) and keep apart (0); "
                         f"got {sorted(set(classes.tolist()))} for {len(labels)} edges")
    # a statistic no training edge has (no between-slice faces in a small volume, say) says
    # nothing; scikit-learn's binning fails on a column without any value, so it is fit as a
    # constant, which no tree splits on (prediction then never reads it)
    empty = np.isnan(features).all(axis=0)
    if empty.any():
        features = features.copy()
        features[:, empty] = 0.0
    settings = {**PARAMETERS, "monotonic_cst": monotonic(names), **(parameters or {})}
    classifier = HistGradientBoostingClassifier(random_state=int(seed), **settings)
    from threadpoolctl import threadpool_limits

    # one OpenMP thread: on a busy 2-core machine its spinning threads make a fit of a few
    # thousand edges ~15x slower; the fit does not depend on it
    with threadpool_limits(limits=1, user_api="openmp"):
        classifier.fit(features, labels, sample_weight=weights)
    trees = []
    for (predictor,) in classifier._predictors:
        nodes = predictor.nodes
        trees.append({
            "feature": nodes["feature_idx"].astype(int).tolist(),
            "threshold": nodes["num_threshold"].astype(float).tolist(),
            "missing_left": nodes["missing_go_to_left"].astype(int).tolist(),
            "left": nodes["left"].astype(int).tolist(),
            "right": nodes["right"].astype(int).tolist(),
            "leaf": nodes["is_leaf"].astype(int).tolist(),
            "value": nodes["value"].astype(float).tolist(),
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "features": names,
        "classifier": {
            "kind": "HistGradientBoostingClassifier",
            "parameters": settings,
            "baseline": float(np.ravel(classifier._baseline_prediction)[0]),
            "trees": trees,
        },
        "training": {"edges": int(len(labels)), "positives": int(labels.sum()),
                     "weighted": weights is not None,
                     "seed": int(seed), "scikit_learn": sklearn.__version__},
    }


def _tree_values(tree, features):
    """The leaf value each row of ``features`` reaches in one tree."""
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=np.float64)
    missing_left = np.asarray(tree["missing_left"], dtype=bool)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    leaf = np.asarray(tree["leaf"], dtype=bool)
    value = np.asarray(tree["value"], dtype=np.float64)
    node = np.zeros(len(features), dtype=np.int64)
    rows = np.arange(len(features))
    active = ~leaf[node]
    while active.any():
        at = node[active]
        x = features[rows[active], feature[at]]
        go_left = np.where(np.isnan(x), missing_left[at], x <= threshold[at])
        node[active] = np.where(go_left, left[at], right[at])
        active = ~leaf[node]
    return value[node]


def predict(model, features):
    """Merge probabilities of edges: the classifier's ``predict_proba(features)[:, 1]``.

    Parameters
    ----------
    model : dict
        From :func:`fit` or :func:`load`.
    features : numpy.ndarray
        (E, F) features, columns ``model["features"]``.

    Returns
    -------
    numpy.ndarray
        (E,) float64 in [0, 1].
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(model["features"]):
        raise ValueError(f"features have shape {features.shape}, the model takes "
                         f"{len(model['features'])} columns")
    classifier = model["classifier"]
    raw = np.full(len(features), classifier["baseline"], dtype=np.float64)
    for tree in classifier["trees"]:
        raw += _tree_values(tree, features)
    return 1.0 / (1.0 + np.exp(-raw))


def check_features(model, names, source="the model"):
    """Refuse a model trained on another feature set than ``names``.

    Raises
    ------
    ValueError
        Naming ``source`` and the first feature that differs.
    """
    have, want = list(model.get("features", [])), list(names)
    if have == want:
        return model
    extra = [n for n in have if n not in want]
    lacking = [n for n in want if n not in have]
    if extra and not lacking and all(n.startswith("em_") for n in extra):
        raise ValueError(f"{source} was trained with EM features ({', '.join(extra[:2])}, ...): "
                         "give --em")
    if lacking and not extra and all(n.startswith("em_") for n in lacking):
        raise ValueError(f"{source} was trained without EM features: leave out --em")
    detail = (f"it has {extra[0]!r}, not computed here" if extra
              else f"it lacks {lacking[0]!r}" if lacking else "its columns are in another order")
    raise ValueError(f"{source} was trained on another feature set ({len(have)} features, "
                     f"this version computes {len(want)}): {detail}")


def save(path, model):
    """Write ``model`` as JSON to ``path`` atomically (:func:`neuron3d.io.write_file`)."""
    from ..io import write_file

    write_file(path, json.dumps(model, indent=1) + "\n")


def load(path):
    """Read a model written by :func:`save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not JSON, not a model of :data:`FORMAT`, or of another :data:`VERSION`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model does not exist: {path}")
    try:
        model = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--model {path} is not a JSON model file ({error})") from None
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise ValueError(f"--model {path} is not a {FORMAT} file")
    if model.get("version") != VERSION:
        raise ValueError(f"--model {path} has version {model.get('version')!r}; this version "
                         f"reads version {VERSION} (train it again)")
    for key in ("features", "classifier"):
        if key not in model:
            raise ValueError(f"--model {path} has no {key!r}")
    from ..agglomerate import FRAGMENT_MODES

    initial = model.get("initial", {})
    if not isinstance(initial, dict):
        raise ValueError(f"--model {path} has initial {initial!r}; expected an object")
    fragments = initial.get("fragments", "2d")
    if fragments not in FRAGMENT_MODES:
        raise ValueError(f"--model {path} has initial fragments {fragments!r}; expected "
                         f"{' or '.join(FRAGMENT_MODES)}")
    return model

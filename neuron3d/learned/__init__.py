"""Learned agglomeration: an edge classifier over region-graph features (gala, Nunez-Iglesias et
al. 2013; NeuroProof, Parag et al. 2015), its merge probability the merge score.

* :mod:`neuron3d.learned.graph`: the region graph of a label stack, edge features, ground-truth
  edge labels;
* :mod:`neuron3d.learned.classifier`: the gradient-boosting classifier, saved as JSON;
* :mod:`neuron3d.learned.agglomerate`: initial segments, union-find merge, training with a
  cross-validated threshold, applying a model;
* ``python -m neuron3d.learned train|apply`` (:mod:`neuron3d.learned.__main__`).

documentation/learned_agglomeration.md has the design and the measurements.
"""

from .agglomerate import (
    CRITERION,
    INITIAL_THRESHOLD,
    THRESHOLDS,
    apply,
    choose,
    cross_validated,
    initial_segments,
    merge,
    relabel,
    sweep,
    train,
)
from .classifier import FORMAT, VERSION, check_features, fit, load, predict, save
from .graph import (
    EM_FEATURES,
    FEATURES,
    MISSING,
    QUANTILES,
    EdgeTable,
    edge_labels,
    edge_table,
    feature_names,
    majority,
    quantiles_by_group,
)

__all__ = [
    "CRITERION", "EM_FEATURES", "FEATURES", "FORMAT", "INITIAL_THRESHOLD", "MISSING",
    "QUANTILES", "THRESHOLDS", "VERSION", "EdgeTable", "apply", "check_features", "choose",
    "cross_validated", "edge_labels", "edge_table", "feature_names", "fit", "initial_segments",
    "load", "majority", "merge", "predict", "quantiles_by_group", "relabel", "save", "sweep",
    "train",
]

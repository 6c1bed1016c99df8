"""How a merge threshold is chosen on a held-out quadrant: the grid swept and the criterion.

One place for both sweeps (in memory, :mod:`neuron3d.sweep`, and blockwise,
:mod:`neuron3d.blockwise.sweep`), so that they choose alike and neither imports the other.
"""

from __future__ import annotations

__all__ = ["CRITERION", "THRESHOLDS", "choose"]

#: The grid of merge thresholds swept on the held-out quadrant.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))

#: What :func:`choose` minimises, as the sweep file records it.
CRITERION = "lowest adapted Rand error against the ground-truth labels (lower threshold on ties)"


def choose(rows):
    """The threshold with the lowest adapted Rand error against the labels (lowest on ties).

    Parameters
    ----------
    rows : list of dict
        One per threshold: ``{"threshold": float, "labels": {"adapted_rand_error": float,
        ...}, ...}`` as the sweeps write them.

    Returns
    -------
    float
        The chosen threshold.
    """
    best = min(rows, key=lambda r: (r["labels"]["adapted_rand_error"], r["threshold"]))
    return best["threshold"]

"""How a merge threshold is chosen on a held-out quadrant: the grid swept and the criterion.

One place for both sweeps (in memory, :mod:`neuron3d.sweep`, and blockwise,
:mod:`neuron3d.blockwise.sweep`) and the learned agglomeration's, so that they choose alike and
none imports another.

The criteria (``--criterion``):

* ``voi`` (the default): the lowest variation of information, split + merge, against the
  ground-truth labels; ties by the lowest adapted Rand error, then the lower threshold.  VOI
  counts a split as a user does (a body cut in two costs bits however small the piece), while
  the adapted Rand error barely sees many small splits: on a held-out medulla FIB-SEM volume
  two runs of one command scored 0.088 with 1237 objects for 93 and 0.087 with 114.
* ``rand``: the lowest adapted Rand error against the labels (the lower threshold on ties), the
  field's score, as the project chose before.
"""

from __future__ import annotations

__all__ = ["CRITERIA", "CRITERION", "DEFAULT_CRITERION", "THRESHOLDS", "check_criterion", "choose"]

#: The grid of merge thresholds swept on the held-out quadrant.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))

#: What :func:`choose` minimises, by name, as the sweep file records it.
CRITERIA = {
    "voi": "lowest VOI split + merge against the ground-truth labels (then lowest adapted Rand "
           "error, then lower threshold)",
    "rand": "lowest adapted Rand error against the ground-truth labels (lower threshold on "
            "ties)",
}
DEFAULT_CRITERION = "voi"
#: The default criterion's description.
CRITERION = CRITERIA[DEFAULT_CRITERION]


def check_criterion(criterion):
    """``criterion`` if it names one of :data:`CRITERIA`; else a ValueError naming it."""
    if criterion not in CRITERIA:
        raise ValueError(f"--criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    return criterion


def _key(row, criterion):
    scores = row["labels"]
    rand = scores["adapted_rand_error"]
    if criterion == "rand":
        return (rand, row["threshold"])
    # rounded, so that sums equal but for the last bits tie as they should
    return (round(scores["voi_split"] + scores["voi_merge"], 12), rand, row["threshold"])


def choose(rows, criterion=DEFAULT_CRITERION):
    """The threshold of ``criterion`` (see :data:`CRITERIA`) among a sweep's rows.

    Parameters
    ----------
    rows : list of dict
        One per threshold: ``{"threshold": float, "labels": {"adapted_rand_error": float,
        "voi_split": float, "voi_merge": float, ...}, ...}`` as the sweeps write them.
    criterion : str
        ``"voi"`` or ``"rand"``.

    Returns
    -------
    float
        The chosen threshold.

    Raises
    ------
    ValueError
        For another criterion.
    """
    check_criterion(criterion)
    return min(rows, key=lambda r: _key(r, criterion))["threshold"]

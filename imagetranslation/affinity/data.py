"""Training samples of the affinity network: EM crops, their augmentations and their targets.

A sample is drawn from a numpy generator seeded by (seed, step) alone, so the batch of step N is
the same whether a run got there in one go or resumed (:func:`batch`).  Targets are computed
after augmenting, from the flipped or transposed labels, so they always follow
:mod:`neuron3d.affinity`'s predecessor layout.
"""

from __future__ import annotations

import numpy as np

from neuron3d.affinity import edge_mask, label_affinities

from ..data import to_model_range


def step_rng(seed, step):
    """The generator of step ``step``: the same on a resumed run as on an uninterrupted one."""
    return np.random.default_rng([int(seed), int(step)])


def sample(em, labels, crop, rng, augment=True, balanced=True):
    """One random crop of ``em`` (uint8, scaled by ``to_model_range``) and ``labels``, augmented.

    Augmentations (each with probability 1/2): a flip of each axis, a y/x transpose (for square
    crops), and an intensity change ``a * em + b`` (a in [0.8, 1.2], b in [-0.2, 0.2]).

    Returns
    -------
    x : numpy.ndarray
        (z, y, x, 1) float32 EM.
    target, weight : numpy.ndarray
        (z, y, x, 3) float32: the affinities of the labels (channels z, y, x) and the loss
        weight of each edge: 0 where an edge has no predecessor in the crop, else 1, or with
        ``balanced`` such that cut and uncut edges weigh half each (see :func:`balance`).
    """
    shape = em.shape
    corner = [int(rng.integers(0, s - c + 1)) for s, c in zip(shape, crop)]
    window = tuple(slice(o, o + c) for o, c in zip(corner, crop))
    x, y = to_model_range(em[window]), labels[window]
    if augment:
        flips = rng.random(3) < 0.5
        transpose = rng.random() < 0.5 and crop[1] == crop[2]
        gain, offset = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2)
        axes = tuple(int(a) for a in np.flatnonzero(flips))
        if axes:
            x, y = np.flip(x, axes), np.flip(y, axes)
        if transpose:
            x, y = x.transpose(0, 2, 1), y.transpose(0, 2, 1)
        if rng.random() < 0.5:
            x = x * np.float32(gain) + np.float32(offset)
    target = label_affinities(np.ascontiguousarray(y))
    mask = edge_mask(target.shape[1:])
    weight = balance(target, mask) if balanced else mask.astype(np.float32)
    return (np.ascontiguousarray(x, dtype=np.float32)[..., None],
            np.moveaxis(target, 0, -1), np.moveaxis(weight, 0, -1))


def balance(target, mask):
    """Loss weights that give cut (0) and uncut (1) edges half the weight each, per channel.

    Of the edges in ``mask``, each of the ``n0`` cut ones gets ``n / (2 n0)`` and each of the
    ``n1`` uncut ones ``n / (2 n1)`` (n = n0 + n1); a channel with only one kind gets 1 for
    all; edges outside ``mask`` get 0 (Lee et al. 2017's class rebalancing).

    Parameters
    ----------
    target : numpy.ndarray
        (3, z, y, x) affinities in {0, 1}.
    mask : numpy.ndarray
        (3, z, y, x) bool, the edges that count.

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) float32.
    """
    weight = np.zeros(target.shape, dtype=np.float32)
    for d in range(len(target)):
        edges = mask[d]
        cut = edges & (target[d] < 0.5)
        n, n0 = int(edges.sum()), int(cut.sum())
        if n == 0:
            continue
        if n0 in (0, n):
            weight[d][edges] = 1.0
            continue
        weight[d][cut] = n / (2 * n0)
        weight[d][edges & ~cut] = n / (2 * (n - n0))
    return weight


def batch(volumes, crop, size, seed, step, augment=True, balanced=True):
    """The batch of training step ``step``: ``size`` samples from :func:`step_rng`, each from
    one of ``volumes`` ((em, labels) pairs) drawn in proportion to its voxels.

    Returns
    -------
    (x, target, weight) stacked on a leading batch axis.
    """
    rng = step_rng(seed, step)
    sizes = np.array([em.size for em, _ in volumes], dtype=np.float64)
    picks = rng.choice(len(volumes), size=size, p=sizes / sizes.sum())
    samples = [sample(*volumes[i], crop, rng, augment, balanced) for i in picks]
    return tuple(np.stack(parts) for parts in zip(*samples))

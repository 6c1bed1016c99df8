"""trainer.classic_loss: exact values on tiny arrays, and what --pos_weight does to the
minimiser (the documented meaning of an output of 0.5)."""

import numpy as np
import pytest

from imagetranslation.trainer import classic_loss

tf = pytest.importorskip("tensorflow")

# Outputs and targets in the model's range [-1, 1]; targets -1 (black), 1 (white), 0 (grey).
OUTPUT = np.array([[-1.0, 0.0, 1.0, 0.5, -0.5]], np.float32)
TARGET = np.array([[-1.0, 1.0, 1.0, -1.0, 0.0]], np.float32)


def _loss(kind, weight=1.0):
    return float(classic_loss(kind, tf.constant(OUTPUT), tf.constant(TARGET),
                              pos_weight=weight))


def test_weighted_losses_by_hand():
    # Per-pixel weights 1 + (w - 1) x target in [0, 1]: w = 3 gives 1, 3, 3, 1, 2.
    weights = np.array([1, 3, 3, 1, 2])
    square = np.array([0, 1, 0, 2.25, 0.25])
    hinge = np.array([0, 1, 0, 1.5, 0.5])
    assert _loss("square") == pytest.approx(square.mean())
    assert _loss("square", 3.0) == pytest.approx((weights * square).mean())
    assert _loss("hinge") == pytest.approx(hinge.mean())
    assert _loss("hinge", 3.0) == pytest.approx((weights * hinge).mean())
    p = np.clip((OUTPUT[0] + 1) / 2, 1e-12, 1 - 1e-7)
    t = (TARGET[0] + 1) / 2
    logistic = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert _loss("logistic") == pytest.approx(logistic.mean(), rel=1e-5)
    assert _loss("logistic", 3.0) == pytest.approx((weights * logistic).mean(), rel=1e-5)
    # Dice has no weights (options.check_values refuses a weight for it).
    # p = 0, .5, 1, .75, .25 and t = 0, 1, 1, 0, .5: sum p t 1.625, sum p 2.5, sum t 2.5.
    assert _loss("dice", 1.0) == pytest.approx(1 - (2 * 1.625 + 1) / (2.5 + 2.5 + 1))


@pytest.mark.parametrize("kind", ["square", "logistic"])
@pytest.mark.parametrize("weight", [1.0, 1.6, 4.0])
def test_pos_weight_moves_the_minimiser_as_documented(kind, weight):
    """For a pixel that is white with probability q, the constant output minimising the
    weighted loss is w q / (w q + 1 - q): 0.5 where q = 1 / (1 + w)."""
    q = 0.3
    targets = tf.constant(np.r_[np.ones(3), -np.ones(7)].astype(np.float32))
    grid = np.linspace(0.001, 0.999, 999)
    losses = [float(classic_loss(kind, tf.fill([10], np.float32(2 * y - 1)), targets,
                                 pos_weight=weight)) for y in grid]
    expected = weight * q / (weight * q + 1 - q)
    assert grid[int(np.argmin(losses))] == pytest.approx(expected, abs=0.002)


def test_gan_losses_by_hand():
    """trainer.gan_losses on two discriminator outputs of two patches each, computed by hand."""
    from imagetranslation.losses import EPS, gan_losses

    real = tf.constant([[0.8, 0.5]], tf.float32)
    fake = tf.constant([[0.25, 0.5]], tf.float32)
    gen, disc = (float(v) for v in gan_losses("log", real, fake))
    # log: generator -mean(log fake); discriminator -mean(log real + log(1 - fake)).
    assert gen == pytest.approx(-(np.log(0.25) + np.log(0.5)) / 2, rel=1e-6)
    assert gen == pytest.approx(1.0397208, rel=1e-6)
    assert disc == pytest.approx(-(np.log(0.8) + np.log(0.75) + np.log(0.5) + np.log(0.5)) / 2,
                                 rel=1e-6)
    assert disc == pytest.approx(0.9485600, rel=1e-6)
    # least squares: generator mean((fake - 1)^2); discriminator mean((real - 1)^2 + fake^2) / 2.
    gen, disc = (float(v) for v in gan_losses("square", real, fake))
    assert gen == pytest.approx((0.5625 + 0.25) / 2, rel=1e-6)  # 0.40625
    assert disc == pytest.approx(0.5 * ((0.04 + 0.0625) + (0.25 + 0.25)) / 2, rel=1e-6)  # 0.150625
    # EPS keeps a certain discriminator finite: -log(0 + EPS) = 27.63...
    gen, disc = (float(v) for v in gan_losses("log", tf.constant([1.0]), tf.constant([0.0])))
    assert gen == pytest.approx(-np.log(EPS), rel=1e-5) and np.isfinite(disc)
    assert disc == pytest.approx(-np.log(1 + EPS) - np.log(1 + EPS), abs=1e-6)

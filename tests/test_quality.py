"""Per-network quality: pixel and boundary precision / recall / F1, exact on tiny images."""

import numpy as np
import pytest
from scipy import ndimage

from neuron3d.metrics import boundary_scores, pixel_scores
from neuron3d.report import prediction_quality


def line_case():
    true = np.zeros((1, 5, 5), bool)
    true[0, :, 2] = True  # a vertical membrane, 5 pixels
    pred = np.zeros((1, 5, 5), bool)
    pred[0, :, 3] = True  # found one pixel to the right
    pred[0, 0, 0] = True  # and a false pixel two columns away from it
    return pred, true


def test_pixel_scores_exact():
    pred, true = line_case()
    assert pixel_scores(pred, true) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    pred[0, 1, 2] = True  # one hit of 7 predicted, 1 of 5 true
    got = pixel_scores(pred, true)
    assert got["precision"] == 1 / 7 and got["recall"] == 1 / 5
    assert got["f1"] == pytest.approx(2 * (1 / 7) * (1 / 5) / (1 / 7 + 1 / 5))
    empty = np.zeros((2, 3), bool)
    assert pixel_scores(empty, empty) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_boundary_scores_exact():
    pred, true = line_case()
    one = boundary_scores(pred, true, 1)
    assert one["precision"] == 5 / 6 and one["recall"] == 1.0  # (0, 0) is 2 px from the line
    assert one["f1"] == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert boundary_scores(pred, true, 2)["precision"] == 1.0
    assert boundary_scores(pred, true, 0)["f1"] == 0.0  # tolerance 0 is the pixel score
    with pytest.raises(ValueError, match="tolerance must be >= 0 pixels, got -1"):
        boundary_scores(pred, true, -1)
    with pytest.raises(ValueError, match=r"shape \(1, 5, 5\), ground truth \(5, 5\)"):
        boundary_scores(pred, true[0], 1)


def test_boundary_scores_against_dilation(rng=np.random.default_rng(0)):
    """Cross-check on random masks: within 1 pixel (Euclidean) is scipy's binary dilation by
    the 4-connected cross, slice by slice."""
    pred = rng.random((3, 40, 50)) < 0.05
    true = rng.random((3, 40, 50)) < 0.05
    got = boundary_scores(pred, true, 1)
    cross = ndimage.generate_binary_structure(2, 1)[None]
    near_true = ndimage.binary_dilation(true, structure=cross)
    near_pred = ndimage.binary_dilation(pred, structure=cross)
    assert got["precision"] == np.count_nonzero(pred & near_true) / np.count_nonzero(pred)
    assert got["recall"] == np.count_nonzero(true & near_pred) / np.count_nonzero(true)


def test_prediction_quality_threshold_at_half():
    true = np.zeros((1, 4, 4), np.uint8)
    true[0, :, 1] = 255
    pred = np.zeros((1, 4, 4), np.uint8)
    pred[0, :, 1] = [127, 128, 200, 255]  # 127 is below 0.5 of 255, 128 above
    got = prediction_quality(pred, true, membrane=True)
    assert got["precision"] == 1.0 and got["recall"] == 0.75
    assert got["boundary_1px"]["recall"] == 1.0 and got["boundary_2px"]["tolerance"] == 2
    assert "boundary_1px" not in prediction_quality(pred, true)

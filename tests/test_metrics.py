"""Scores: exact against sklearn / skimage / a naive formula, hand-computed splits and merges."""

from collections import Counter

import numpy as np
import pytest
from conftest import random_labels
from skimage.metrics import variation_of_information
from sklearn.metrics import adjusted_rand_score

from neuron3d.metrics import contingency, evaluate
from neuron3d.reconstruct import evaluation_volume


def naive_adapted_rand(true, pred):
    """GUIDE §3's formula written out directly with a Counter of voxel pairs."""
    true, pred = true.ravel().tolist(), pred.ravel().tolist()
    n = len(true)
    pairs = Counter(zip(true, pred))
    rows, cols, c, sum_p2 = Counter(), Counter(), Counter(), 0
    for (i, j), count in pairs.items():
        if i == 0:
            continue
        rows[i] += count
        if j == 0:
            c[i] += count
        else:
            cols[j] += count
            sum_p2 += count * count
    A = sum(v * v for v in rows.values())
    B = sum(v * v for v in cols.values()) + sum(c.values()) / n
    AB = sum_p2 + sum(c.values()) / n
    precision, recall = AB / B, AB / A
    return 1 - 2 * precision * recall / (precision + recall), precision, recall


def _cases():
    rng = np.random.default_rng(42)
    for k in range(6):
        shape = (int(rng.integers(1, 6)), int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        true = random_labels(rng, shape, int(rng.integers(2, 30)))
        pred = random_labels(rng, shape, int(rng.integers(2, 30)))
        # Make the prediction related to the truth for half of the cases.
        if k % 2:
            pred = np.where(rng.random(shape) < 0.8, true * 3 + 1, pred).astype(np.uint64)
        yield true, pred


@pytest.mark.parametrize("case", list(range(6)))
def test_scores_match_references(case):
    true, pred = list(_cases())[case]
    scores = evaluate(true, pred)
    assert abs(scores["adjusted_rand_index"] - adjusted_rand_score(true.ravel(), pred.ravel())) < 1e-12
    fg = true > 0
    split, merge = variation_of_information(true[fg], pred[fg])
    assert scores["voi_split"] == pytest.approx(split, abs=1e-9)
    assert scores["voi_merge"] == pytest.approx(merge, abs=1e-9)
    error, precision, recall = naive_adapted_rand(true, pred)
    assert scores["adapted_rand_error"] == pytest.approx(error, abs=1e-12)
    assert scores["adapted_rand_precision"] == pytest.approx(precision, abs=1e-12)
    assert scores["adapted_rand_recall"] == pytest.approx(recall, abs=1e-12)
    tp = np.sum(fg & (pred > 0))
    assert scores["recall"] == pytest.approx(tp / fg.sum())
    assert scores["precision"] == pytest.approx(tp / np.sum(pred > 0))
    assert scores["true_objects"] == len(np.unique(true[fg]))


def test_splits_merges_by_hand_with_the_ten_voxel_cut():
    true = np.zeros((1, 10, 10), np.uint32)
    pred = np.zeros((1, 10, 10), np.uint32)
    true[0, :5] = 1            # 50 voxels
    true[0, 5:] = 2            # 50 voxels
    pred[0, :5, :4] = 7        # 20 voxels of true 1
    pred[0, :5, 4:] = 8        # 30 voxels of true 1  -> true 1 split once
    pred[0, 5:, :] = 8         # true 2 merged with true 1's piece 8
    pred[0, 5, 0] = 9          # 1 voxel: below the cut, ignored
    pred[0, 6, :] = 9          # now 11 voxels of true 2 with 9 -> counts (> 10)
    scores = evaluate(true, pred)
    # rows: true 1 -> {7: 20, 8: 30} = 1 split; true 2 -> {8: 38, 9: 11} = 1 split
    # cols: 8 -> {1: 30, 2: 38} = 1 merge
    assert (scores["splits"], scores["merges"]) == (2, 1)
    pred[0, 6, 0] = 8          # 9 -> 10 voxels: dropped (10 or fewer)
    assert (evaluate(true, pred)["splits"], evaluate(true, pred)["merges"]) == (1, 1)
    assert evaluate(true, pred, min_overlap=0)["splits"] == 2
    # Background (0) rows and columns never count.
    assert evaluate(np.zeros_like(true), pred)["splits"] == 0


def test_edge_cases():
    one = np.ones((1, 1, 1), np.uint8)
    scores = evaluate(one, one)
    assert scores["adjusted_rand_index"] == 1.0 and scores["adapted_rand_error"] == 0.0
    empty = np.zeros((2, 3, 3), np.uint8)
    assert evaluate(empty, empty)["splits"] == 0
    with pytest.raises(ValueError, match=r"shapes differ: true \(1, 1, 1\), predicted \(2, 3, 3\)"):
        contingency(one, empty)


def test_many_labels_sparse_path():
    rng = np.random.default_rng(5)
    true = rng.integers(0, 70000, (4, 100, 100)).astype(np.uint64) * 2**33
    pred = rng.integers(0, 70000, (4, 100, 100)).astype(np.uint32)
    scores = evaluate(true, pred)
    assert abs(scores["adjusted_rand_index"] - adjusted_rand_score(true.ravel(), pred.ravel())) < 1e-12


def test_real_evaluation_volume_scores_perfectly_against_itself(gala_labels):
    volume = evaluation_volume(gala_labels)
    scores = evaluate(volume, volume)
    assert scores["adjusted_rand_index"] == 1.0 and scores["splits"] == scores["merges"] == 0
    vs_truth = evaluate(gala_labels, volume)
    assert vs_truth["merges"] == 0  # the evaluation volume never joins two neurons
    assert abs(vs_truth["adjusted_rand_index"]
               - adjusted_rand_score(gala_labels.ravel(), volume.ravel())) < 1e-12

"""Scores: exact against sklearn / skimage / a naive formula, hand-computed splits and merges."""

import re
from collections import Counter

import numpy as np
import pytest
from conftest import random_labels
from skimage.metrics import adapted_rand_error, variation_of_information
from sklearn.metrics import adjusted_rand_score

from neuron3d.metrics import adapted_rand, contingency, evaluate, evaluate_references
from neuron3d.reconstruct import evaluation_volume


def naive_adapted_rand(true, pred):
    """The SNEMI3D formula (see adapted_rand's Notes) written out with a Counter of voxel pairs.

    It transcribes the same formula as the implementation; the definition itself is
    pinned independently by the hand case and the scikit-image comparison below.
    """
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
    with pytest.raises(ValueError, match=r"shapes differ: predicted p\.tif is \(2, 3, 3\), "
                                         r"true t\.tif is \(1, 1, 1\)"):
        contingency(one, empty, "t.tif", "p.tif")


@pytest.mark.parametrize("shape", [(0, 4, 4), (2, 0, 3), (0, 0, 0)])
def test_zero_size_volumes_are_refused(shape):
    empty = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=r"no voxels to score: predicted p\.tif and true t\.tif "
                                         r"have shape " + re.escape(str(shape))):
        evaluate(empty, empty, true_source="t.tif", pred_source="p.tif")


@pytest.mark.parametrize("bad", [-1, 2.5, None])
def test_min_overlap_is_checked_by_the_library(bad):
    one = np.ones((1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match=f"min_overlap must be a whole number >= 0, got {bad!r}"):
        evaluate(one, one, min_overlap=bad)


def test_adapted_rand_hand_case_predicted_zero():
    # 4 voxels of one true neuron, all predicted 0.  SNEMI3D's script: A = 4^2 = 16,
    # B = AB = 0 + (sum_i c_i) / n = 4 / 4 = 1 -> precision 1, recall 1/16, F1 = 2/17.
    # (Counting predicted 0 as 4 singletons would give recall 4/16 = 1/4 instead.)
    true = np.ones((1, 2, 2), np.uint8)
    pred = np.zeros((1, 2, 2), np.uint8)
    scores = adapted_rand(contingency(true, pred))
    assert scores["precision"] == 1.0
    assert scores["recall"] == 1 / 16
    assert scores["error"] == pytest.approx(15 / 17, abs=1e-15)
    # The same voxels predicted as 4 singletons (no predicted 0): recall 4/16.
    singles = np.arange(1, 5, dtype=np.uint8).reshape(1, 2, 2)
    scores = adapted_rand(contingency(true, singles))
    assert (scores["precision"], scores["recall"]) == (1.0, 0.25)
    assert scores["error"] == pytest.approx(1 - 2 * 0.25 / 1.25, abs=1e-15)


def test_adapted_rand_hand_case_with_true_background():
    # Row 0 (true background) is ignored; n still counts all 6 voxels.
    true = np.array([[[1, 1, 2, 2, 0, 0]]], np.uint8)
    pred = np.array([[[5, 5, 5, 0, 5, 7]]], np.uint8)
    # p: (1,5)=2, (2,5)=1; c_2 = 1.  A = 2^2 + 2^2 = 8; B = 3^2 + 1/6; AB = 2^2 + 1^2 + 1/6.
    scores = adapted_rand(contingency(true, pred))
    assert scores["precision"] == pytest.approx((5 + 1 / 6) / (9 + 1 / 6), abs=1e-15)
    assert scores["recall"] == pytest.approx((5 + 1 / 6) / 8, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_adapted_rand_against_scikit_image(seed):
    """scikit-image counts unordered pairs (x * (x - 1)) and swaps precision and recall.

    With no predicted 0 both use the same contingency table, so with N the number of
    voxels with true > 0, A = sum of squared true sizes and B = sum of squared
    predicted sizes (computed here with np.unique, independently of neuron3d):
    ours recall = P / A and precision = P / B; skimage precision = (P - N) / (A - N)
    and recall = (P - N) / (B - N).
    """
    rng = np.random.default_rng(seed)
    shape = (3, 30, 27)
    true = random_labels(rng, shape, 6)                      # includes true 0 (ignored)
    pred = np.where(rng.random(shape) < 0.7, true + 1, random_labels(rng, shape, 9) + 1)
    assert (pred > 0).all()
    ours = adapted_rand(contingency(true, pred))
    sk_error, sk_precision, sk_recall = adapted_rand_error(true, pred)
    fg = true > 0
    n = int(fg.sum())
    a = float((np.unique(true[fg], return_counts=True)[1].astype(float) ** 2).sum())
    b = float((np.unique(pred[fg], return_counts=True)[1].astype(float) ** 2).sum())
    p = ours["recall"] * a
    assert (p - n) / (a - n) == pytest.approx(sk_precision, abs=1e-12)   # swapped:
    assert (ours["precision"] * b - n) / (b - n) == pytest.approx(sk_recall, abs=1e-12)
    assert ours["precision"] * b == pytest.approx(p, rel=1e-12)  # the same P
    # Swapped, and close for large segments (the -N terms are small): ours recall is
    # near skimage's precision, not its recall.
    assert abs(ours["recall"] - sk_precision) < abs(ours["recall"] - sk_recall)
    assert abs(ours["precision"] - sk_recall) < abs(ours["precision"] - sk_precision)


def test_evaluate_references_scores_both_side_by_side():
    true_labels = np.array([[[1, 1, 2, 2]]], np.uint8)
    evaluation = np.array([[[1, 0, 0, 2]]], np.uint8)       # membranes as 0
    pred = np.array([[[3, 3, 4, 4]]], np.uint8)
    both = evaluate_references(pred, {"true": (evaluation, "evaluate_c.tif"),
                                      "labels": (true_labels, "label_c.tif")})
    assert list(both) == ["true", "labels"]
    assert both["labels"]["adapted_rand_error"] == 0.0
    assert both["labels"] == evaluate(true_labels, pred)
    assert both["true"] == evaluate(evaluation, pred)
    assert both["true"]["precision"] == 0.5  # foreground precision: 2 of 4 predicted
    with pytest.raises(ValueError, match=r"predicted p\.tif is \(1, 1, 4\), true label_c\.tif "
                                         r"is \(1, 1, 3\)"):
        evaluate_references(pred, {"true": (evaluation, "e.tif"),
                                   "labels": (true_labels[..., :3], "label_c.tif")},
                            pred_source="p.tif")


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

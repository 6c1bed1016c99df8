"""neuron3d.agglomerate: affinities, fragments, waterz agglomeration."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from neuron3d import agglomerate as A
from neuron3d import labels as L
from neuron3d.metrics import evaluate
from neuron3d.reconstruct import evaluation_volume
from neuron3d.sweep import fragments_option
from neuron3d.synthetic import synthetic_labels
from tests.conftest import shared_file


def median_score(boundary):
    """The median score waterz gives a boundary of constant membrane value ``boundary``."""
    affinity_bin = np.floor((1 - np.float32(boundary)) * A.BINS)
    return 1 - (affinity_bin + 0.5) / A.BINS


def two_cells(value, width=12, height=6, depth=1):
    """Two cells side by side, a 2-pixel membrane of ``value`` between them (columns 5, 6)."""
    membrane = np.zeros((depth, height, width), dtype=np.float32)
    membrane[:, :, 5:7] = value
    return membrane, np.zeros((depth - 1, height, width), dtype=np.float32)


def perfect_inputs(labels):
    mask = L.membrane(labels)
    return mask.astype(np.float32), L.overlap(labels, mask).astype(np.float32)


# ---- affinities and fragments ------------------------------------------------------------


def test_affinities_follow_waterz_layout():
    membrane = np.array([[[0.0, 0.5], [0.25, 1.0]], [[1.0, 0.0], [0.0, 0.0]]], np.float32)
    overlap = np.array([[[0.75, 0.0], [1.0, 0.5]]], np.float32)
    affs = A.affinities(membrane, overlap)
    assert affs.shape == (3, 2, 2, 2) and affs.dtype == np.float32 and affs.flags.c_contiguous
    # channel 0: (z, y, x) to (z - 1, y, x) = overlap[z - 1]
    np.testing.assert_array_equal(affs[0, 0], 0)
    np.testing.assert_array_equal(affs[0, 1], overlap[0])
    # channel 1: (z, y, x) to (z, y - 1, x); channel 2: (z, y, x) to (z, y, x - 1)
    np.testing.assert_array_equal(affs[1, :, 0], 0)
    np.testing.assert_array_equal(affs[1, :, 1], [[0.75, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(affs[2, :, :, 0], 0)
    np.testing.assert_array_equal(affs[2, :, :, 1], [[0.5, 0.0], [0.0, 1.0]])


def test_affinities_accept_uint8_and_a_full_overlap_folder():
    rng = np.random.default_rng(1)
    membrane = rng.integers(0, 256, (3, 5, 4)).astype(np.uint8)
    overlap = rng.integers(0, 256, (3, 5, 4)).astype(np.uint8)  # z slices: the last ignored
    expected = A.affinities(membrane / np.float32(255), overlap[:2] / np.float32(255))
    np.testing.assert_array_equal(A.affinities(membrane, overlap), expected)


def test_fragments_are_dense_unique_per_slice_and_ordered():
    labels = synthetic_labels((4, 64, 64), seed=3)
    membrane, _ = perfect_inputs(labels)
    membrane[2] = 1.0  # a slice that is all membrane is one fragment
    frags = A.fragments(membrane)
    assert frags.dtype == np.uint64 and frags.min() == 1
    ids = [np.unique(f) for f in frags]
    assert len(ids[2]) == 1
    for lower, upper in zip(ids, ids[1:]):
        assert lower.max() < upper.min()
    np.testing.assert_array_equal(np.concatenate(ids), np.arange(1, frags.max() + 1))


def test_fragments_workers_do_not_change_the_result():
    membrane, _ = perfect_inputs(synthetic_labels((6, 48, 48), seed=2))
    np.testing.assert_array_equal(A.fragments(membrane, workers=1),
                                  A.fragments(membrane, workers=3))


def test_every_low_membrane_region_gets_a_seed():
    # 1-pixel cells on a membrane grid: no maximum-filter peak in most of them
    membrane = np.ones((1, 9, 9), np.float32)
    membrane[0, 1::2, 1::2] = 0
    frags = A.fragments(membrane)
    assert frags.max() == 16
    assert len(np.unique(frags[0, 1::2, 1::2])) == 16


# ---- tiny hand-made volumes ---------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["median", "mean"])
def test_two_touching_cells_merge_above_their_boundary_score(scoring):
    value = 0.625
    membrane, overlap = two_cells(value)
    score = median_score(value) if scoring == "median" else value
    below, above = A.agglomerate(membrane, overlap, [score - 0.005, score + 0.005],
                                 scoring=scoring)
    assert set(np.unique(below[0, :, :5])) == {1}
    assert set(np.unique(below[0, :, 7:])) == {2}
    assert below.max() == 2
    np.testing.assert_array_equal(above, 1)
    assert above.dtype == np.uint16


def test_a_neuron_linked_through_z_only_by_its_overlap():
    # two slices, each a left and a right cell split by a membrane; the overlap links
    # the left cells (on their cytoplasm only, as the overlap image is 0 on membranes)
    membrane, _ = two_cells(1.0, depth=2)
    overlap = np.zeros((1, 6, 12), np.float32)
    overlap[0, :, :5] = 1.0
    result = A.agglomerate(membrane, overlap, 0.5)[0]
    left, right = result[:, :, :5], result[:, :, 7:]
    assert len(np.unique(left)) == 1
    assert len(np.unique(right[0])) == 1 and len(np.unique(right[1])) == 1
    assert right[0, 0, 0] != right[1, 0, 0] != left[0, 0, 0] != right[0, 0, 0]
    assert result.max() == 3


def test_neurons_stacked_in_z_without_overlap_stay_apart():
    membrane = np.zeros((2, 5, 5), np.float32)
    overlap = np.zeros((1, 5, 5), np.float32)
    for result in A.agglomerate(membrane, overlap, [0.5, 0.99]):
        np.testing.assert_array_equal(result[0], 1)
        np.testing.assert_array_equal(result[1], 2)


def test_the_membrane_rim_does_not_vote_between_slices():
    # a thin neurite (column 4) between 2-pixel membranes, the same in both slices; its
    # overlap is 1 on its cytoplasm and 0 on its rim (as the overlap image of perfect
    # labels is); its fragments take half of each membrane, so the rim is 2/3 of them
    membrane = np.zeros((2, 4, 9), np.float32)
    membrane[:, :, 2:4] = membrane[:, :, 5:7] = 1.0
    overlap = np.zeros((1, 4, 9), np.float32)
    overlap[0, :, 4] = 1.0
    frags = A.fragments(membrane)
    np.testing.assert_array_equal(frags[:, :, 3:6], frags[:, :, 4:5].repeat(3, axis=2))
    kept = A.agglomerate(membrane, overlap, 0.5)[0]
    assert kept[0, 0, 4] == kept[1, 0, 4]
    counted = A.agglomerate(membrane, overlap, 0.5, z_threshold=None)[0]
    assert counted[0, 0, 4] != counted[1, 0, 4]


# ---- perfect inputs lose nothing to the representation --------------------------------------


def check_perfect(labels):
    membrane, overlap = perfect_inputs(labels)
    reference = evaluation_volume(labels)
    result = A.agglomerate(membrane, overlap, 0.5)[0]
    assert result.min() == 1
    own = evaluate(labels, reference)["adapted_rand_error"]
    assert evaluate(reference, result)["adapted_rand_error"] <= 0.01
    assert evaluate(labels, result)["adapted_rand_error"] <= own


def test_perfect_synthetic_inputs():
    check_perfect(synthetic_labels((16, 128, 128), seed=0))


def test_perfect_snemi_inputs():
    check_perfect(tifffile.imread(shared_file("snemi-mini", "train-labels.tif")))


def test_perfect_inputs_need_the_rim_rule():
    # the trap: counting the rim's zero overlaps splits thin neurites of perfect inputs
    labels = synthetic_labels((32, 192, 192), seed=0)
    membrane, overlap = perfect_inputs(labels)
    reference = evaluation_volume(labels)
    kept, counted = (A.agglomerate(membrane, overlap, 0.5, z_threshold=z)[0]
                     for z in (0.5, None))
    assert evaluate(reference, kept)["adapted_rand_error"] <= 0.001
    assert evaluate(reference, counted)["adapted_rand_error"] > 0.01


# ---- output contract ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_inputs():
    labels = synthetic_labels((6, 64, 64), seed=5)
    membrane, overlap = perfect_inputs(labels)
    rng = np.random.default_rng(0)
    membrane = np.clip(membrane + rng.normal(0, 0.2, membrane.shape), 0, 1).astype(np.float32)
    overlap = np.clip(overlap + rng.normal(0, 0.2, overlap.shape), 0, 1).astype(np.float32)
    return membrane, overlap


@pytest.mark.parametrize("scoring", sorted(A.SCORINGS))
def test_deterministic_dense_and_thresholds_in_one_call(noisy_inputs, scoring):
    thresholds = [0.7, 0.2, 0.45]
    together = A.agglomerate(*noisy_inputs, thresholds, scoring=scoring)
    again = A.agglomerate(*noisy_inputs, thresholds, scoring=scoring, workers=1)
    assert len(together) == 3
    for threshold, result, repeat in zip(thresholds, together, again):
        assert result.tobytes() == repeat.tobytes() and result.dtype == repeat.dtype
        alone = A.agglomerate(*noisy_inputs, [threshold], scoring=scoring)[0]
        assert alone.tobytes() == result.tobytes()
        ids = np.unique(result)
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # dense, 1..K
        assert result.shape == noisy_inputs[0].shape and result.dtype == np.uint16
    # a higher threshold merges more
    assert together[1].max() >= together[2].max() >= together[0].max()


def test_uint8_inputs_equal_their_probabilities(noisy_inputs):
    membrane, overlap = (np.round(x * 255).astype(np.uint8) for x in noisy_inputs)
    expected = A.agglomerate(membrane / np.float32(255), overlap / np.float32(255), 0.4)[0]
    np.testing.assert_array_equal(A.agglomerate(membrane, overlap, 0.4)[0], expected)


def test_given_fragments_are_used_and_left_alone():
    membrane, overlap = two_cells(0.625, depth=2)
    frags = np.arange(1, 2 * 6 * 12 + 1, dtype=np.uint64).reshape(2, 6, 12)
    before = frags.copy()
    result = A.agglomerate(membrane, overlap, 0.5, fragment_ids=frags)[0]
    np.testing.assert_array_equal(frags, before)
    assert result.max() == 2 * (2 + 12)  # per slice: two cells, 12 membrane pixels alone
    assert len(np.unique(result[0, :, :5])) == 1


def test_given_fragment_ids_may_be_sparse(noisy_inputs):
    frags = A.fragments(noisy_inputs[0])
    compact = A.agglomerate(*noisy_inputs, 0.5, fragment_ids=frags)[0]
    sparse = A.agglomerate(*noisy_inputs, 0.5, fragment_ids=frags * np.uint64(10**12))[0]
    np.testing.assert_array_equal(sparse, compact)
    np.testing.assert_array_equal(A.agglomerate(*noisy_inputs, 0.5)[0], compact)


def test_small_objects():
    labels = np.zeros((2, 10, 10), np.uint32)
    labels[0] = 1  # 100 voxels: not small
    labels[1, :5] = 2  # 50
    labels[1, 5:, :2] = 7  # 10; the rest (40) is background
    assert A.small_objects(labels) == {"objects": 3, "small_objects": 2,
                                       "small_voxel_share": 60 / 200}
    assert A.small_objects(labels, min_size=10)["small_objects"] == 0


def test_more_than_65535_objects_get_uint32():
    membrane = np.ones((1, 512, 512), np.float32)
    membrane[0, 1::2, 1::2] = 0  # 65536 one-pixel cells
    result = A.agglomerate(membrane, np.zeros((0, 512, 512), np.float32), 0.5,
                           scoring="mean")[0]
    assert result.dtype == np.uint32 and result.max() == 65536


def test_scorings_are_prebuilt_in_waterz():
    from waterz._agglomerate import _load_prebuilt

    for name, function in A.SCORINGS.items():
        assert _load_prebuilt(function, 0) is not None, name


def test_waterz_output_is_silenced(capfd):
    A.agglomerate(*two_cells(0.5, depth=2), 0.5)
    assert capfd.readouterr().out == ""


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("membrane_shape", "overlap_shape", "match"), [
    ((3, 4, 4), (1, 4, 4), r"3 membrane slices need 2 overlap slices .* got 1"),
    ((3, 4, 4), (4, 4, 4), r"3 membrane slices need 2 overlap slices .* got 4"),
    ((3, 4, 4), (2, 4, 5), r"membrane slices are 4 x 4 but overlap slices are 4 x 5"),
    ((4, 4), (1, 4, 4), r"membrane must be a 3-D \(z, y, x\) stack, got shape \(4, 4\)"),
    ((0, 4, 4), (0, 4, 4), r"membrane stack has no slices"),
])
def test_inputs_that_disagree(membrane_shape, overlap_shape, match):
    with pytest.raises(ValueError, match=match):
        A.agglomerate(np.zeros(membrane_shape, np.float32), np.zeros(overlap_shape, np.float32),
                      0.5)


@pytest.mark.parametrize(("thresholds", "match"), [
    ([0.5, 1.5], r"merge thresholds must be in \[0, 1\], got 1.5"),
    (-0.1, r"merge thresholds must be in \[0, 1\], got -0.1"),
    ([], r"no merge thresholds given"),
    (["high"], r"thresholds must be numbers in \[0, 1\], got \['high'\]"),
])
def test_bad_thresholds(thresholds, match):
    with pytest.raises(ValueError, match=match):
        A.agglomerate(*two_cells(0.5, depth=2), thresholds)


def test_bad_values_and_options():
    membrane, overlap = two_cells(0.5, depth=2)
    with pytest.raises(ValueError, match=r"unknown scoring 'max'; choose one of median, mean"):
        A.agglomerate(membrane, overlap, 0.5, scoring="max")
    with pytest.raises(ValueError, match=r"membrane must be probabilities in \[0, 1\].* to 2"):
        A.agglomerate(membrane * 4, overlap, 0.5)
    with pytest.raises(ValueError, match=r"overlap must be float in \[0, 1\] or uint8"):
        A.agglomerate(membrane, overlap.astype(np.complex64), 0.5)
    with pytest.raises(ValueError, match=r"z_threshold must be in \(0, 1\] or None, got 0"):
        A.agglomerate(membrane, overlap, 0.5, z_threshold=0)
    with pytest.raises(ValueError, match=r"seed_threshold must be in \(0, 1\], got 0"):
        A.fragments(membrane, seed_threshold=0)
    with pytest.raises(ValueError, match=r"fragments must not contain 0"):
        A.agglomerate(membrane, overlap, 0.5, fragment_ids=np.zeros(membrane.shape, np.uint64))
    with pytest.raises(ValueError, match=r"fragments have shape \(1, 6, 12\), the membrane"):
        A.agglomerate(membrane, overlap, 0.5, fragment_ids=np.ones((1, 6, 12), np.uint64))


# ---- 3-D fragments (fragment_mode="3d", reconstruct3D.py --fragments 3d) --------------------


def test_3d_fragments_keep_a_cell_whole_across_slices():
    # Two cells side by side through three slices and no overlap at all: per slice they are
    # six fragments that nothing links in z; cut in 3-D each cell is one fragment.
    membrane, overlap = two_cells(1.0, depth=3)
    flat = A.fragments(membrane)
    assert flat.max() == 6
    whole = A.fragments(membrane, mode="3d")
    assert whole.dtype == np.uint64 and whole.min() == 1 and whole.max() == 2
    assert len(np.unique(whole[:, :, :5])) == len(np.unique(whole[:, :, 7:])) == 1
    assert whole[0, 0, 0] != whole[0, 0, 11]
    assert A.agglomerate(membrane, overlap, 0.5)[0].max() == 6
    result = A.agglomerate(membrane, overlap, 0.5, fragment_mode="3d")[0]
    np.testing.assert_array_equal(result, whole)  # 1 = the left cell, first seen


def test_3d_fragments_without_a_seed_distance_are_the_26_connected_low_regions():
    # min_distance 0: every pixel below the seed threshold is a seed, so the fragments, on
    # those pixels, are scipy's 26-connected components of them (up to their IDs).
    from scipy import ndimage

    membrane = np.random.default_rng(7).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    frags = A.fragments(membrane, seed_threshold=0.3, min_distance=0, mode="3d")
    mask = membrane < 0.3
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    pairs = np.unique(np.stack([components[mask], frags[mask]]), axis=1)
    assert pairs.shape[1] == count == frags.max()  # one fragment per component, and back
    assert len(np.unique(pairs[1])) == count


def test_3d_fragments_equal_given_ones(noisy_inputs):
    frags = A.fragments(noisy_inputs[0], mode="3d")
    assert frags.max() < A.fragments(noisy_inputs[0]).max()  # they span slices
    np.testing.assert_array_equal(
        A.agglomerate(*noisy_inputs, [0.5], fragment_mode="3d")[0],
        A.agglomerate(*noisy_inputs, [0.5], fragment_ids=frags)[0])


def test_fragment_modes_and_the_flag():
    membrane, overlap = two_cells(0.5, depth=2)
    with pytest.raises(ValueError, match=r"fragments must be one of 2d, 3d, got 'zwatershed'"):
        A.fragments(membrane, mode="zwatershed")
    with pytest.raises(ValueError, match="fragment_ids and fragment_mode are exclusive"):
        A.agglomerate(membrane, overlap, 0.5, fragment_mode="3d",
                      fragment_ids=np.ones(membrane.shape, np.uint64))
    assert fragments_option(None, affinities=False) == "2d"
    assert fragments_option(None, affinities=True) == "3d"
    assert fragments_option("zwatershed", affinities=True) == "zwatershed"
    assert fragments_option("3d", affinities=False) == "3d"
    with pytest.raises(ValueError, match="--fragments zwatershed is for --input_affinities; "
                       "membranes are cut 2d or 3d"):
        fragments_option("zwatershed", affinities=False)

"""Label-image operations: exact values on tiny stacks, cross-checks, real-data invariants."""

import re

import numpy as np
import pytest
from conftest import random_labels
from scipy import ndimage
from skimage.morphology import skeletonize

from neuron3d import labels as L
from neuron3d.reconstruct import evaluation_volume, interleave

# Two hand-made 5 x 5 slices: IDs 1 and 2 side by side over background, then one ID 1.
TINY = np.array(
    [
        [[1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    ],
    dtype=np.uint16,
)
TINY_MEMBRANE = np.array(
    [
        [[0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
    ],
    dtype=bool,
)
TINY_CYTOPLASM = np.array(
    [
        [[1, 1, 0, 0, 1], [1, 1, 0, 0, 1], [0] * 5, [0] * 5, [0] * 5],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0] * 5, [0] * 5, [0] * 5],
    ],
    dtype=bool,
)
TINY_OVERLAP = np.array([[[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0] * 5, [0] * 5, [0] * 5]], dtype=bool)


def test_membrane_cytoplasm_overlap_exact():
    np.testing.assert_array_equal(L.membrane(TINY), TINY_MEMBRANE)
    np.testing.assert_array_equal(L.cytoplasm(TINY), TINY_CYTOPLASM)
    np.testing.assert_array_equal(L.overlap(TINY), TINY_OVERLAP)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.uint64])
def test_membrane_matches_min_max_filter(dtype):
    rng = np.random.default_rng(1)
    labels = random_labels(rng, (4, 37, 29), 7).astype(dtype)
    if dtype == np.uint64:
        labels = labels + np.uint64(2**40)  # beyond 32 bits
    expected = ndimage.minimum_filter(labels, size=(1, 3, 3), mode="reflect") != ndimage.maximum_filter(
        labels, size=(1, 3, 3), mode="reflect"
    )
    np.testing.assert_array_equal(L.membrane(labels), expected)


def test_single_slice_and_one_pixel():
    one = np.array([[[5]]], dtype=np.uint32)
    assert not L.membrane(one).any()
    assert L.cytoplasm(one).all()
    assert L.overlap(one).shape == (0, 1, 1)


def test_overlap_definition_on_random_labels():
    rng = np.random.default_rng(2)
    labels = random_labels(rng, (6, 30, 31), 4)
    mem = L.membrane(labels)
    off = np.where(mem, 0, labels)
    expected = np.stack([(off[z] == off[z + 1]) & (off[z] > 0) for z in range(5)])
    np.testing.assert_array_equal(L.overlap(labels), expected)


def test_consecutive_channels():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    pairs = L.consecutive(images)
    assert pairs.shape == (2, 2, 2, 3) and pairs.dtype == np.uint8
    np.testing.assert_array_equal(pairs[..., 0], images[:-1])
    np.testing.assert_array_equal(pairs[..., 1], images[1:])
    assert not pairs[..., 2].any()


def test_to_uint8_clips_instead_of_wrapping():
    np.testing.assert_array_equal(L.to_uint8(np.array([-5, 300, 128], np.int32)), [0, 255, 128])


def test_eroskele_exact_on_full_image():
    full = np.ones((1, 7, 9), dtype=bool)
    # Outside counts as background: 3 erosions leave row 3, columns 3..5, a line.
    expected = np.zeros_like(full)
    expected[0, 3, 3:6] = True
    np.testing.assert_array_equal(L.eroskele(full, erosions=3), expected)
    assert not L.eroskele(full, erosions=4).any()


def test_eroskele_matches_scipy_and_skimage():
    rng = np.random.default_rng(3)
    masks = ndimage.gaussian_filter(rng.random((3, 60, 70)), (0, 3, 3)) > 0.5
    cross = ndimage.generate_binary_structure(2, 1)
    expected = np.stack(
        [skeletonize(ndimage.binary_erosion(m, cross, iterations=2, border_value=0)) for m in masks]
    )
    np.testing.assert_array_equal(L.eroskele(masks, erosions=2), expected)


def test_split_quadrants_layout_even():
    stack = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    q = L.split_quadrants(stack)
    np.testing.assert_array_equal(q["a"], stack[:, 2:, 3:])
    np.testing.assert_array_equal(q["b"], stack[:, :2, 3:])
    np.testing.assert_array_equal(q["c"], stack[:, :2, :3])
    np.testing.assert_array_equal(q["d"], stack[:, 2:, :3])


def test_split_quadrants_odd_sizes_exact():
    # 5 x 7: h = 2, w = 3; row 4 and column 6 are dropped, all quadrants 2 x 3.
    stack = np.arange(5 * 7).reshape(1, 5, 7)
    # [[ 0  1  2  3  4  5  6]
    #  [ 7  8  9 10 11 12 13]
    #  [14 15 16 17 18 19 20]
    #  [21 22 23 24 25 26 27]
    #  [28 29 30 31 32 33 34]]
    q = L.split_quadrants(stack)
    np.testing.assert_array_equal(q["c"], [[[0, 1, 2], [7, 8, 9]]])
    np.testing.assert_array_equal(q["b"], [[[3, 4, 5], [10, 11, 12]]])
    np.testing.assert_array_equal(q["d"], [[[14, 15, 16], [21, 22, 23]]])
    np.testing.assert_array_equal(q["a"], [[[17, 18, 19], [24, 25, 26]]])
    # 3 x 2 with a channel axis: h = 1, w = 1.
    rgb = np.arange(3 * 2 * 3).reshape(1, 3, 2, 3)
    q = L.split_quadrants(rgb)
    np.testing.assert_array_equal(q["c"], [[[[0, 1, 2]]]])
    np.testing.assert_array_equal(q["b"], [[[[3, 4, 5]]]])
    np.testing.assert_array_equal(q["d"], [[[[6, 7, 8]]]])
    np.testing.assert_array_equal(q["a"], [[[[9, 10, 11]]]])
    assert {v.shape for v in q.values()} == {(1, 1, 1, 3)}


@pytest.mark.parametrize("shape", [(1, 1, 6), (2, 6, 1), (1, 1, 1)])
def test_split_quadrants_refuses_a_dimension_of_one(shape):
    with pytest.raises(ValueError, match=r"cannot split x\.tif into quadrants: height and width "
                       r"must be at least 2, got \d x \d \(shape " + re.escape(str(shape))):
        L.split_quadrants(np.zeros(shape), "x.tif")


@pytest.mark.parametrize("shape,what", [((0, 4, 4), "no slices"), ((2, 0, 4), "empty slices"),
                                        ((2, 4, 0), "empty slices")])
def test_empty_stacks_name_the_source(shape, what):
    empty = np.zeros(shape, np.uint8)
    for function in (L.membrane, L.cytoplasm, L.overlap, L.consecutive, L.eroskele,
                     L.split_quadrants):
        with pytest.raises(ValueError, match=f"{what}.*{re.escape(str(shape))}.*in e\\.tif"):
            function(empty, source="e.tif")
    with pytest.raises(ValueError, match=f"{what}.*e\\.tif"):
        evaluation_volume(empty, source="e.tif")
    with pytest.raises(ValueError, match="must be 3-D.*\\(4, 4\\) from e.tif"):
        L.membrane(np.zeros((4, 4)), source="e.tif")


def test_single_slice_gives_empty_pair_stacks():
    one = np.full((1, 3, 3), 7, np.uint8)
    assert L.consecutive(one).shape == (0, 3, 3, 3)
    assert L.overlap(one).shape == (0, 3, 3)


@pytest.mark.parametrize("erosions", [-1, 1.5, True])
def test_eroskele_refuses_bad_erosions(erosions):
    with pytest.raises(ValueError, match=f"erosions must be a whole number >= 0, got {erosions!r}"):
        L.eroskele(np.ones((1, 3, 3), bool), erosions)


def _check_real_invariants(labels):
    mem = L.membrane(labels)
    cyto = L.cytoplasm(labels, mem)
    over = L.overlap(labels, mem)
    assert not (cyto & mem).any()
    assert cyto.any() and over.any()
    z, y, x = np.nonzero(over)
    assert np.all(labels[z, y, x] == labels[z + 1, y, x])
    assert np.all(labels[z, y, x] > 0)
    assert not (mem[z, y, x] | mem[z + 1, y, x]).any()
    q = L.split_quadrants(labels)
    top = np.concatenate([q["c"], q["b"]], axis=2)
    bottom = np.concatenate([q["d"], q["a"]], axis=2)
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=1), labels)


def _check_evaluation_volume(labels):
    evaluation = evaluation_volume(labels)
    assert evaluation.shape == labels.shape
    fg = evaluation > 0
    # Never joins two ground-truth neurons in one object.
    pairs = np.unique(np.stack([evaluation[fg], labels[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    # Splits a neuron only where its off-membrane voxels are disconnected through the
    # interleaved planes: the object count equals scipy's components touching a cytoplasm plane.
    mem = L.membrane(labels)
    planes = interleave(L.cytoplasm(labels, mem), L.overlap(labels, mem))
    components, _ = ndimage.label(planes)  # 6-connected by default
    expected = np.unique(components[0::2])
    assert int(evaluation.max()) == len(expected[expected > 0])
    np.testing.assert_array_equal(fg, L.cytoplasm(labels))


def test_real_snemi_invariants(snemi_labels):
    _check_real_invariants(snemi_labels)
    _check_evaluation_volume(snemi_labels)


def test_real_gala_invariants(gala_labels):
    _check_real_invariants(gala_labels)
    _check_evaluation_volume(gala_labels)


# ---- the conventions, defined once ------------------------------------------------------

@pytest.mark.parametrize("count, dtype", [
    (0, np.uint16), (1, np.uint16), (65535, np.uint16), (65536, np.uint32),
    (2**32 - 1, np.uint32), (2**32, np.uint64), (np.int64(70000), np.uint32),
])
def test_label_dtype_at_least_16_bits(count, dtype):
    assert L.label_dtype(count) == np.dtype(dtype)
    assert L.label_dtype(count) == L.smallest_uint(max(int(count), 65535))


def test_smallest_uint_and_its_limit():
    assert [L.smallest_uint(v) for v in (0, 255, 256, 65536)] == [
        np.uint8, np.uint8, np.uint16, np.uint32]
    with pytest.raises(ValueError, match="label 18446744073709551616 does not fit in uint64"):
        L.smallest_uint(2**64)


def test_foreground_level_is_the_thesis_127():
    from neuron3d import io

    assert L.FOREGROUND == 127 and L.HALF == 128
    assert io.read_binary.__defaults__ == (127, "input") and io.smallest_uint is L.smallest_uint


def test_read_binary_splits_at_127(tmp_path):
    from neuron3d import io

    io.write_slices(tmp_path / "s", np.array([[[0, 126, 127, 128, 255]]], np.uint8))
    np.testing.assert_array_equal(io.read_binary(tmp_path / "s"), [[[0, 0, 1, 1, 1]]])

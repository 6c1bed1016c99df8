"""neuron3d.affinity: label affinities, boundary maps, fragments and the agglomeration of
predicted affinities (reconstruct3D.py --input_affinities, neuron3d.sweep --input_affinities)."""

import json

import numpy as np
import pytest
import tifffile

from neuron3d.affinity import (
    FRAGMENTS,
    affinity_quality,
    agglomerate_affinities,
    boundary_f1,
    boundary_map,
    check_affinities,
    edge_mask,
    label_affinities,
    read_affinities,
)


def test_label_affinities_by_hand():
    labels = np.array([[[1, 1, 2],
                        [1, 0, 2]],
                       [[1, 3, 3],
                        [1, 3, 2]]])
    affs = label_affinities(labels)
    assert affs.dtype == np.float32 and affs.shape == (3, 2, 2, 3)
    # z: (1, y, x) against (0, y, x)
    assert affs[0, 0].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert affs[0, 1].tolist() == [[1, 0, 0], [1, 0, 1]]
    # y: (z, 1, x) against (z, 0, x); label 0 has no affinity, not even to itself
    assert affs[1, :, 0].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert affs[1, :, 1].tolist() == [[1, 0, 1], [1, 1, 0]]
    # x: (z, y, 1) against (z, y, 0), (z, y, 2) against (z, y, 1)
    assert affs[2].tolist() == [[[0, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 0]]]


def test_label_affinities_match_a_shift_on_random_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(5, 6, 7))
    affs = label_affinities(labels)
    for axis in range(3):
        shifted = np.roll(labels, 1, axis=axis)
        expected = (labels == shifted) & (labels != 0)
        index = [slice(None)] * 3
        index[axis] = 0
        expected[tuple(index)] = False
        assert np.array_equal(affs[axis].astype(bool), expected)


def test_edge_mask_leaves_out_the_first_plane_of_each_axis():
    mask = edge_mask((2, 3, 4))
    assert mask.sum() == 1 * 3 * 4 + 2 * 2 * 4 + 2 * 3 * 3
    assert not mask[0, 0].any() and not mask[1, :, 0].any() and not mask[2, :, :, 0].any()


def test_boundary_map_by_hand():
    affs = np.ones((3, 1, 1, 3), dtype=np.float32)
    affs[2, 0, 0, 2] = 0.25  # between x = 1 and x = 2
    assert boundary_map(affs, "2d").tolist() == [[[0.0, 0.75, 0.75]]]
    affs = np.ones((3, 2, 1, 1), dtype=np.float32)
    affs[0, 1] = 0.5
    assert boundary_map(affs, "2d").ravel().tolist() == [0, 0]
    assert boundary_map(affs, "3d").ravel().tolist() == [0.5, 0.5]


def _blocks():
    """Four 3-D boxes of 6 x 8 x 8 voxels in a 6 x 16 x 16 volume, and a fifth split off in
    z: labels without background."""
    labels = np.zeros((6, 16, 16), dtype=np.uint16)
    labels[:, :8, :8], labels[:, :8, 8:], labels[:, 8:, :8], labels[:, 8:, 8:] = 1, 2, 3, 4
    labels[3:, 8:, 8:] = 5
    return labels


def _same_partition(a, b):
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("mode", FRAGMENTS)
def test_perfect_affinities_give_back_the_labels(mode):
    labels = _blocks()
    (result,) = agglomerate_affinities(label_affinities(labels), [0.5], mode=mode,
                                       min_distance=1)
    assert _same_partition(result, labels)
    assert result.min() == 1 and result.max() == 5


def test_zwatershed_on_perfect_affinities_is_6_connected_components_of_each_label():
    import cc3d

    rng = np.random.default_rng(0)
    coarse = rng.integers(1, 4, size=(3, 5, 5)).astype(np.uint16)  # many pieces, none of 1 voxel
    labels = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    (result,) = agglomerate_affinities(label_affinities(labels), [0.5], mode="zwatershed")
    assert _same_partition(result, cc3d.connected_components(labels, connectivity=6))


def test_a_voxel_without_affinities_joins_a_neighbouring_fragment():
    labels = _blocks()
    labels[2, 3, 3] = 9  # a single voxel: no affinity to any neighbour
    (result,) = agglomerate_affinities(label_affinities(labels), [0.5], mode="zwatershed")
    assert result.min() == 1 and result.max() == 5
    assert result[2, 3, 3] == result[0, 0, 0]


def test_higher_thresholds_merge_more_and_every_voxel_is_labelled():
    labels = _blocks()
    affs = label_affinities(labels)
    affs[0, 3, 8:, 8:] = 0.7  # a weak z boundary between 4 and 5
    affs[2, :, :8, 8] = 0.2  # a strong one between 1 and 2
    low, mid, high = agglomerate_affinities(affs, [0.1, 0.5, 0.9])
    assert [int(v.max()) for v in (low, mid, high)] == [5, 4, 3]
    assert (mid[:3, 8:, 8:] == mid[3:, 8:, 8:][0, 0, 0]).all()  # 4 and 5 merged at 0.5
    assert len(np.unique(high[:, :8])) == 1  # 1 and 2 merged at 0.9


def test_uint8_affinities_are_scaled():
    labels = _blocks()
    as_uint8 = (label_affinities(labels) * 255).astype(np.uint8)
    assert np.array_equal(check_affinities(as_uint8), label_affinities(labels))
    (result,) = agglomerate_affinities(as_uint8, [0.5])
    assert _same_partition(result, labels)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 4, 4)), r"\(3, z, y, x\) affinity stack"),
    (np.zeros((3, 4, 4)), r"\(3, z, y, x\) affinity stack"),
    (np.full((3, 2, 4, 4), 1.5), r"in \[0, 1\]"),
])
def test_bad_affinities_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        agglomerate_affinities(bad, [0.5])


def test_unknown_fragments_and_thresholds_are_refused():
    affs = label_affinities(_blocks())
    with pytest.raises(ValueError, match="fragments must be one of"):
        agglomerate_affinities(affs, [0.5], mode="4d")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        agglomerate_affinities(affs, [1.5])


def test_boundary_f1_by_hand():
    target = np.ones((3, 1, 1, 4), dtype=np.float32)
    target[2, 0, 0, 2] = 0  # one cut edge
    predicted = np.ones_like(target)
    predicted[2, 0, 0, 2] = predicted[2, 0, 0, 3] = 0.2  # it, and one false cut
    predicted[2, 0, 0, 0] = 0  # no predecessor: not an edge
    assert boundary_f1(predicted, target) == pytest.approx(2 / 3)
    assert boundary_f1(target, target) == 1.0
    assert boundary_f1(np.ones_like(target), np.ones_like(target)) == 1.0
    quality = affinity_quality(label_affinities(_blocks()), _blocks())
    assert quality == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_z": 1.0, "f1_y": 1.0,
                       "f1_x": 1.0}
    labels = np.array([[[1, 1, 2, 2]]])
    predicted = np.ones((3, 1, 1, 4), dtype=np.float32)
    predicted[2, 0, 0, 1] = 0.4  # a false cut; the true one (x = 2) is missed
    quality = affinity_quality(predicted, labels)
    assert (quality["precision"], quality["recall"], quality["f1"]) == (0.0, 0.0, 0.0)


def test_read_affinities_takes_channels_last(tmp_path):
    affs = label_affinities(_blocks())
    path = tmp_path / "affs.tif"
    tifffile.imwrite(path, np.moveaxis((affs * 255).astype(np.uint8), 0, -1))
    assert np.array_equal(read_affinities(path), affs)
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"flat.tif must be a \(z, y, x, 3\) affinity stack"):
        read_affinities(tmp_path / "flat.tif")


def test_reconstruct_and_sweep_read_affinities(tmp_path, capsys):
    import reconstruct3D
    from neuron3d import sweep

    labels = _blocks()
    affs = label_affinities(labels)
    affs[0, 3, 8:, 8:] = 0.7  # 4 and 5 merge above 0.3
    stack = tmp_path / "affs.tif"
    tifffile.imwrite(stack, np.moveaxis(np.rint(affs * 255).astype(np.uint8), 0, -1))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert sweep.main(["--input_affinities", str(stack), "--labels", str(tmp_path / "labels.tif"),
                       "--fragments", "zwatershed", "--thresholds", "0.1", "0.5",
                       "--output", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["chosen"] == 0.1 and result["fragments"] == "zwatershed"
    assert [r["small"]["objects"] for r in result["rows"]] == [5, 4]
    assert reconstruct3D.main(["--method", "agglomerate", "--input_affinities", str(stack),
                               "--fragments", "zwatershed",
                               "--merge_threshold_from", str(tmp_path / "s.json"),
                               "--output_dir", str(tmp_path), "--name", "out"]) == 0
    assert _same_partition(tifffile.imread(tmp_path / "out.tif"), labels)
    capsys.readouterr()
    # bad input: one line, exit 2, nothing written
    assert reconstruct3D.main(["--method", "agglomerate", "--input_affinities", str(stack),
                               "--input_dir_membrane", str(stack), "--output_dir",
                               str(tmp_path / "new"), "--name", "x"]) == 2
    assert "exclusive" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert reconstruct3D.main(["--method", "agglomerate", "--input_affinities",
                               str(tmp_path / "labels.tif"), "--output_dir",
                               str(tmp_path / "new"), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "(z, y, x, 3) affinity stack" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()

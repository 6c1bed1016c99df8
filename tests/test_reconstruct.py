"""reconstruct3D.py and evaluate3D.py: components against scipy, round trips, CLI, bad input."""

import json

import numpy as np
import pytest
import tifffile
from conftest import assert_user_error, run_script
from scipy import ndimage

import evaluate3D
import process3D
import reconstruct3D
from neuron3d import io
from neuron3d.reconstruct import interleave, reconstruct


def _same_partition(a, b):
    """True if a and b label the same voxel sets (IDs may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]).astype(np.int64), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("connectivity,rank", [(6, 1), (18, 2), (26, 3)])
def test_reconstruct_matches_scipy_label(connectivity, rank):
    rng = np.random.default_rng(connectivity)
    cyto = rng.random((7, 40, 33)) < 0.45
    over = rng.random((6, 40, 33)) < 0.3
    labels = reconstruct(cyto, over, connectivity)
    structure = ndimage.generate_binary_structure(3, rank)
    expected, _ = ndimage.label(interleave(cyto, over), structure)
    expected = expected[0::2]
    assert _same_partition(labels, expected)
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # 1..K, no gaps


def test_reconstruct_tiny_by_hand():
    cyto = np.zeros((3, 1, 4), bool)
    cyto[:, 0, 0] = True           # a column through all slices
    cyto[0, 0, 2] = cyto[2, 0, 2] = True
    over = np.zeros((2, 1, 4), bool)
    over[:, 0, 0] = True           # connects the column
    over[1, 0, 3] = True           # an overlap with no cytoplasm: vanishes
    labels = reconstruct(cyto, over)
    expected = np.array([[[1, 0, 2, 0]], [[1, 0, 0, 0]], [[1, 0, 3, 0]]])
    np.testing.assert_array_equal(labels, expected)


def test_more_than_65535_objects_get_a_wide_dtype():
    cyto = np.zeros((1, 600, 600), bool)
    cyto[0, ::2, ::2] = True  # 90000 isolated pixels
    labels = reconstruct(cyto, np.zeros((0, 600, 600), bool))
    assert labels.max() == 90000 and labels.dtype == np.uint32


def test_single_slice_volume_through_the_clis(tmp_path):
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, :, :3] = 4
    labels[0, :, 3:] = 9
    tifffile.imwrite(tmp_path / "one.tif", labels, photometric="minisblack")
    for op in ("cytoplasm", "overlap"):
        assert process3D.main(["--operation", op, "--input_dir", str(tmp_path / "one.tif"),
                               "--output_dir", str(tmp_path / op)]) == 0
    assert reconstruct3D.main(["--input_dir_cytoplasm", str(tmp_path / "cytoplasm"),
                               "--input_dir_overlap", str(tmp_path / "overlap"),
                               "--output_dir", str(tmp_path), "--name", "rec"]) == 0
    rec = tifffile.imread(tmp_path / "rec.tif").reshape(1, 6, 6)
    assert rec.max() == 2 and (rec[0, :, :2] == 1).all() and (rec[0, :, 4:] == 2).all()


def test_round_trip_on_real_ground_truth(tmp_path, snemi_labels):
    gt = tmp_path / "label_c.tif"
    tifffile.imwrite(gt, snemi_labels)
    for op in ("cytoplasm", "overlap"):
        assert process3D.main(["--operation", op, "--input_dir", str(gt),
                               "--output_dir", str(tmp_path / op)]) == 0
    assert process3D.main(["--operation", "evaluation", "--input_dir", str(gt),
                           "--output_dir", str(tmp_path)]) == 0
    assert reconstruct3D.main(["--input_dir_cytoplasm", str(tmp_path / "cytoplasm"),
                               "--input_dir_overlap", str(tmp_path / "overlap"),
                               "--output_dir", str(tmp_path), "--name", "rec"]) == 0
    rec = tifffile.imread(tmp_path / "rec.tif")
    np.testing.assert_array_equal(rec, tifffile.imread(tmp_path / "evaluate_c.tif"))
    assert evaluate3D.main(["--predicted", str(tmp_path / "rec.tif"), "--true",
                            str(tmp_path / "evaluate_c.tif"), "--output", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["adjusted_rand_index"] == 1.0
    assert scores["splits"] == scores["merges"] == 0
    assert scores["shape"] == list(snemi_labels.shape)


def test_thesis_commands_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    labels = np.zeros((4, 12, 12), np.uint32)
    labels[:, 1:6, 1:6] = 3
    labels[:, 7:11, 2:10] = 9
    from neuron3d import labels as L

    io.write_slices("datasets/cytoplasm_predicted_c", L.cytoplasm(labels))
    io.write_slices("datasets/overlap_predicted_c_eroskele", L.overlap(labels))
    line = ("python reconstruct3D.py --input_dir_cytoplasm datasets/cytoplasm_predicted_c/ "
            "--input_dir_overlap datasets/overlap_predicted_c_eroskele/ --output_dir datasets/ "
            "--name experiment_8")
    assert reconstruct3D.main(line.split()[2:]) == 0
    assert "2 objects" in capsys.readouterr().out
    tifffile.imwrite("datasets/evaluate_c.tif", labels, photometric="minisblack")
    line = "python evaluate3D.py --predicted datasets/experiment_8.tif --true datasets/evaluate_c.tif"
    assert evaluate3D.main(line.split()[2:]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Evaluation results:\n\nSplits                   = 0\nMerges                   = 0\n"
                          "Adjusted Rand Index      = ")
    assert "Recall                   = 0." in out and "Adapted Rand error" in out
    # N overlap slices for N cytoplasm slices: the last is ignored.
    io.write_slices("datasets/ov_n", np.concatenate([L.overlap(labels), L.overlap(labels)[:1]]))
    assert reconstruct3D.main(["--input_dir_cytoplasm", "datasets/cytoplasm_predicted_c",
                               "--input_dir_overlap", "datasets/ov_n", "--output_dir", "d2",
                               "--name", "x"]) == 0
    np.testing.assert_array_equal(tifffile.imread("d2/x.tif"), tifffile.imread("datasets/experiment_8.tif"))
    # --threshold is accepted and changes nothing; CSV output.
    assert evaluate3D.main(["--predicted", "d2/x.tif", "--true", "datasets/evaluate_c.tif",
                            "--threshold", "0.5", "--output", "s.csv"]) == 0
    assert "adapted_rand_error" in open("s.csv").read()


def test_bad_inputs(tmp_path):
    a = tmp_path / "a.tif"
    tifffile.imwrite(a, np.ones((2, 4, 4), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", np.ones((2, 4, 5), np.uint16), photometric="minisblack")
    r = run_script("evaluate3D.py", "--predicted", a, "--true", tmp_path / "b.tif")
    assert_user_error(r, "shapes differ", "(2, 4, 4)", "(2, 4, 5)")
    tifffile.imwrite(tmp_path / "f.tif", np.full((2, 4, 4), 1.5, np.float32), photometric="minisblack")
    r = run_script("evaluate3D.py", "--predicted", tmp_path / "f.tif", "--true", a)
    assert_user_error(r, "f.tif", "fractional")
    tifffile.imwrite(tmp_path / "n.tif", np.full((2, 4, 4), -2, np.int32), photometric="minisblack")
    r = run_script("evaluate3D.py", "--predicted", a, "--true", tmp_path / "n.tif")
    assert_user_error(r, "n.tif", "negative")
    r = run_script("evaluate3D.py", "--predicted", a, "--true", a, "--output", tmp_path / "no" / "s.json")
    assert_user_error(r, "does not exist", "no")
    # float volumes with whole values are fine
    tifffile.imwrite(tmp_path / "w.tif", np.ones((2, 4, 4), np.float32), photometric="minisblack")
    assert run_script("evaluate3D.py", "--predicted", tmp_path / "w.tif", "--true", a).returncode == 0

    cyto, over = tmp_path / "cyto", tmp_path / "over"
    io.write_slices(cyto, np.full((4, 6, 6), 255, np.uint8))
    io.write_slices(over, np.full((2, 6, 6), 255, np.uint8))
    r = run_script("reconstruct3D.py", "--input_dir_cytoplasm", cyto, "--input_dir_overlap", over,
                   "--output_dir", tmp_path / "out", "--name", "x")
    assert_user_error(r, "4 cytoplasm slices", "need 3 overlap slices, got 2")
    io.write_slices(over, np.full((3, 6, 7), 255, np.uint8))
    r = run_script("reconstruct3D.py", "--input_dir_cytoplasm", cyto, "--input_dir_overlap", over,
                   "--output_dir", tmp_path / "out", "--name", "x")
    assert_user_error(r, "(6, 6)", "(6, 7)")
    (tmp_path / "empty").mkdir()
    r = run_script("reconstruct3D.py", "--input_dir_cytoplasm", tmp_path / "empty",
                   "--input_dir_overlap", over, "--output_dir", tmp_path / "out", "--name", "x")
    assert_user_error(r, "empty", "no slice files")
    r = run_script("reconstruct3D.py", "--input_dir_cytoplasm", tmp_path / "gone",
                   "--input_dir_overlap", over, "--output_dir", tmp_path / "out", "--name", "x")
    assert_user_error(r, "gone", "does not exist")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True

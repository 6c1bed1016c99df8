"""reconstruct3D.py and evaluate3D.py: components against scipy, round trips, CLI, bad input."""

import json

import numpy as np
import pytest
import tifffile
from conftest import assert_user_error, run_script
from scipy import ndimage
from test_cli import main_error

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
    assert_user_error(r, "4 cytoplasm slices", "need 3 overlap slices, got 2", str(cyto), str(over))
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
    assert not (tmp_path / "out").exists()  # no empty output folder after failed runs


@pytest.fixture
def planes(tmp_path):
    cyto, over = tmp_path / "cyto", tmp_path / "over"
    io.write_slices(cyto, np.full((3, 5, 5), 255, np.uint8))
    io.write_slices(over, np.full((2, 5, 5), 255, np.uint8))
    return cyto, over


def _rec(cyto, over, out, *extra):
    return ["--input_dir_cytoplasm", cyto, "--input_dir_overlap", over, "--output_dir", out,
            "--name", "x", *extra]


@pytest.mark.parametrize("value", ["-5", "0", "256", "1000"])
def test_threshold_outside_1_to_255_is_refused(planes, tmp_path, capsys, value):
    out = tmp_path / "new" / "out"
    main_error(reconstruct3D.main, _rec(*planes, out, "--threshold", value), capsys,
               "--threshold", value, "1..255")
    assert not (tmp_path / "new").exists()


def test_threshold_range_ends_work(planes, tmp_path):
    for value in ("1", "255"):
        assert reconstruct3D.main([str(a) for a in _rec(*planes, tmp_path / value,
                                                          "--threshold", value)]) == 0
        assert tifffile.imread(tmp_path / value / "x.tif").max() == 1


@pytest.mark.parametrize("name,fragment", [("", "''"), ("a/b", "'a/b'"), (".x", "hidden")])
def test_bad_name_is_refused_before_anything_is_written(planes, tmp_path, capsys, name,
                                                       fragment):
    out = tmp_path / "out"
    argv = _rec(*planes, out)
    argv[-1] = name
    main_error(reconstruct3D.main, argv, capsys, "--name", fragment)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_zero_slice_and_empty_slice_inputs(planes, tmp_path):
    cyto, over = planes
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 5, 5), np.uint8), photometric="minisblack")
    r = run_script("reconstruct3D.py", *_rec(tmp_path / "zero.tif", over, tmp_path / "out"))
    assert_user_error(r, "cytoplasm stack has no slices", "zero.tif", "(0, 5, 5)")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((3, 0, 5), np.uint8), photometric="minisblack")
    r = run_script("reconstruct3D.py", *_rec(tmp_path / "flat.tif", over, tmp_path / "out"))
    assert_user_error(r, "empty slices", "flat.tif")
    r = run_script("reconstruct3D.py", *_rec(cyto, over, tmp_path / "out", "--connectivity", "7"))
    assert_user_error(r, "--connectivity", "7")
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(planes, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    main_error(reconstruct3D.main, _rec(*planes, tmp_path / "afile"), capsys,
               "--output_dir", "existing file", "afile")


def test_interleave_messages_name_the_sources():
    with pytest.raises(ValueError, match=r"3 cytoplasm slices \(c\.tif\) need 2 overlap slices, "
                                         r"got 1 \(o\.tif\)"):
        interleave(np.ones((3, 2, 2), bool), np.ones((1, 2, 2), bool), "c.tif", "o.tif")
    with pytest.raises(ValueError, match=r"cytoplasm slices \(c\.tif\) are \(2, 2\) but overlap "
                                         r"slices \(o\.tif\) are \(2, 3\)"):
        interleave(np.ones((2, 2, 2), bool), np.ones((1, 2, 3), bool), "c.tif", "o.tif")
    with pytest.raises(ValueError, match=r"connectivity must be one of 6, 18, 26, got 4"):
        reconstruct(np.ones((1, 2, 2), bool), np.ones((0, 2, 2), bool), 4)


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_evaluate_zero_size_volume_is_one_line(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((0, 4, 4), np.uint16), photometric="minisblack")
    r = run_script("evaluate3D.py", "--predicted", tmp_path / "z.tif", "--true", tmp_path / "z.tif")
    assert_user_error(r, "no voxels to score", "z.tif", "(0, 4, 4)")
    a = tmp_path / "a.tif"
    tifffile.imwrite(a, np.ones((1, 2, 2), np.uint8), photometric="minisblack")
    r = run_script("evaluate3D.py", "--predicted", a, "--true", a, "--min_overlap", "-1")
    assert_user_error(r, "--min_overlap", "-1")


def test_evaluate_against_evaluation_volume_and_labels(tmp_path, capsys):
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, :, :4] = 3
    labels[:, :, 4:] = 5
    evaluation = np.where(labels == 3, 1, 2).astype(np.uint16)
    evaluation[:, :, 3:5] = 0                       # membranes as background
    pred = np.where(labels == 3, 7, 9).astype(np.uint16)
    pred[1] = 7                                     # one merge in slice 1
    for name, volume in (("label_c", labels), ("evaluate_c", evaluation), ("rec", pred)):
        tifffile.imwrite(tmp_path / f"{name}.tif", volume, photometric="minisblack")
    paths = {k: str(tmp_path / f"{k}.tif") for k in ("label_c", "evaluate_c", "rec")}
    assert evaluate3D.main(["--predicted", paths["rec"], "--true", paths["evaluate_c"],
                            "--labels", paths["label_c"], "--output",
                            str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Evaluation results against --true {paths['evaluate_c']}:\n\nSplits")
    assert f"\nEvaluation results against --labels {paths['label_c']}:\n\nSplits" in out
    record = json.loads((tmp_path / "s.json").read_text())
    from neuron3d.metrics import evaluate

    expected_true = evaluate(evaluation, pred)
    expected_labels = evaluate(labels, pred)
    assert expected_true != expected_labels
    assert {k: record[k] for k in expected_true} == expected_true    # top level: --true
    assert record["labels"] == paths["label_c"]
    assert record["labels_scores"] == expected_labels
    assert record["true"] == paths["evaluate_c"] and record["shape"] == [2, 8, 8]
    # Without --labels the record is as before: no labels keys.
    assert evaluate3D.main(["--predicted", paths["rec"], "--true", paths["evaluate_c"],
                            "--output", str(tmp_path / "t.json")]) == 0
    plain = json.loads((tmp_path / "t.json").read_text())
    assert "labels" not in plain and "labels_scores" not in plain
    assert capsys.readouterr().out.startswith("Evaluation results:\n\nSplits")
    # CSV: nested keys flattened.
    assert evaluate3D.main(["--predicted", paths["rec"], "--true", paths["evaluate_c"],
                            "--labels", paths["label_c"], "--output",
                            str(tmp_path / "s.csv")]) == 0
    rows = dict(line.split(",", 1) for line in (tmp_path / "s.csv").read_text().splitlines())
    assert float(rows["labels_scores.adapted_rand_error"]) == pytest.approx(
        expected_labels["adapted_rand_error"])
    assert float(rows["adapted_rand_error"]) == pytest.approx(expected_true["adapted_rand_error"])
    # A --labels volume of another shape names the file.
    tifffile.imwrite(tmp_path / "small.tif", labels[:1], photometric="minisblack")
    main_error(evaluate3D.main, ["--predicted", paths["rec"], "--true", paths["evaluate_c"],
                                 "--labels", tmp_path / "small.tif"], capsys,
               "shapes differ", "small.tif", "(1, 8, 8)", "(2, 8, 8)")

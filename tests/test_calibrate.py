"""neuron3d.calibrate: the threshold of the best membrane F1 on a held-out quadrant becomes the
output's 0.5 (exact values on tiny arrays, a cross-check against pixel_scores, the CLI)."""

import json

import numpy as np
import pytest
from conftest import assert_user_error_status

from neuron3d import calibrate as C
from neuron3d.io import read_stack, write_slices
from neuron3d.metrics import pixel_scores


def test_scores_by_level_by_hand():
    predicted = np.array([10, 60, 100, 200], np.uint8)
    true = np.array([False, True, True, False])
    scores = C.f1_by_level(predicted, true)
    # T <= 10: all 4 marked, 2 right; T in 11..60: 3 marked, 2 right (F1 0.8); 61..100: 100
    # and 200 marked, 1 right (F1 0.5); 101..200: 1 marked, none right; > 200: nothing marked
    assert scores["precision"][10] == 0.5 and scores["recall"][10] == 1.0
    assert scores["f1"][11] == scores["f1"][60] == pytest.approx(0.8)
    assert scores["f1"][61] == scores["f1"][100] == pytest.approx(0.5)
    assert scores["f1"][101] == 0.0 and scores["precision"][201] == 0.0
    level, _ = C.choose_level(predicted, true)
    assert level == 60  # 11..60 tie at 0.8: the level nearest 128


def test_scores_by_level_equal_pixel_scores_on_random_data():
    rng = np.random.default_rng(4)
    true = rng.uniform(size=(3, 20, 30)) < 0.25
    predicted = np.clip(rng.normal(90 + 80 * true, 50), 0, 255).astype(np.uint8)
    scores = C.f1_by_level(predicted, true)
    for level in (1, 37, 90, 128, 200, 255):
        expected = pixel_scores(predicted >= level, true)
        for key in ("precision", "recall", "f1"):
            assert scores[key][level] == pytest.approx(expected[key], abs=1e-12), (level, key)
    level, _ = C.choose_level(predicted, true)
    best = max(pixel_scores(predicted >= t, true)["f1"] for t in range(1, 256))
    assert scores["f1"][level] == pytest.approx(best)


@pytest.mark.parametrize("level", [1, 60, 96, 128, 200, 255])
def test_the_map_puts_the_level_on_half_and_keeps_the_order(level):
    table = C.lookup_table(level)
    values = np.arange(256)
    assert np.array_equal(table >= C.HALF, values >= level)
    assert np.all(np.diff(table.astype(int)) >= 0) and table[0] == 0
    assert table[255] == (255 if level < 255 else 128)  # [255, 255] has one value
    if level == 128:
        assert np.array_equal(table, values)
    # exact values: [0, level) onto [0, 128), [level, 255] onto [128, 255], rounded down
    assert table[level] == 128 and table[level - 1] == (level - 1) * 128 // level


def test_bad_levels_and_dtypes():
    for level in (0, 256, 2.5, True):
        with pytest.raises(ValueError, match="level must be an integer in 1..255"):
            C.lookup_table(level)
    with pytest.raises(ValueError, match="8-bit"):
        C.remap(np.zeros(3, np.uint16), 100)
    with pytest.raises(ValueError, match="shape"):
        C.f1_by_level(np.zeros(3, np.uint8), np.zeros(4, bool))


def test_cli_chooses_on_one_stack_and_maps_another(tmp_path, capsys):
    rng = np.random.default_rng(1)
    truth = (rng.uniform(size=(2, 12, 14)) < 0.3).astype(np.uint8) * 255
    predicted = np.clip(rng.normal(70 + 100 * (truth > 0), 40), 0, 255).astype(np.uint8)
    write_slices(tmp_path / "pred", np.stack([predicted] * 3, axis=-1))  # RGB, as the trainer
    write_slices(tmp_path / "truth", truth)
    record_file = tmp_path / "calibration.json"
    assert C.main(["--choose", "--input_dir", str(tmp_path / "pred"), "--truth",
                   str(tmp_path / "truth"), "--output", str(record_file)]) == 0
    record = json.loads(record_file.read_text())
    level, scores = C.choose_level(predicted, truth)
    assert record["level"] == level and record["threshold"] == level / 255
    assert record["f1"] == pytest.approx(scores["f1"][level])
    assert record["f1_at_half"] == pytest.approx(pixel_scores(predicted >= 128, truth > 0)["f1"])
    assert len(record["f1_by_level"]) == 256
    out = tmp_path / "calibrated.tif"
    assert C.main(["--apply", str(record_file), "--input_dir", str(tmp_path / "pred"),
                   "--output_dir", str(out)]) == 0
    mapped = read_stack(out)
    assert np.array_equal(mapped, C.lookup_table(level)[predicted])
    assert pixel_scores(mapped >= 128, truth > 0)["f1"] == pytest.approx(record["f1"])
    capsys.readouterr()
    # bad input: one line, exit 2, nothing written
    bad = tmp_path / "bad.json"
    bad.write_text('{"level": 300}')
    status = C.main(["--apply", str(bad), "--input_dir", str(tmp_path / "pred"),
                     "--output_dir", str(tmp_path / "x.tif")])
    assert_user_error_status(status, capsys, "has level 300, expected an integer in 1..255")
    status = C.main(["--apply", str(tmp_path / "none.json"), "--input_dir",
                     str(tmp_path / "pred"), "--output_dir", str(tmp_path / "x.tif")])
    assert_user_error_status(status, capsys, "no calibration file")
    status = C.main(["--choose", "--input_dir", str(tmp_path / "pred"), "--output",
                     str(tmp_path / "y.json")])
    assert_user_error_status(status, capsys, "--choose needs --truth")
    write_slices(tmp_path / "small", truth[:, :5])
    status = C.main(["--choose", "--input_dir", str(tmp_path / "pred"), "--truth",
                     str(tmp_path / "small"), "--output", str(tmp_path / "y.json")])
    assert_user_error_status(status, capsys, "has shape")
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.json").exists()


# ---- bad and contradictory input: one line, exit 2, nothing written or changed ---------------

def tree(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def calibration_files(tmp_path):
    from neuron3d.io import write_tif

    rng = np.random.default_rng(2)
    truth = (rng.uniform(size=(2, 8, 9)) < 0.3).astype(np.uint8) * 255
    predicted = np.clip(rng.normal(70 + 100 * (truth > 0), 40), 0, 255).astype(np.uint8)
    write_tif(tmp_path / "P.tif", predicted)
    write_slices(tmp_path / "pred", predicted)
    write_slices(tmp_path / "truth", truth)
    assert C.main(["--choose", "--input_dir", str(tmp_path / "P.tif"), "--truth",
                   str(tmp_path / "truth"), "--output", str(tmp_path / "C.json")]) == 0
    return tmp_path


@pytest.mark.parametrize("argv, fragments", [
    (["--apply", "C.json", "--input_dir", "P.tif", "--output_dir", "P.tif"],
     ["--output_dir", "--input_dir", "P.tif"]),
    (["--apply", "C.json", "--input_dir", "P.tif", "--output_dir", "./x/../P.tif"],
     ["--output_dir", "--input_dir"]),
    (["--apply", "C.json", "--input_dir", "pred", "--output_dir", "pred/00.tif"],
     ["--output_dir", "--input_dir", "pred"]),
    (["--apply", "C.json", "--input_dir", "P.tif", "--output_dir", "C.json"],
     ["--output_dir", "--apply", "C.json"]),
    (["--choose", "--input_dir", "P.tif", "--truth", "truth", "--output", "P.tif"],
     ["--output", "--input_dir", "P.tif"]),
    (["--choose", "--input_dir", "P.tif", "--truth", "truth", "--output", "truth"],
     ["--output", "--truth"]),
    (["--choose", "--input_dir", "P.tif", "--truth", "truth", "--output", "truth/00.png"],
     ["--output", "--truth"]),
    # contradictory flags (issue 21 item 16)
    (["--choose", "--input_dir", "P.tif", "--truth", "truth", "--output", "new.json",
      "--output_dir", "new.tif"], ["--output_dir goes with --apply, not --choose"]),
    (["--apply", "C.json", "--input_dir", "P.tif", "--output_dir", "new.tif", "--truth",
      "truth"], ["--truth goes with --choose, not --apply (--apply writes --output_dir)"]),
    (["--apply", "C.json", "--input_dir", "P.tif", "--output_dir", "new.tif", "--output",
      "new.json"], ["--output goes with --choose, not --apply"]),
    (["--choose", "--input_dir", "P.tif", "--truth", "truth", "--output", "pred"],
     ["--output", "pred is an existing folder, expected a JSON file"]),
])
def test_calibrate_refuses_without_touching_anything(calibration_files, capsys, monkeypatch,
                                                     argv, fragments):
    from conftest import assert_user_error_status

    import neuron3d.io

    monkeypatch.chdir(calibration_files)
    monkeypatch.setattr(neuron3d.io, "read_stack", lambda *a, **k: pytest.fail("read"))
    capsys.readouterr()
    before = tree(calibration_files)
    assert_user_error_status(C.main(argv), capsys, *fragments)
    assert tree(calibration_files) == before
    assert sorted(p.name for p in calibration_files.iterdir()) == ["C.json", "P.tif", "pred",
                                                                   "truth"]


@pytest.mark.parametrize("bad, fragment", [
    (np.full((2, 8, 9), np.nan, np.float32), "has 144 of 144 values that are not finite"),
    (np.where(np.arange(144).reshape(2, 8, 9) == 5, np.inf, 255.0),
     "has 1 of 144 values that are not finite numbers (NaN or inf)"),
    (np.zeros((2, 8, 9), np.uint8), "has no membrane pixel (no value >= 128)"),
    (np.ones((2, 8, 9), np.float32), "has no membrane pixel"),
])
def test_calibrate_refuses_a_truth_it_cannot_choose_by(calibration_files, capsys, bad, fragment):
    """Issue 21 item 18: an all-NaN float --truth chose level 128."""
    from conftest import assert_user_error_status

    from neuron3d.io import write_tif

    write_tif(calibration_files / "T.tif", bad)
    capsys.readouterr()
    status = C.main(["--choose", "--input_dir", str(calibration_files / "P.tif"), "--truth",
                     str(calibration_files / "T.tif"), "--output",
                     str(calibration_files / "new.json")])
    assert_user_error_status(status, capsys, f"--truth {calibration_files / 'T.tif'} {fragment}")
    assert not (calibration_files / "new.json").exists()
    with pytest.raises(ValueError, match="not finite|no membrane pixel"):
        C.check_truth(bad)
    truth = np.zeros((1, 2, 2), np.uint8)
    truth[0, 0, 0] = 255
    assert C.check_truth(truth) is not None and C.check_truth(truth > 0).dtype == bool

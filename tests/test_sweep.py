"""neuron3d.sweep: the chosen threshold read back, and the command's checks of its files."""

import json

import pytest

from neuron3d.sweep import chosen_threshold


def test_chosen_threshold_reads_the_sweeps_choice(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"rows": [], "chosen": 0.35, "scoring": "median"}))
    assert chosen_threshold(path) == 0.35
    assert chosen_threshold(str(path)) == 0.35
    path.write_text(json.dumps({"chosen": 1}))
    assert chosen_threshold(path) == 1.0 and isinstance(chosen_threshold(path), float)
    # six significant digits, as the value's text '%g' (what the step passed before)
    path.write_text(json.dumps({"chosen": 0.123456789}))
    assert chosen_threshold(path) == 0.123457


@pytest.mark.parametrize("text, fragment", [
    ("{", "is not a sweep file of python -m neuron3d.sweep"),
    ("{}", "has no 'chosen' threshold"),
    ("[0.5]", "is not a sweep file"),
    ('{"chosen": "0.5"}', "'chosen' is '0.5', not a number"),
    ('{"chosen": null}', "'chosen' is None, not a number"),
    ('{"chosen": true}', "'chosen' is True, not a number"),
    ('{"chosen": 1.5}', r"the chosen threshold must be in \[0, 1\], got 1.5"),
    ('{"chosen": NaN}', r"must be in \[0, 1\], got nan"),
])
def test_chosen_threshold_refuses_a_malformed_file_naming_it(tmp_path, text, fragment):
    path = tmp_path / "sweep.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment) as info:
        chosen_threshold(path)
    assert str(path) in str(info.value)


def test_chosen_threshold_refuses_a_missing_file_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read the sweep file .*nope\.json"):
        chosen_threshold(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="cannot read the sweep file"):
        chosen_threshold(tmp_path)  # a folder


# ---- the command: files checked before the sweep, messages name them ---------------------------

@pytest.fixture
def sweep_files(tmp_path):
    import numpy as np

    from neuron3d.io import write_slices, write_tif

    labels = np.zeros((3, 16, 16), np.uint16)
    labels[:, :, :8], labels[:, :, 8:] = 1, 2
    membrane = np.zeros((3, 16, 16), np.uint8)
    membrane[:, :, 7:9] = 255
    overlap = np.full((2, 16, 16), 255, np.uint8)
    overlap[:, :, 7:9] = 0
    write_tif(tmp_path / "membrane.tif", membrane)
    write_slices(tmp_path / "overlap", overlap)
    write_tif(tmp_path / "labels.tif", labels)
    write_tif(tmp_path / "evaluation.tif", labels)
    return tmp_path


def sweep_args(folder, output, **replace):
    args = {"--input_dir_membrane": folder / "membrane.tif", "--input_dir_overlap":
            folder / "overlap", "--labels": folder / "labels.tif",
            "--evaluation": folder / "evaluation.tif", "--thresholds": "0.3", "--output": output}
    args.update(replace)
    return [str(a) for item in args.items() for a in item]


def hashes(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sweep_cli_writes_the_choice(sweep_files, capsys):
    from neuron3d import sweep as S

    out = sweep_files / "out" / "sweep.json"
    assert S.main(sweep_args(sweep_files, out)) == 0
    result = json.loads(out.read_text())
    assert result["chosen"] == 0.3 and chosen_threshold(out) == 0.3
    assert result["rows"][0]["labels"]["adapted_rand_error"] == 0.0  # two objects, both found
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("target, names", [
    ("labels.tif", ["--output", "--labels"]),
    ("membrane.tif", ["--output", "--input_dir_membrane"]),
    ("evaluation.tif", ["--output", "--evaluation"]),
    ("overlap", ["--output", "--input_dir_overlap"]),
    ("overlap/00.json", ["--output", "--input_dir_overlap"]),
    ("./sub/../labels.tif", ["--output", "--labels"]),
])
def test_sweep_refuses_an_output_that_is_an_input(sweep_files, capsys, monkeypatch, target,
                                                  names):
    from conftest import assert_user_error_status

    from neuron3d import sweep as S

    monkeypatch.setattr(S, "sweep", lambda *a, **k: pytest.fail("swept"))
    before = hashes(sweep_files)
    status = S.main(sweep_args(sweep_files, sweep_files / target))
    assert_user_error_status(status, capsys, *names)
    assert hashes(sweep_files) == before and not (sweep_files / "sub").exists()


def test_sweep_checks_its_output_before_sweeping(sweep_files, capsys, monkeypatch):
    from conftest import assert_user_error_status

    from neuron3d import sweep as S

    monkeypatch.setattr(S, "sweep", lambda *a, **k: pytest.fail("swept before the check"))
    (sweep_files / "a_folder").mkdir()
    (sweep_files / "a_file").write_text("x")
    before = hashes(sweep_files)
    status = S.main(sweep_args(sweep_files, sweep_files / "a_folder"))
    assert_user_error_status(status, capsys, f"--output {sweep_files / 'a_folder'} is an "
                             "existing folder, expected a JSON file")
    status = S.main(sweep_args(sweep_files, sweep_files / "a_file" / "s.json"))
    assert_user_error_status(status, capsys, f"--output {sweep_files / 'a_file' / 's.json'} "
                             f"lies under an existing file {sweep_files / 'a_file'}")
    assert hashes(sweep_files) == before


def test_sweep_messages_name_the_files(sweep_files, capsys, monkeypatch):
    import numpy as np
    from conftest import assert_user_error_status

    from neuron3d import agglomerate
    from neuron3d import sweep as S
    from neuron3d.io import write_tif

    write_tif(sweep_files / "small.tif", np.ones((3, 16, 8), np.uint16))
    real = agglomerate.agglomerate
    monkeypatch.setattr(agglomerate, "agglomerate",
                        lambda *a, **k: pytest.fail("agglomerated before the shape check"))
    status = S.main(sweep_args(sweep_files, sweep_files / "s.json",
                               **{"--labels": sweep_files / "small.tif"}))
    line = assert_user_error_status(
        status, capsys, f"shapes differ: the labels {sweep_files / 'small.tif'} is (3, 16, 8), "
        f"the membranes {sweep_files / 'membrane.tif'} are (3, 16, 16)")
    assert "predicted predicted" not in line
    status = S.main(sweep_args(sweep_files, sweep_files / "s.json",
                               **{"--evaluation": sweep_files / "small.tif"}))
    assert_user_error_status(status, capsys, f"the evaluation volume {sweep_files / 'small.tif'}")
    monkeypatch.setattr(agglomerate, "agglomerate", real)
    write_tif(sweep_files / "narrow.tif", np.zeros((2, 16, 8), np.uint8))
    status = S.main(sweep_args(sweep_files, sweep_files / "s.json",
                               **{"--input_dir_overlap": sweep_files / "narrow.tif"}))
    assert_user_error_status(status, capsys, "overlap slices are 16 x 8",
                             str(sweep_files / "membrane.tif"), str(sweep_files / "narrow.tif"))
    assert not (sweep_files / "s.json").exists()


# ---- the criterion ------------------------------------------------------------------------------

def _row(threshold, rand, split, merge):
    return {"threshold": threshold,
            "labels": {"adapted_rand_error": rand, "voi_split": split, "voi_merge": merge}}


def test_the_criteria_choose_as_documented():
    from neuron3d.thresholds import CRITERIA, CRITERION, DEFAULT_CRITERION, choose

    rows = [_row(0.2, 0.050, 1.40, 0.10),   # many small splits: the best adapted Rand error
            _row(0.4, 0.060, 0.30, 0.25),   # the lowest VOI (0.55)
            _row(0.6, 0.070, 0.25, 0.30),   # the same VOI sum, a worse adapted Rand error
            _row(0.8, 0.050, 0.20, 0.90)]   # ties 0.2 by adapted Rand error, higher threshold
    assert choose(rows, "rand") == 0.2
    assert choose(rows, "voi") == 0.4 and choose(rows) == 0.4 and DEFAULT_CRITERION == "voi"
    tied = [_row(0.6, 0.060, 0.25, 0.30), _row(0.4, 0.060, 0.30, 0.25)]
    assert choose(tied, "voi") == 0.4  # VOI and adapted Rand error tie: the lower threshold
    # sums equal but for the last bits tie (0.1 + 0.2 != 0.3 in floating point)
    assert choose([_row(0.3, 0.07, 0.1, 0.2), _row(0.5, 0.06, 0.3, 0.0)], "voi") == 0.5
    assert CRITERION == CRITERIA["voi"] and "VOI" in CRITERION
    with pytest.raises(ValueError, match="--criterion must be one of voi, rand, got 'f1'"):
        choose(rows, "f1")


def test_a_bad_criterion_is_refused_before_any_agglomeration(monkeypatch):
    import numpy as np

    from neuron3d import agglomerate, sweep

    monkeypatch.setattr(agglomerate, "agglomerate", lambda *a, **k: pytest.fail("ran"))
    volume = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="--criterion must be one of voi, rand, got 'f1'"):
        sweep.sweep(volume, volume[1:], volume, criterion="f1")


def test_sweep_cli_records_its_criterion(sweep_files, capsys):
    from neuron3d import sweep as S
    from neuron3d.thresholds import CRITERIA

    for criterion in ("rand", "voi"):
        out = sweep_files / f"{criterion}.json"
        assert S.main(sweep_args(sweep_files, out) + ["--criterion", criterion]) == 0
        result = json.loads(out.read_text())
        assert result["criterion"] == CRITERIA[criterion]
        assert result["criterion_name"] == criterion
        assert "VOI 0.000 / 0.000, 2 objects" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        S.main(sweep_args(sweep_files, sweep_files / "x.json") + ["--criterion", "f1"])
    assert exc.value.code == 2 and "invalid choice: 'f1'" in capsys.readouterr().err

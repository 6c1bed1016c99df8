"""reconstruct3D.py --method agglomerate: outputs per threshold, equal to the library, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_user_error, run_script

from neuron3d.agglomerate import DEFAULT_THRESHOLD, agglomerate
from neuron3d.io import read_labels, write_tif
from neuron3d.labels import membrane, overlap
from neuron3d.synthetic import synthetic_volume


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Membrane and overlap images (0/255) of a small synthetic volume's own labels."""
    folder = tmp_path_factory.mktemp("agglo")
    _, labels = synthetic_volume((6, 96, 96), seed=3)
    mem = membrane(labels).astype(np.uint8) * 255
    over = overlap(labels).astype(np.uint8) * 255
    write_tif(folder / "membrane.tif", mem)
    write_tif(folder / "overlap.tif", over)
    return folder, mem, over


def test_one_output_per_threshold_equal_to_the_library(inputs, tmp_path):
    folder, mem, over = inputs
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", folder / "overlap.tif",
                   "--merge_threshold", "0.3", "0.7", "--output_dir", tmp_path / "out",
                   "--name", "agg")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["agg_0.3.tif", "agg_0.7.tif"]
    expected = agglomerate(mem, over, [0.3, 0.7])
    for name, want in zip(("agg_0.3.tif", "agg_0.7.tif"), expected):
        got = read_labels(tmp_path / "out" / name)
        assert np.array_equal(got, want) and got.min() >= 1  # dense


def test_3d_fragments_equal_the_library_and_the_sweep_records_them(inputs, tmp_path):
    folder, mem, over = inputs
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", folder / "overlap.tif",
                   "--merge_threshold", "0.5", "--fragments", "3d", "--output_dir", tmp_path,
                   "--name", "agg")
    assert r.returncode == 0, r.stderr
    assert "(3d fragments," in r.stderr
    want = agglomerate(mem, over, [0.5], fragment_mode="3d")[0]
    assert not np.array_equal(want, agglomerate(mem, over, [0.5])[0])  # so this can fail
    assert np.array_equal(read_labels(tmp_path / "agg.tif"), want)
    _, labels = synthetic_volume((6, 96, 96), seed=3)
    write_tif(tmp_path / "labels.tif", labels)
    s = run_module("neuron3d.sweep", "--input_dir_membrane", folder / "membrane.tif",
                   "--input_dir_overlap", folder / "overlap.tif", "--labels",
                   tmp_path / "labels.tif", "--thresholds", "0.5", "--fragments", "3d",
                   "--output", tmp_path / "sweep.json")
    assert s.returncode == 0, s.stderr
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["fragments"] == "3d" and result["chosen"] == 0.5
    assert result["rows"][0]["small"]["objects"] == int(want.max())


def test_default_threshold_single_output(inputs, tmp_path):
    folder, mem, over = inputs
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", folder / "overlap.tif",
                   "--output_dir", tmp_path, "--name", "one")
    assert r.returncode == 0, r.stderr
    assert f"threshold {DEFAULT_THRESHOLD:g}:" in r.stdout
    assert np.array_equal(read_labels(tmp_path / "one.tif"), agglomerate(mem, over)[0])


@pytest.mark.parametrize("args, fragments", [
    (["--merge_threshold", "1.5"], ["--merge_threshold must be in [0, 1], got 1.5"]),
    (["--merge_threshold", "-0.1"], ["--merge_threshold must be in [0, 1], got -0.1"]),
    (["--merge_threshold"], ["--merge_threshold: expected at least one argument"]),
    (["--merge_threshold", "0.5", "0.5"], ["--merge_threshold repeats a value"]),
    (["--scoring", "max"], ["--scoring: invalid choice: 'max'"]),
    (["--input_dir_cytoplasm", "x"], ["--input_dir_cytoplasm is for --method thesis"]),
    (["--fragments", "zwatershed"], ["--fragments zwatershed is for --input_affinities"]),
])
def test_bad_options(inputs, tmp_path, args, fragments):
    folder, _, _ = inputs
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", folder / "overlap.tif",
                   "--output_dir", tmp_path / "out", "--name", "agg", *args)
    assert_user_error(r, *fragments)
    assert not (tmp_path / "out").exists()


def test_counts_that_disagree_name_the_files(inputs, tmp_path):
    folder, mem, over = inputs
    write_tif(tmp_path / "short.tif", over[:-2])
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", tmp_path / "short.tif",
                   "--output_dir", tmp_path / "out", "--name", "agg")
    assert_user_error(r, "6 membrane slices need 5 overlap slices", "got 3", "short.tif")
    write_tif(tmp_path / "wide.tif", np.zeros((5, 96, 90), np.uint8))
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
                   folder / "membrane.tif", "--input_dir_overlap", tmp_path / "wide.tif",
                   "--output_dir", tmp_path / "out", "--name", "agg")
    assert_user_error(r, "96 x 96", "96 x 90")
    assert not (tmp_path / "out").exists()


def test_method_flags_do_not_mix(inputs, tmp_path):
    folder, _, _ = inputs
    r = run_script("reconstruct3D.py", "--input_dir_cytoplasm", folder / "membrane.tif",
                   "--input_dir_overlap", folder / "overlap.tif", "--merge_threshold", "0.5",
                   "--output_dir", tmp_path, "--name", "x")
    assert_user_error(r, "--merge_threshold is for --method agglomerate")
    r = run_script("reconstruct3D.py", "--input_dir_overlap", folder / "overlap.tif",
                   "--output_dir", tmp_path, "--name", "x")
    assert_user_error(r, "--method thesis needs --input_dir_cytoplasm")
    r = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_overlap",
                   folder / "overlap.tif", "--output_dir", tmp_path, "--name", "x")
    assert_user_error(r, "--method agglomerate needs --input_dir_membrane")


def test_choose_lowest_error_lower_threshold_on_ties():
    from neuron3d.sweep import choose

    rows = [{"threshold": t, "labels": {"adapted_rand_error": e}}
            for t, e in ((0.2, 0.3), (0.4, 0.1), (0.6, 0.1), (0.8, 0.5))]
    assert choose(rows, "rand") == 0.4  # the default criterion, VOI: tests/test_sweep.py


def test_sweep_cli_deterministic_and_consistent(inputs, tmp_path):
    import json

    from neuron3d.metrics import evaluate

    folder, mem, over = inputs
    _, labels = synthetic_volume((6, 96, 96), seed=3)
    write_tif(folder / "labels.tif", labels)
    outputs = []
    for name in ("a.json", "b.json"):
        r = run_module("neuron3d.sweep", "--input_dir_membrane", folder / "membrane.tif",
                       "--input_dir_overlap", folder / "overlap.tif", "--labels",
                       folder / "labels.tif", "--thresholds", "0.2", "0.5", "0.8",
                       "--output", tmp_path / name)
        assert r.returncode == 0, r.stderr
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]  # the sweep is deterministic
    result = json.loads(outputs[0])
    assert [row["threshold"] for row in result["rows"]] == [0.2, 0.5, 0.8]
    volumes = agglomerate(mem, over, [0.2, 0.5, 0.8])
    for row, volume in zip(result["rows"], volumes):
        assert row["labels"] == evaluate(labels, volume) and row["evaluation"] is None
    assert result["chosen"] == min(result["rows"], key=lambda r: (
        r["labels"]["adapted_rand_error"], r["threshold"]))["threshold"]
    r = run_module("neuron3d.sweep", "--input_dir_membrane", folder / "membrane.tif",
                   "--input_dir_overlap", folder / "overlap.tif", "--labels",
                   folder / "labels.tif", "--thresholds", "2", "--output", tmp_path / "c.json")
    assert_user_error(r, "--thresholds must be in [0, 1], got 2")

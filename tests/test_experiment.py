"""experiment_8.sh end to end on a tiny synthetic volume (plumbing, a few training steps)."""

import json
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from neuron3d.io import read_labels
from neuron3d.metrics import evaluate

pytest.importorskip("tensorflow")


def run_experiment(tmp_path, *args):
    return subprocess.run(["bash", str(ROOT / "experiment_8.sh"), "--datasets", str(tmp_path / "data"),
                           "--results", str(tmp_path / "results"), *args],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path)


def test_missing_data_says_what_to_download(tmp_path):
    r = run_experiment(tmp_path)
    assert r.returncode == 2
    assert "train-input.tif not found" in r.stderr and "SNEMI3D" in r.stderr and "--demo" in r.stderr
    r = run_experiment(tmp_path, "--paths", "some")
    assert r.returncode == 2 and "--paths must be thesis or all" in r.stderr


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path):
    r = run_experiment(tmp_path, "--demo", "--shape", "6", "64", "64", "--steps", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = tmp_path / "results" / "demo"
    report = json.loads((run / "report.json").read_text())
    steps = report["timings_seconds"]
    for name in ("synthetic", "split_em", "train_nn3", "predict_nn3_b", "predict_nn3_c",
                 "train_nn4", "train_nn5", "predict_nn4_c", "predict_nn5_c", "eroskele_nn5_c",
                 "reconstruct_nn4_nn5", "evaluate_nn4_nn5", "evaluation_c"):
        assert name in steps, name
    # The report's numbers are evaluate3D's numbers for the files on disk.
    row = report["results"][0]
    assert row["key"] == "nn4_nn5"
    truth = read_labels(tmp_path / "data" / "evaluate_c.tif")
    predicted = read_labels(tmp_path / "data" / "demo.tif")
    expected = evaluate(truth, predicted)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key
    assert set(report["baselines"]) == {"all_one_object", "slices_separate"}
    assert report["versions"]["tensorflow"] and report["options"]["paths"] == "thesis"
    assert "Evaluation results:" in r.stdout and "Adjusted Rand Index" in r.stdout
    assert predicted.shape == (6, 32, 32)
    ids = np.unique(predicted[predicted > 0])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # IDs 1..K
    # A re-run resumes: every step is skipped.
    r = run_experiment(tmp_path, "--demo", "--shape", "6", "64", "64", "--steps", "2")
    assert r.returncode == 0
    assert "== train_nn3: done before, skipped" in r.stdout
    assert "== train_nn3\n" not in r.stdout

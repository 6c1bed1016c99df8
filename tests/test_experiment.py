"""experiment_8.sh: the recipe as data, the keyed runner, and end-to-end runs on tiny volumes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from neuron3d import experiment as E
from neuron3d.io import read_labels, read_stack
from neuron3d.metrics import evaluate


def run_experiment(tmp_path, *args, **kwargs):
    return subprocess.run(["bash", str(ROOT / "experiment_8.sh"), "--datasets", str(tmp_path / "data"),
                           "--results", str(tmp_path / "results"), *args],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path, **kwargs)


def options(*argv):
    return E.resolve(E.build_parser().parse_args(list(argv)))


# ---- options and the recipe -------------------------------------------------------------------

def test_missing_data_says_what_to_download_and_writes_nothing(tmp_path):
    r = run_experiment(tmp_path)
    assert r.returncode == 2, r.stderr
    assert "train-input.tif not found" in r.stderr and "SNEMI3D" in r.stderr and "--demo" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "results").exists()  # no empty results folder left behind


@pytest.mark.parametrize("args, fragment", [
    (["--paths", "some"], "--paths"),
    (["--datasets"], "--datasets: expected one argument"),
    (["--demo", "--shape", "8", "96"], "--shape: expected 3 arguments"),
    (["--erosions", "-1"], "--erosions must be >= 0, got -1"),
    (["--steps", "x"], "--steps: invalid int value: 'x'"),
    (["--steps", "0"], "--steps/--epochs must be >= 1"),
    (["--steps", "3", "--epochs", "2"], "not allowed with argument"),
    (["--minutes", "0"], "--minutes must be > 0, got 0.0"),
    (["--minutes", "nan"], "--minutes must be > 0, got nan"),
    (["--shape", "8", "96", "96"], "--shape sets the synthetic volume of --demo"),
    (["--demo", "--shape", "8", "6", "96"], "--shape must be at least 1 x 8 x 8 (quadrants of 4 x 4), got 8 x 6 x 96"),
    (["--demo", "--run", "../x"], "--run must be a plain name"),
    (["--demo", "--run", ""], "--run must be a plain name"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--demo", "--chunks", "4", "0", "8"], "--chunks must be three whole numbers"),
    (["--demo", "--scheduler", "local:2"], "--scheduler and --memory_limit go with --chunks"),
    (["--demo", "--chunks", "4", "8", "8", "--scheduler", "nowhere"], "--scheduler"),
])
def test_bad_options_one_line_exit_2(tmp_path, args, fragment):
    r = run_experiment(tmp_path, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


# ---- the keyed runner -------------------------------------------------------------------------

COPY = """import sys, time
from pathlib import Path
src, dst, suffix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)
dst.write_text(Path(src).read_text() + suffix)
"""


def runner_setup(tmp_path):
    script = tmp_path / "copy.py"
    script.write_text(COPY)
    layout = E.Layout(tmp_path, tmp_path, tmp_path / "run", "r")
    (tmp_path / "in.txt").write_text("x")

    def steps(first="1", second="2"):
        a, b, c = (tmp_path / n for n in ("in.txt", "mid.txt", "out.txt"))
        return [E.Step("first", (str(script), str(a), str(b), first), (a,), (b,)),
                E.Step("second", (str(script), str(b), str(c), second), (b,), (c,))]

    return layout, steps


def run_all(layout, steps, **kwargs):
    runner = E.Runner(layout, out=open(os.devnull, "w"), **kwargs)
    for step in steps:
        runner.run(step)
    return runner


def test_runner_reruns_exactly_what_changed(tmp_path):
    layout, steps = runner_setup(tmp_path)
    assert run_all(layout, steps()).ran == ["first", "second"]
    assert (tmp_path / "out.txt").read_text() == "x12"
    assert run_all(layout, steps()).ran == []  # same commands, same inputs
    assert run_all(layout, steps(second="3")).ran == ["second"]  # only the changed step
    assert (tmp_path / "out.txt").read_text() == "x13"
    r = run_all(layout, steps(first="9", second="3"))  # upstream change: downstream follows
    assert r.ran == ["first", "second"] and (tmp_path / "out.txt").read_text() == "x93"
    (tmp_path / "in.txt").write_text("y")  # the data changed
    assert run_all(layout, steps(first="9", second="3")).ran == ["first", "second"]
    (tmp_path / "out.txt").write_text("tampered")  # an output changed behind the runner's back
    assert run_all(layout, steps(first="9", second="3")).ran == ["second"]
    (tmp_path / "mid.txt").unlink()
    assert run_all(layout, steps(first="9", second="3")).ran == ["first"]  # same content again
    assert run_all(layout, steps(first="9", second="3"), force=True).ran == ["first", "second"]
    record = json.loads((layout.steps_dir / "second.json").read_text())
    assert record["command"][-1] == "3" and str(tmp_path / "mid.txt") in record["inputs"]


def test_runner_failure_names_the_log_and_leaves_no_record(tmp_path):
    layout, steps = runner_setup(tmp_path)
    bad = E.Step("bad", (str(tmp_path / "copy.py"), str(tmp_path / "missing"), str(tmp_path / "o"), "1"),
                 (), (tmp_path / "o",))
    with pytest.raises(E.StepFailed, match=r"step 'bad' failed \(exit 1\); its log: .*bad\.log"):
        run_all(layout, [bad])
    assert not (layout.steps_dir / "bad.json").exists()


def test_runner_cleans_temporaries_and_survives_a_kill(tmp_path):
    layout, steps = runner_setup(tmp_path)
    leftover = tmp_path / ".mid.txt.abc123de.part"  # a killed writer's temporary
    leftover.write_text("half")
    slow = steps(first="1")
    slow[0] = E.Step("first", slow[0].argv + ("5",), slow[0].inputs, slow[0].outputs)
    code = ("import sys; from neuron3d import experiment as E; from pathlib import Path\n"
            f"E.Runner(E.Layout(Path({str(tmp_path)!r}), Path({str(tmp_path)!r}), "
            f"Path({str(tmp_path / 'run')!r}), 'r')).run(E.Step('first', {slow[0].argv!r}, "
            f"(Path({str(tmp_path / 'in.txt')!r}),), (Path({str(tmp_path / 'mid.txt')!r}),)))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the step's child dies with its parent (PR_SET_PDEATHSIG)
    assert not (tmp_path / "mid.txt").exists()
    assert not (layout.steps_dir / "first.json").exists()
    assert run_all(layout, steps()).ran == ["first", "second"]
    assert not leftover.exists()
    assert (tmp_path / "out.txt").read_text() == "x12"


# ---- end to end -------------------------------------------------------------------------------

def ran(stdout):
    return {line[3:].split(" (")[0] for line in stdout.splitlines()
            if line.startswith("== ") and ": done before" not in line}


@pytest.mark.slow
def test_real_calibrated_end_to_end_calibrates_nn3_on_d(tmp_path):
    """--recipe real_calibrated: NN-3's membranes of b, c and d are its predictions mapped with the level of
    d's best F1, and the report scores them beside the predictions at 0.5."""
    pytest.importorskip("tensorflow")
    from neuron3d import calibrate
    from neuron3d.report import prediction_quality

    r = run_experiment(tmp_path, "--demo", "--shape", "6", "64", "64", "--steps", "3",
                       "--recipe", "real_calibrated", "--method", "agglomerate")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run, data = tmp_path / "results" / "demo", tmp_path / "data"
    report = json.loads((run / "report.json").read_text())
    nn3 = report["networks"]["nn3"]
    predicted = {q: read_stack(run / f"P3_em_membrane_{q}" / "images", channel=0) for q in "bcd"}
    truth = {q: read_stack(data / f"membrane_{q}") for q in "bcd"}
    level, _ = calibrate.choose_level(predicted["d"], truth["d"])
    assert nn3["calibration"]["level"] == level
    for q in "bcd":
        membranes = read_stack(data / f"membrane_predicted_{q}.tif")
        assert np.array_equal(membranes, calibrate.remap(predicted[q], level)), q
        assert nn3["quality_calibrated"][q] == prediction_quality(membranes, truth[q],
                                                                   membrane=True)
        assert nn3["quality"][q] == prediction_quality(predicted[q], truth[q], membrane=True)
    assert nn3["calibration"]["f1"] == pytest.approx(nn3["quality_calibrated"]["d"]["f1"])
    assert nn3["training"]["validation"]["best_step"] is not None  # validated on d


@pytest.mark.slow
def test_demo_end_to_end_rerun_with_other_options(tmp_path):
    pytest.importorskip("tensorflow")
    tiny = ("--demo", "--shape", "6", "64", "64", "--steps", "2")
    r = run_experiment(tmp_path, *tiny)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = tmp_path / "results" / "demo"
    report = json.loads((run / "report.json").read_text())
    for name in ("synthetic", "split_em", "train_nn3", "predict_nn3_b", "predict_nn3_c",
                 "train_nn4", "train_nn5", "predict_nn4_c", "predict_nn5_c", "eroskele_nn5_c",
                 "reconstruct_nn4_nn5", "evaluate_nn4_nn5", "evaluation_c"):
        assert name in report["timings_seconds"], name
    row = report["results"][0]
    assert row["key"] == "nn4_nn5"
    truth = read_labels(tmp_path / "data" / "evaluate_c.tif")
    predicted = read_labels(tmp_path / "data" / "demo.tif")
    expected = evaluate(truth, predicted)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key
    assert set(report["baselines"]) == {"all_one_object", "slices_separate"}
    assert report["versions"]["tensorflow"]
    assert report["options"]["paths"] == "thesis" and report["options"]["erosions"] == 10
    assert report["options"]["steps"] == 2 and report["options"]["shape"] == [6, 64, 64]
    assert report["commands"]["eroskele_nn5_c"].endswith("--erosions 10")
    assert "Evaluation results against --true" in r.stdout and "Adjusted Rand Index" in r.stdout
    assert "vs evaluation volume   vs ground truth" in r.stdout
    assert predicted.shape == (6, 32, 32)
    ids = np.unique(predicted[predicted > 0])
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # IDs 1..K
    assert set(report["networks"]) == {"nn3", "nn4", "nn5"}
    # The agglomeration: threshold chosen on d, applied to c, scored against both references.
    sweep = report["agglomeration_sweep"]
    assert sweep["chosen"] == min(sweep["rows"], key=lambda r: (
        r["labels"]["adapted_rand_error"], r["threshold"]))["threshold"]
    assert sweep["inputs"]["labels"].endswith("label_d.tif")
    agglo = report["results"][-1]
    assert agglo["method"] == "agglomerate" and agglo["merge_threshold"] == sweep["chosen"]
    # the plan is static: the agglomeration reads the threshold from the sweep's file
    sweep_file = run / "sweep_agglomerate_d.json"
    assert report["commands"]["agglomerate_c"].split("--merge_threshold_from ")[1].split()[0] \
        == str(sweep_file)
    assert f"threshold {sweep['chosen']:g} (chosen in {sweep_file})" in (
        run / "logs" / "agglomerate_c.log").read_text()
    dense = read_labels(tmp_path / "data" / "demo_agglomerate.tif")
    assert dense.shape == (6, 32, 32) and dense.min() >= 1  # every voxel labelled
    assert agglo["labels_scores"] == evaluate(read_labels(tmp_path / "data" / "label_c.tif"), dense)
    # The figures find every file through the report's layout.
    r = subprocess.run([sys.executable, "-m", "neuron3d.figures", "run", str(run), "--out",
                        str(tmp_path / "figs"), "--no_browser"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "demo_metrics.md", "demo_metrics.png", "demo_networks.png", "demo_training.png",
        "demo_workflow.png"]
    quality = report["networks"]["nn3"]["quality"]
    assert set(quality) == {"b", "c", "d"} and "boundary_1px" in quality["c"]
    assert set(report["networks"]["nn5"]["quality"]) == {"c", "d"}
    training = report["networks"]["nn3"]["training"]
    assert training["steps_reached"] == 2 and training["stopped_by"] == "max_steps"

    # The same command again: every step reused.
    r = run_experiment(tmp_path, *tiny)
    assert r.returncode == 0 and ran(r.stdout) == set(), r.stdout
    assert "== train_nn3: done before (same command, same inputs), skipped" in r.stdout

    # Other erosions: eroskele re-runs, and what reads its output if it changed; no training.
    before = (tmp_path / "data" / "overlap_predicted_c_eroskele")
    before_files = {p.name: p.read_bytes() for p in before.iterdir()}
    r = run_experiment(tmp_path, *tiny, "--erosions", "0")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    changed = before_files != {p.name: p.read_bytes() for p in before.iterdir()}
    # (the agglomeration reads the overlaps before thinning: it is not re-run)
    expected_ran = {"eroskele_nn5_c"} | ({"reconstruct_nn4_nn5", "evaluate_nn4_nn5"} if changed else set())
    assert ran(r.stdout) == expected_ran, r.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["options"]["erosions"] == 0
    assert report["commands"]["eroskele_nn5_c"].endswith("--erosions 0")
    assert report["steps_run"] == sorted(expected_ran, key=list(report["commands"]).index)
    expected = evaluate(truth, read_labels(tmp_path / "data" / "demo.tif"))
    assert report["results"][0]["adapted_rand_error"] == pytest.approx(
        expected["adapted_rand_error"], abs=1e-12)

    # Other training steps: training and everything downstream of it re-run; the data do not.
    r = run_experiment(tmp_path, *tiny[:-1], "3", "--erosions", "0")
    assert r.returncode == 0
    again = ran(r.stdout)
    assert {"train_nn3", "train_nn4", "train_nn5", "predict_nn3_c"} <= again
    assert not again & {"synthetic", "split_em", "membrane_a", "evaluation_c", "combine_em_membrane_a"}
    assert {"predict_nn3_d", "predict_nn5_d"} <= again
    assert json.loads((run / "report.json").read_text())["options"]["steps"] == 3

    # Another seed changes the data: everything re-runs.
    r = run_experiment(tmp_path, *tiny, "--seed", "1", "--dry_run")
    assert r.returncode == 0 and "== synthetic (its command changed)" in r.stdout


def scores_of(run_dir):
    return json.loads((run_dir / "report.json").read_text())["results"][0]


def temporaries(*folders):
    return sorted(str(p) for f in folders for p in f.rglob(".*") if ".part" in p.name)


@pytest.mark.slow
def test_demo_through_zarr_and_dask_equals_the_in_memory_stages(tmp_path):
    """--chunks: evaluation volumes, thinning, reconstruction and evaluation run blockwise on
    a LocalCluster through zarr; each equals the in-memory computation on the same run's
    files (chunks that divide nothing: 4 x 13 x 15 on 6 x 32 x 32 quadrants)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("dask.distributed")
    from neuron3d.labels import eroskele
    from neuron3d.reconstruct import evaluation_volume, reconstruct
    from neuron3d.zarrio import read_zarr

    r = run_experiment(tmp_path, "--demo", "--shape", "6", "64", "64", "--steps", "2",
                       "--chunks", "4", "13", "15", "--method", "thesis")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data, run = tmp_path / "data", tmp_path / "results" / "demo"
    report = json.loads((run / "report.json").read_text())
    assert report["options"]["chunks"] == [4, 13, 15]
    assert report["options"]["scheduler"] == "local:2"
    assert "--scheduler local:2" in report["commands"]["reconstruct_nn4_nn5"]
    labels = read_labels(data / "label_c.tif")
    np.testing.assert_array_equal(read_zarr(data / "evaluate_c.zarr"), evaluation_volume(labels))
    overlap = read_stack(run / "P5_membrane_overlap_c" / "images", channel=0) >= 127
    thin = read_zarr(data / "overlap_predicted_c_eroskele.zarr") > 0
    np.testing.assert_array_equal(thin, eroskele(overlap, 10))
    cytoplasm = read_stack(data / "cytoplasm_predicted_c.tif", channel=0) >= 127
    recon = reconstruct(cytoplasm, thin)
    np.testing.assert_array_equal(read_zarr(data / "demo.zarr"), recon)
    row = report["results"][0]
    expected = evaluate(evaluation_volume(labels), recon)
    for key, value in expected.items():
        assert row[key] == value, key  # bit for bit
    assert row["labels_scores"] == evaluate(labels, recon)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_scores(tmp_path):
    pytest.importorskip("tensorflow")
    tiny = ("--demo", "--shape", "6", "64", "64", "--steps", "40")
    reference = tmp_path / "reference"
    reference.mkdir()
    r = run_experiment(reference, *tiny)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    want = scores_of(reference / "results" / "demo")

    # Kill the whole run (SIGKILL to its process group: the runner and the step it is running)
    # once in the middle of NN-3's training, once in a write.  Killing the runner alone left
    # its step running on as an orphan, which on a loaded machine was still writing (its
    # temporary still there) when the resumed run ended.  The steps are named exactly
    # ("== membrane_predicted_c" alone also matched membrane_predicted_cons_b's line).
    for moment in ("train_nn3", "membrane_predicted_c"):
        proc = subprocess.Popen(["bash", str(ROOT / "experiment_8.sh"), "--datasets",
                                 str(tmp_path / "data"), "--results", str(tmp_path / "results"),
                                 *tiny], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                                start_new_session=True)
        for line in proc.stdout:
            if line.startswith(f"== {moment} "):
                time.sleep(3.0 if "train" in moment else 0.3)
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
    r = run_experiment(tmp_path, *tiny)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    got = scores_of(tmp_path / "results" / "demo")
    for key in ("adapted_rand_error", "adjusted_rand_index", "splits", "merges", "voi_split"):
        assert got[key] == want[key], key
    assert temporaries(tmp_path / "data", tmp_path / "results") == []


# ---- every option checked before any step; runs sharing a folder ------------------------------

def tree(folder):
    """{relative path: sha256} of every file under ``folder`` (its whole state)."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, fragment", [
    (["--demo", "--work", "{tmp}/a_file"], "--work {tmp}/a_file must be a folder, but it is a file"),
    (["--demo", "--work", "{tmp}/a_file/sub"], "--work {tmp}/a_file/sub cannot be a folder"),
    (["--demo", "--work", "{tmp}/locked"], "--work {tmp}/locked is not writable"),
    (["--demo", "--results", "{tmp}/a_file"], "--results {tmp}/a_file must be a folder"),
    (["--demo", "--minutes", "inf"], "--minutes must be a finite number of minutes, got inf"),
    (["--demo", "--minutes", "inf", "--dry_run"], "--minutes must be a finite number"),
])
def test_every_option_is_checked_before_any_step(tmp_path, args, fragment):
    (tmp_path / "a_file").write_text("keep")
    (tmp_path / "locked").mkdir(mode=0o555)
    before = tree(tmp_path)
    r = run_experiment(tmp_path, *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment.format(tmp=tmp_path) in lines[0], r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert tree(tmp_path) == before  # nothing written, no .steps/ or logs/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "locked"]


class FakeRunner:
    """The runner without running: records which steps it was asked to run."""

    asked = []

    def __init__(self, layout, force=False, **kwargs):
        self.ran, self.skipped = [], []

    def run(self, step, dry_run=False):
        FakeRunner.asked.append(step.name)
        self.ran.append(step.name)

    def records(self, steps):
        return {}


@pytest.fixture
def fake_runner(monkeypatch):
    from neuron3d import report

    FakeRunner.asked = []
    monkeypatch.setattr(E, "Runner", FakeRunner)
    monkeypatch.setattr(report, "build_report", lambda *a, **k: {"results": []})
    monkeypatch.setattr(report, "summary_line", lambda report: "")
    return FakeRunner


def test_two_runs_sharing_a_derived_files_folder_are_refused(tmp_path, fake_runner, capsys):
    """Issue: `--demo --shape 8 96 96 --steps 30 --run k1 --datasets D --results R`, then the
    same with `--steps 20 --run k2`, rewrote k1's predictions: the second run is refused."""
    from conftest import assert_user_error_status

    D, R = tmp_path / "D", tmp_path / "R"
    tiny = ["--demo", "--shape", "8", "96", "96", "--method", "agglomerate", "--datasets", str(D),
            "--results", str(R)]
    assert E.main([*tiny, "--steps", "30", "--run", "k1"]) == 0
    assert "train_nn3" in fake_runner.asked
    claim = json.loads((D / E.CLAIM).read_text())
    assert claim == {"run_dir": str((R / "k1").resolve()), "role": "work",
                     "synthetic": {"shape": [8, 96, 96], "seed": 0}}
    (D / "membrane_predicted_b.tif").write_bytes(b"k1's")  # stands for k1's derived files
    capsys.readouterr()
    before, asked = tree(D), len(fake_runner.asked)
    for extra in ([], ["--dry_run"]):
        status = E.main([*tiny, "--steps", "20", "--run", "k2", *extra])
        assert_user_error_status(status, capsys, f"--work {D} holds the derived files of "
                                 f"another run, {(R / 'k1').resolve()}", str(R / "k2"),
                                 "its own --work")
    assert len(fake_runner.asked) == asked and tree(D) == before
    assert not (R / "k2").exists()
    # the same run again is fine; so is k2 with its own derived files folder
    assert E.main([*tiny, "--steps", "20", "--run", "k1"]) == 0
    assert E.main([*tiny, "--steps", "20", "--run", "k2", "--work", str(tmp_path / "W2")]) == 0
    assert json.loads((tmp_path / "W2" / E.CLAIM).read_text())["run_dir"] == str(
        (R / "k2").resolve())
    assert json.loads((D / E.CLAIM).read_text())["run_dir"] == str((R / "k1").resolve())
    # ... but not one that would generate another synthetic volume into D
    capsys.readouterr()
    status = E.main([*tiny, "--seed", "1", "--run", "k3", "--work", str(tmp_path / "W3")])
    assert_user_error_status(status, capsys, f"--datasets {D} holds the data (another "
                             "synthetic volume would replace it) of another run",
                             "its own --datasets")
    assert not (tmp_path / "W3").exists() and tree(D) == before
    # a claim whose run folder is gone is void
    import shutil

    shutil.rmtree(R / "k1")
    assert E.main([*tiny, "--run", "k2"]) == 0
    assert json.loads((D / E.CLAIM).read_text())["run_dir"] == str((R / "k2").resolve())


def test_the_plan_is_computed_once(tmp_path, fake_runner, monkeypatch):
    calls = []
    real = E.plan
    monkeypatch.setattr(E, "plan", lambda *a: calls.append(1) or real(*a))
    assert E.main(["--demo", "--shape", "8", "96", "96", "--datasets", str(tmp_path / "D"),
                   "--results", str(tmp_path / "R"), "--method", "agglomerate"]) == 0
    assert len(calls) == 1 and len(fake_runner.asked) > 30
    assert fake_runner.asked[-2:] == ["agglomerate_c", "evaluate_agglomerate"]

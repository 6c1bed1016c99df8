"""translate.py --max_minutes: a wall-time budget per invocation, recorded in training.json."""

import json

import numpy as np
import pytest
from conftest import combined_images

from imagetranslation import loop, trainer, translate

tf = pytest.importorskip("tensorflow")

TINY = ["--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16", "--scale_size", "16",
        "--gan_weight", "0", "--seed", "3", "--progress_freq", "0", "--save_freq", "0"]


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    return combined_images(tmp_path_factory.mktemp("data"), (3, 16, 16), seed=1)


def _train(combined, out, *extra):
    return translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(out), *TINY, *extra])


def _record(out):
    return json.loads((out / "training.json").read_text())


class TickingClock:
    """A clock that moves one second each time it is read; keeps every reading."""

    def __init__(self):
        self.readings = []

    def __call__(self):
        self.readings.append(float(len(self.readings)))
        return self.readings[-1]


def _weights(out):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    names = sorted(n for n in reader.get_variable_to_shape_map()
                   if n.startswith("generator/"))
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-0.5"])
def test_budget_must_be_a_finite_positive_number(tmp_path, capsys, value):
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--output_dir",
                             str(tmp_path / "out"), "--max_minutes", value])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--max_minutes must be a finite number > 0, got {float(value)}" in err
    assert not (tmp_path / "out").exists()


def test_budget_alone_ends_training_and_a_resume_continues_to_an_uninterrupted_runs_weights(
        tmp_path, combined, monkeypatch):
    # The clock reads 0 when the loop starts and 1 more after every step: a 0.1 minute
    # (6 s) budget is reached after step 6, exactly.
    clock = TickingClock()
    monkeypatch.setattr(loop, "_clock", clock)
    run = tmp_path / "run"
    assert _train(combined, run, "--max_minutes", "0.1") == 0
    assert _record(run) == {"steps_reached": 6, "start_step": 0, "stopped_by": "max_minutes",
                            "seconds": 7.0, "seconds_total": 7.0, "max_steps": None,
                            "max_minutes": 0.1}
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-6")
    saved = json.loads((run / "options.json").read_text())
    assert saved["max_minutes"] == 0.1 and saved["max_steps"] is None
    # Resumed with a new budget of 6 s, it stops at --max_steps 10 first (4 steps; the clock
    # is not read after the last step, only for the record).
    monkeypatch.setattr(loop, "_clock", TickingClock())
    assert _train(combined, run, "--max_minutes", "0.1", "--max_steps", "10",
                  "--checkpoint", str(run)) == 0
    assert _record(run) == {"steps_reached": 10, "start_step": 6, "stopped_by": "max_steps",
                            "seconds": 4.0, "seconds_total": 11.0, "max_steps": 10,
                            "max_minutes": 0.1}
    # Nothing of the budget leaks into the weights: the same as 10 steps in one go.
    monkeypatch.undo()
    assert _train(combined, tmp_path / "straight", "--max_steps", "10") == 0
    assert _record(tmp_path / "straight")["stopped_by"] == "max_steps"
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_budget_and_epochs_whichever_comes_first(tmp_path, combined, monkeypatch):
    monkeypatch.setattr(loop, "_clock", TickingClock())
    assert _train(combined, tmp_path / "a", "--max_minutes", "0.05", "--max_epochs", "2") == 0
    record = _record(tmp_path / "a")
    assert (record["steps_reached"], record["stopped_by"], record["max_steps"]) == (
        3, "max_minutes", 6)  # 3 images: 6 steps for 2 epochs; the 3 s budget ends it first
    monkeypatch.setattr(loop, "_clock", TickingClock())
    assert _train(combined, tmp_path / "b", "--max_minutes", "10", "--max_epochs", "1") == 0
    record = _record(tmp_path / "b")
    assert (record["steps_reached"], record["stopped_by"]) == (3, "max_steps")
    # A resumed run that already reached its steps trains no further.
    monkeypatch.setattr(loop, "_clock", TickingClock())
    assert _train(combined, tmp_path / "b", "--max_minutes", "10", "--max_epochs", "1",
                  "--checkpoint", str(tmp_path / "b")) == 0
    record = _record(tmp_path / "b")
    assert (record["steps_reached"], record["start_step"], record["stopped_by"]) == (
        3, 3, "max_steps")


def test_real_clock_stops_within_one_step_of_the_budget(tmp_path, combined, monkeypatch):
    readings = []

    def clock():
        readings.append(loop.time.monotonic())
        return readings[-1]

    monkeypatch.setattr(loop, "_clock", clock)
    budget = 0.03  # minutes: 1.8 s
    assert _train(combined, tmp_path / "run", "--max_minutes", str(budget)) == 0
    record = _record(tmp_path / "run")
    steps = record["steps_reached"]
    # Readings: the start, one after each step, one for the record.  (How many steps fit in
    # the budget depends on the machine: on a loaded one the first step may take it all.)
    assert len(readings) == steps + 2 and steps >= 1
    elapsed = [t - readings[0] for t in readings[1:-1]]
    assert elapsed[-1] >= 60 * budget  # stopped at the first step past the budget, not later
    assert all(t < 60 * budget for t in elapsed[:-1])
    assert record["stopped_by"] == "max_minutes"
    assert record["seconds"] == pytest.approx(readings[-1] - readings[0], abs=1e-3)
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith(f"ckpt-{steps}")


def test_force_removes_training_json(tmp_path, combined, monkeypatch):
    monkeypatch.setattr(loop, "_clock", TickingClock())
    assert _train(combined, tmp_path / "run", "--max_steps", "1") == 0
    assert (tmp_path / "run" / "training.json").exists()
    assert trainer.remove_run_files(tmp_path / "run")
    assert not (tmp_path / "run" / "training.json").exists()


def test_learning_rate_schedules_exact_values():
    at = trainer.learning_rate_at
    assert at(0.1, "none", 5, 10, 30.0, 60.0) == 0.1
    assert at(0.1, "linear", 0, 10) == pytest.approx(0.1)
    assert at(0.1, "linear", 5, 10) == pytest.approx(0.05)
    assert at(0.1, "cosine", 5, 10) == pytest.approx(0.05)
    assert at(0.1, "cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert at(0.1, "cosine", 1, 4) == pytest.approx(0.1 * (1 + np.cos(np.pi / 4)) / 2)
    # by time alone, and by whichever end is nearer
    assert at(0.1, "linear", 3, None, 45.0, 60.0) == pytest.approx(0.025)
    assert at(0.1, "linear", 8, 10, 15.0, 60.0) == pytest.approx(0.02)   # steps further along
    assert at(0.1, "linear", 2, 10, 45.0, 60.0) == pytest.approx(0.025)  # time further along
    assert at(0.1, "linear", 20, 10, 90.0, 60.0) == 0.0                  # clipped
    assert at(0.1, "cosine", 3) == pytest.approx(0.1)                    # no known end
    with pytest.raises(ValueError, match="--lr_decay must be one of"):
        at(0.1, "step", 1, 10)


def _optimizer_rate(out):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    names = [n for n in reader.get_variable_to_shape_map()
             if n.startswith("gen_optimizer/") and "learning_rate" in n]
    assert len(names) == 1, names
    return float(reader.get_tensor(names[0]))


def test_lr_decay_follows_the_steps_and_is_recorded(tmp_path, combined):
    assert _train(combined, tmp_path / "linear", "--max_steps", "4", "--lr", "0.01",
                  "--lr_decay", "linear") == 0
    # The rate of the last step (after 3 of 4): 0.01 x (1 - 3/4).
    assert _optimizer_rate(tmp_path / "linear") == pytest.approx(0.0025)
    options = json.loads((tmp_path / "linear" / "options.json").read_text())
    assert options["lr_decay"] == "linear"
    assert _train(combined, tmp_path / "constant", "--max_steps", "4", "--lr", "0.01") == 0
    assert _optimizer_rate(tmp_path / "constant") == pytest.approx(0.01)
    # Resumed without --lr_decay: the rate is --lr again, not the one the checkpoint holds.
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--checkpoint",
                           str(tmp_path / "linear"), "--output_dir", str(tmp_path / "more"),
                           *TINY, "--max_steps", "5", "--lr", "0.01"]) == 0
    assert _optimizer_rate(tmp_path / "more") == pytest.approx(0.01)
    # Killed after step 2 of 4 (the step-4 checkpoint removed), then resumed: the schedule is
    # one of steps, so the weights are those of the uninterrupted run.
    assert _train(combined, tmp_path / "killed", "--max_steps", "4", "--lr", "0.01",
                  "--lr_decay", "linear", "--save_freq", "2") == 0
    for stale in (tmp_path / "killed").glob("ckpt-4*"):
        stale.unlink()
    tf.compat.v1.train.update_checkpoint_state(str(tmp_path / "killed"),
                                               str(tmp_path / "killed" / "ckpt-2"))
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--checkpoint",
                           str(tmp_path / "killed"), "--output_dir", str(tmp_path / "killed"),
                           *TINY, "--max_steps", "4", "--lr", "0.01",
                           "--lr_decay", "linear"]) == 0
    whole, resumed = _weights(tmp_path / "linear"), _weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name])


def test_unknown_lr_decay_is_one_line(tmp_path, capsys):
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--output_dir",
                             str(tmp_path / "out"), "--max_steps", "1", "--lr_decay", "step"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "--lr_decay must be one of none, cosine, linear; got 'step'" in err
    assert not (tmp_path / "out").exists()

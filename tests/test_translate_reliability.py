"""translate.py in fresh processes: SIGKILL between checkpoints and resume, --deterministic."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, assert_user_error, combined_images

tf = pytest.importorskip("tensorflow")

TRANSLATE = str(ROOT / "imagetranslation" / "translate.py")
TINY = ["--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16", "--scale_size", "16",
        "--gan_weight", "0", "--seed", "5", "--summary_freq", "50", "--progress_freq", "0"]


def _combined(folder):
    return combined_images(folder, (3, 16, 16), seed=4)


def _args(combined, out, steps, *extra):
    return [sys.executable, TRANSLATE, "--mode", "train", "--input_dir", str(combined),
            "--output_dir", str(out), "--max_steps", str(steps), *TINY, *extra]


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def _weights(out):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    names = sorted(n for n in reader.get_variable_to_shape_map() if not n.startswith("save_counter"))
    return {name: reader.get_tensor(name) for name in names}


def _saved_step(out):
    latest = tf.train.latest_checkpoint(str(out))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_equals_uninterrupted_run(tmp_path):
    combined = _combined(tmp_path)
    steps = 400
    straight = _run(_args(combined, tmp_path / "straight", steps))
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(_args(combined, run, steps, "--save_freq", "10"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _saved_step(run) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = _saved_step(run)
    assert 20 <= killed_at < steps
    # What a kill in the middle of a write leaves: our temporaries and TensorFlow's.
    (run / f".options.json.{proc.pid}-0badc0de.part").write_text("{half")
    (run / f"ckpt-{killed_at + 10}_temp").mkdir(exist_ok=True)
    # Without --checkpoint the run is refused (it would overwrite the checkpoints) ...
    assert_user_error(_run(_args(combined, run, steps)), f"--output_dir {run} already holds a run",
                      "--force")
    # ... with it, training goes on from the last checkpoint to the same weights.
    resumed = _run(_args(combined, run, steps, "--save_freq", "10", "--checkpoint", str(run)))
    assert resumed.returncode == 0, resumed.stderr
    assert f"steps {killed_at}..{steps}" in resumed.stderr
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    leftovers = [p.name for p in run.rglob("*") if ".part" in p.name or "_temp" in p.name]
    assert leftovers == []


@pytest.mark.slow
def test_deterministic_mode_records_its_settings_and_ignores_core_count(tmp_path):
    combined = _combined(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    first = _run(_args(combined, tmp_path / "a", 20, "--deterministic"), env=env)
    assert first.returncode == 0, first.stderr
    runtime = json.loads((tmp_path / "a" / "options.json").read_text())["runtime"]
    assert runtime["op_determinism"] is True
    assert runtime["intra_op_threads"] == runtime["inter_op_threads"] == 1
    assert runtime["onednn_max_cpu_isa"] == "AVX2"
    # The same run confined to one core, as on a smaller machine, gives the same weights.
    one_core = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) \
        if hasattr(os, "sched_setaffinity") else None
    second = _run(_args(combined, tmp_path / "b", 20, "--deterministic", "--threads", "2"),
                  env=env, preexec_fn=one_core)
    assert second.returncode == 0, second.stderr
    runtime = json.loads((tmp_path / "b" / "options.json").read_text())["runtime"]
    assert runtime["intra_op_threads"] == 2 and runtime["cpus"] == (1 if one_core else runtime["cpus"])
    third = _run(_args(combined, tmp_path / "c", 20, "--deterministic", "--threads", "2"), env=env)
    assert third.returncode == 0, third.stderr
    b, c = _weights(tmp_path / "b"), _weights(tmp_path / "c")
    for name in b:
        np.testing.assert_array_equal(b[name], c[name], err_msg=name)

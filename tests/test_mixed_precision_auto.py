"""translate.py --mixed_precision auto: bfloat16 where the CPU has bfloat16 instructions."""

import json

import numpy as np
import pytest
from conftest import train_tiny, training_and_held_out

from imagetranslation import runtime

pytest.importorskip("tensorflow")


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert runtime.cpu_flags(info) == {"fpu", "sse2", "avx512_bf16"}
    assert runtime.cpu_flags(tmp_path / "nowhere") == frozenset()


@pytest.mark.parametrize("value, deterministic, devices, crop, flags, expected", [
    ("auto", False, (), 128, {"avx512_bf16"}, "bf16"),
    ("auto", False, (), 96, {"amx_bf16", "avx2"}, "bf16"),
    ("auto", False, (), 95, {"avx512_bf16"}, None),          # small crops: casts outweigh it
    ("auto", False, (), 128, {"avx2", "avx512f"}, None),     # no bfloat16 instructions
    ("auto", True, (), 128, {"avx512_bf16"}, None),          # --deterministic caps at AVX2
    ("auto", False, ("GPU:0", "GPU:1"), 128, {"avx512_bf16"}, None),  # trains on GPUs
    ("bf16", True, (), 16, set(), "bf16"),                   # an explicit value stays
    (None, False, (), 128, {"avx512_bf16"}, None),
])
def test_auto_resolves_by_the_machine(value, deterministic, devices, crop, flags, expected):
    assert runtime.BF16_MIN_CROP == 96
    assert runtime.resolve_mixed_precision(value, deterministic, devices, crop,
                                           frozenset(flags)) == expected


@pytest.mark.parametrize("flags, recorded", [({"avx512_bf16"}, "bf16"), (set(), None)])
def test_a_run_records_what_auto_chose(tmp_path, monkeypatch, capsys, flags, recorded):
    monkeypatch.setattr(runtime, "cpu_flags", lambda path=None: frozenset(flags))
    monkeypatch.setattr(runtime, "BF16_MIN_CROP", 16)  # the tiny run's crops
    train, _ = training_and_held_out(tmp_path / "data")
    out = tmp_path / "run"
    assert train_tiny(train, out, "--max_steps", "1", "--mixed_precision", "auto", seed=0) == 0
    assert json.loads((out / "options.json").read_text())["mixed_precision"] == recorded
    assert (f"--mixed_precision auto: {recorded or 'float32'} on this machine"
            in capsys.readouterr().err)
    # a resumed run keeps the checkpoint's precision, whatever auto would say now
    monkeypatch.setattr(runtime, "cpu_flags", lambda path=None: frozenset({"avx512_bf16"}
                                                                          - flags))
    assert train_tiny(train, out, "--checkpoint", str(out), "--max_steps", "2",
                      "--mixed_precision", "auto", seed=0) == 0
    assert json.loads((out / "options.json").read_text())["mixed_precision"] == recorded


@pytest.mark.parametrize("precision", ["bf16", None])
def test_a_non_finite_step_in_bf16_is_skipped_not_applied(tmp_path, monkeypatch, capsys,
                                                          precision):
    """A NaN loss at step 2 of 4 (injected): in bfloat16 that step is skipped and counted and
    the weights and batch-norm statistics stay finite; float32 has no guard (and the NaN
    spreads), so the test sees the difference the guard makes."""
    import tensorflow as tf

    from imagetranslation import model as model_module

    calls = tf.Variable(0)
    original = model_module.classic_loss

    def poisoned(*args, **kwargs):
        factor = tf.where(calls.assign_add(1) == 2, float("nan"), 1.0)  # NaN gradients too
        return original(*args, **kwargs) * factor

    monkeypatch.setattr(model_module, "classic_loss", poisoned)
    train, _ = training_and_held_out(tmp_path / "data")
    out = tmp_path / "run"
    extra = ["--mixed_precision", precision] if precision else []
    assert train_tiny(train, out, "--max_steps", "4", *extra, seed=0) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["steps_reached"] == 4
    reader = tf.train.load_checkpoint(str(out / "ckpt-4"))
    values = [reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
              if n.startswith("generator/") and reader.get_tensor(n).dtype.kind == "f"]
    finite = all(np.isfinite(v).all() for v in values)
    if precision == "bf16":
        assert record["skipped_steps"] == 1 and finite
        assert "1 of 4 steps skipped" in capsys.readouterr().err
    else:
        assert "skipped_steps" not in record and not finite

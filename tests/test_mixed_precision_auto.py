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
    """A NaN loss at step 3 of 4 (injected): in bfloat16 that step is skipped and counted, and
    every generator and optimizer variable (weights, Adam's moments, and batch norm's moving
    statistics, which the forward pass had moved) is after it what it was before; float32 has no guard and the NaN spreads,
    so the test sees the difference the guard makes."""
    import tensorflow as tf

    from imagetranslation import model as model_module

    calls = tf.Variable(0)
    original = model_module.classic_loss

    def poisoned(*args, **kwargs):
        factor = tf.where(calls.assign_add(1) == 3, float("nan"), 1.0)  # NaN gradients too
        return original(*args, **kwargs) * factor

    monkeypatch.setattr(model_module, "classic_loss", poisoned)
    train, _ = training_and_held_out(tmp_path / "data")
    out = tmp_path / "run"
    extra = ["--mixed_precision", precision] if precision else []
    assert train_tiny(train, out, "--max_steps", "4", "--save_freq", "1", *extra, seed=0) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["steps_reached"] == 4

    def state(step):
        """Every float variable of a checkpoint: the generator's weights (in process saved
        under the optimizer's _trainable_variables, the same objects found first there), its
        moving statistics and Adam's moments."""
        reader = tf.train.load_checkpoint(str(out / f"ckpt-{step}"))
        return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                if n.startswith(("generator/", "gen_optimizer/"))
                and np.asarray(reader.get_tensor(n)).dtype.kind == "f"}

    before, after, last = state(2), state(3), state(4)
    assert any("moving_mean" in n for n in before) and len(before) > 20
    finite = all(np.isfinite(v).all() for v in last.values())
    if precision == "bf16":
        assert record["skipped_steps"] == 1 and finite
        assert all(np.array_equal(before[n], after[n]) for n in before)  # step 3 undone
        assert not all(np.array_equal(after[n], last[n]) for n in after)  # step 4 applied
        assert "1 of 4 steps skipped" in capsys.readouterr().err
    else:
        assert "skipped_steps" not in record and not finite

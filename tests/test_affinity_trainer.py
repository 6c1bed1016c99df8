"""python -m imagetranslation.affinity: the 3D U-Net from EM to affinities (NN-6)."""

import json

import numpy as np
import pytest
import tifffile

from imagetranslation.affinity import __main__ as cli
from imagetranslation.affinity.data import balance, batch
from imagetranslation.affinity.train import Settings, train, validation_window
from neuron3d.affinity import edge_mask, label_affinities


def _volume(tmp_path, name="a", shape=(8, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    labels[:, : shape[1] // 2] = 1
    labels[:, shape[1] // 2:] = 2
    labels[shape[0] // 2:, :, shape[2] // 2:] = 3
    em = np.where(label_affinities(labels).min(axis=0) > 0, 180, 40).astype(np.uint8)
    em = np.clip(em + rng.integers(-20, 20, size=shape), 0, 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / f"em_{name}.tif", em)
    tifffile.imwrite(tmp_path / f"label_{name}.tif", labels)
    return str(tmp_path / f"em_{name}.tif"), str(tmp_path / f"label_{name}.tif")


TINY = ["--features", "2", "--levels", "2", "--crop", "4", "8", "8", "--save_freq", "100"]


def _run(*argv):
    """The CLI in a new process (--deterministic fixes TensorFlow's threads at its start)."""
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-m", "imagetranslation.affinity", *argv],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def test_slice_stack_conv_is_a_3d_convolution():
    import keras

    from imagetranslation.affinity.network import SliceStackConv

    x = np.random.default_rng(1).normal(size=(2, 5, 6, 7, 4)).astype("float32")
    for z_kernel in (3, 1):
        layer = SliceStackConv(3, z_kernel)
        y = np.asarray(layer(x))
        kernel = np.asarray(layer.conv.kernel)  # (3, 3, z_kernel * 4, 3): slices z-1, z, z+1
        reference = keras.layers.Conv3D(3, (z_kernel, 3, 3), padding="same")
        reference.build(x.shape)
        reference.set_weights([np.stack(np.split(kernel, z_kernel, axis=2)),
                               np.asarray(layer.conv.bias)])
        assert np.allclose(np.asarray(reference(x)), y, atol=1e-5)


def test_unet_maps_a_volume_to_three_affinities_of_its_size():
    from imagetranslation.affinity.network import multiple, unet

    model = unet(features=2, levels=3)
    out = np.asarray(model(np.zeros((1, 8, 12, 16, 1), np.float32)))
    assert out.shape == (1, 8, 12, 16, 3) and ((out > 0) & (out < 1)).all()
    assert multiple(3) == (4, 4, 4) and multiple(3, z_pool=False) == (1, 4, 4)


def test_balance_by_hand():
    target = np.ones((3, 1, 1, 4), dtype=np.float32)
    target[2, 0, 0, 1] = 0
    weight = balance(target, edge_mask((1, 1, 4)))
    # x: 3 edges (x = 1..3), one cut: 3 / 2 for it, 3 / 4 for each of the other two
    assert weight[2].ravel().tolist() == [0, 1.5, 0.75, 0.75]
    assert not weight[0].any()  # z: no edge in one slice
    assert not weight[1].any()  # y: no edge in one row


def test_a_batch_depends_on_seed_and_step_only(tmp_path):
    em, labels = (tifffile.imread(p) for p in _volume(tmp_path))
    volumes = [(em, labels)]
    one = batch(volumes, (4, 8, 8), 2, seed=5, step=7)
    two = batch(volumes, (4, 8, 8), 2, seed=5, step=7)
    other = batch(volumes, (4, 8, 8), 2, seed=5, step=8)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    assert not np.array_equal(one[0], other[0])
    x, target, weight = one
    assert x.shape == (2, 4, 8, 8, 1) and target.shape == weight.shape == (2, 4, 8, 8, 3)
    assert not weight[:, 0, :, :, 0].any()  # z edges of the first slice have no predecessor
    for b in range(2):  # cut and uncut edges weigh the same in each channel that has both
        for d in range(3):
            cut = weight[b, ..., d][target[b, ..., d] == 0].sum()
            uncut = weight[b, ..., d][target[b, ..., d] == 1].sum()
            assert cut == pytest.approx(uncut) or min(cut, uncut) == 0


def test_train_resume_is_bit_identical_and_predicts(tmp_path):
    import tensorflow as tf

    em, labels = _volume(tmp_path)
    common = ["--mode", "train", "--input_em", em, "--input_labels", labels, *TINY,
              "--deterministic"]
    _run(*common, "--output_dir", str(tmp_path / "r1"), "--max_steps", "4")
    _run(*common, "--output_dir", str(tmp_path / "r2"), "--max_steps", "2")
    _run(*common, "--output_dir", str(tmp_path / "r2"), "--checkpoint", str(tmp_path / "r2"),
         "--max_steps", "4")
    a, b = (tf.train.load_checkpoint(str(tmp_path / r / "ckpt-4")) for r in ("r1", "r2"))
    names = [n for n in a.get_variable_to_shape_map() if n.startswith(("model", "optimizer"))]
    assert len(names) > 10
    assert all(np.array_equal(a.get_tensor(n), b.get_tensor(n)) for n in names)
    record = json.loads((tmp_path / "r2" / "training.json").read_text())
    assert record["steps"] == 4 and record["sessions"] == 2
    out = tmp_path / "affs.tif"
    assert cli.main(["--mode", "test", "--checkpoint", str(tmp_path / "r1"), "--input_em", em,
                     "--output", str(out)]) == 0
    affs = tifffile.imread(out)
    assert affs.shape == (8, 16, 16, 3) and affs.dtype == np.uint8
    assert not affs[0, :, :, 0].any()  # no predecessor in z
    tiled = tmp_path / "tiled.tif"
    assert cli.main(["--mode", "test", "--checkpoint", str(tmp_path / "r1"), "--input_em", em,
                     "--output", str(tiled), "--tile", "8", "16", "16", "--margin", "0"]) == 0
    assert np.array_equal(tifffile.imread(tiled), affs)  # one tile: the same prediction


def test_validation_keeps_the_best_step_within_its_share_by_a_fake_clock(tmp_path):
    em, labels = (tifffile.imread(p) for p in _volume(tmp_path))
    v_em, v_labels = (tifffile.imread(p) for p in _volume(tmp_path, "d", seed=1))
    settings = Settings(features=2, levels=2, crop=(4, 8, 8), minutes=0.1, validation_freq=2,
                        deterministic=True)
    ticks = iter(range(0, 10_000, 1))  # one second per reading of the clock
    record = train(settings, [(em, labels)], tmp_path / "run", (v_em, v_labels),
                   log=lambda line: None, clock=lambda: float(next(ticks)))
    assert record["stopped_by"] == "minutes" and record["seconds_total"] >= 6
    assert [v["step"] for v in record["validation"]][:2] == [2, 4]
    best = max(record["validation"], key=lambda v: v["f1"])
    assert record["kept_step"] == best["step"]
    assert (tmp_path / "run" / "best" / "checkpoint").is_file()
    window = validation_window(v_em.shape, settings)
    voxels = np.prod([s.stop - s.start for s in window])
    assert voxels <= 0.1 * 3 * 2 * 1 * 4 * 8 * 8 and voxels >= 2 * 2 * 2


def test_validation_window_shrinks_a_large_volume_to_its_share():
    settings = Settings(crop=(32, 64, 64), max_steps=1, validation_freq=100)
    window = validation_window((125, 125, 125), settings)
    sides = [s.stop - s.start for s in window]
    assert all(side % 4 == 0 for side in sides) and np.prod(sides) <= 0.1 * 3 * 100 * 32 * 64 * 64
    assert [s.start for s in window] == [(125 - side) // 2 for side in sides]
    small = validation_window((8, 8, 8), settings)
    assert [s.stop - s.start for s in small] == [8, 8, 8]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    em, labels = _volume(tmp_path)
    tifffile.imwrite(tmp_path / "small_labels.tif", np.ones((8, 16, 8), np.uint16))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 16, 16, 3), np.uint8))
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((1, 16, 16), np.uint8),
                     photometric="minisblack")
    train_args = ["--mode", "train", "--max_steps", "1", *TINY]
    cases = [
        ([*train_args, "--input_em", em, "--input_labels", str(tmp_path / "small_labels.tif"),
          "--output_dir", str(tmp_path / "x")], "must cover the EM voxel for voxel"),
        ([*train_args, "--input_em", str(tmp_path / "rgb.tif"), "--input_labels", labels,
          "--output_dir", str(tmp_path / "x")], "must be a (z, y, x) EM stack"),
        ([*train_args, "--input_em", em, "--input_labels", labels, "--output_dir",
          str(tmp_path / "x"), "--crop", "16", "16", "16"], "smaller than the crop"),
        ([*train_args, "--input_em", em, "--input_labels", labels, "--output_dir",
          str(tmp_path / "x"), "--crop", "4", "5", "8"], "must be a multiple of"),
        ([*train_args, "--input_em", em, "--input_labels", labels, "--output_dir", em],
         "is an existing file"),
        (["--mode", "test", "--checkpoint", str(tmp_path / "no_run"), "--input_em", em,
          "--output", str(tmp_path / "o.tif")], "options.json not found"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in _one_error_line(capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "o.tif").exists()
    run = tmp_path / "run"
    assert cli.main([*train_args, "--input_em", em, "--input_labels", labels,
                     "--output_dir", str(run)]) == 0
    capsys.readouterr()
    assert cli.main([*train_args, "--input_em", em, "--input_labels", labels,
                     "--output_dir", str(run)]) == 2
    assert "already holds a run" in _one_error_line(capsys)
    for argv, message in [
        (["--input_em", str(tmp_path / "one.tif"), "--output", str(tmp_path / "o.tif")],
         "a 3-D network needs a (z, y, x) stack"),
        (["--input_em", em, "--output", em], "would destroy the input"),
        (["--input_em", em, "--output", str(tmp_path / "o.png")], "must be a .tif file"),
    ]:
        assert cli.main(["--mode", "test", "--checkpoint", str(run), *argv]) == 2
        assert message in _one_error_line(capsys)
    assert not (tmp_path / "o.tif").exists()
    # a 2-D translate.py run is not an affinity network
    (tmp_path / "run2d").mkdir()
    (tmp_path / "run2d" / "options.json").write_text(json.dumps({"mode": "train"}))
    assert cli.main(["--mode", "test", "--checkpoint", str(tmp_path / "run2d"), "--input_em",
                     em, "--output", str(tmp_path / "o.tif")]) == 2
    assert "holds no affinity network" in _one_error_line(capsys)


def test_bf16_computes_in_bfloat16_on_float32_weights_and_predicts(tmp_path):
    from imagetranslation.affinity.train import load

    em, labels = (tifffile.imread(p) for p in _volume(tmp_path))
    settings = Settings(features=2, levels=2, crop=(4, 8, 8), max_steps=2,
                        mixed_precision="bf16")
    train(settings, [(em, labels)], tmp_path / "run", log=lambda line: None)
    assert json.loads((tmp_path / "run" / "options.json").read_text())["mixed_precision"] == "bf16"
    model, loaded = load(tmp_path / "run")
    assert loaded.mixed_precision == "bf16"
    conv = model.get_layer("down0_conv1").conv
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    out = model(em[None, :, :, :, None].astype("float32") / 127.5 - 1, training=False)
    assert np.asarray(out).dtype == np.float32 and out.shape == (1, 8, 16, 16, 3)
    with pytest.raises(ValueError, match="bf16 or off"):
        Settings(max_steps=1, mixed_precision="fp16")


@pytest.mark.parametrize("flags, deterministic, precision, conv",
                         [({"amx_bf16", "avx512_bf16"}, False, "bf16", "conv3d"),
                          ({"amx_bf16"}, True, None, "conv3d"),  # --deterministic: float32
                          ({"avx512_bf16"}, False, None, "stacked"),  # bf16 without AMX: slower
                          ({"avx2"}, False, None, "stacked")])
def test_auto_resolves_by_the_machine(monkeypatch, flags, deterministic, precision, conv):
    import tensorflow as tf

    from imagetranslation import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda path=None: frozenset(flags))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # no GPU
    argv = ["--mode", "train", "--max_steps", "1", "--input_em", "e.tif",
            *(["--deterministic"] if deterministic else [])]
    args = cli.build_parser().parse_args(argv)
    settings = cli._settings(args)
    assert (settings.mixed_precision, settings.conv) == (precision, conv)
    assert cli._auto_note(args, settings).endswith(
        f"--mixed_precision auto: {precision or 'float32'}, --conv auto: {conv} on this machine")
    fixed = cli.build_parser().parse_args([*argv, "--mixed_precision", "off", "--conv",
                                           "stacked"])
    settings = cli._settings(fixed)
    assert (settings.mixed_precision, settings.conv) == (None, "stacked")
    assert cli._auto_note(fixed, settings) is None  # nothing was chosen for the user


def test_a_run_records_what_auto_chose(tmp_path, monkeypatch, capsys):
    from imagetranslation import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda path=None: frozenset({"amx_bf16"}))
    em, labels = _volume(tmp_path)
    argv = ["--mode", "train", "--max_steps", "1", *TINY, "--input_em", em, "--input_labels",
            labels, "--output_dir", str(tmp_path / "run"), "--mixed_precision", "auto"]
    assert cli.main(argv) == 0
    options = json.loads((tmp_path / "run" / "options.json").read_text())
    assert (options["mixed_precision"], options["conv"]) == ("bf16", "conv3d")
    assert "--mixed_precision auto: bf16, --conv auto: conv3d" in capsys.readouterr().err
    # a resumed run builds the network it saved, whatever auto would say on the machine now
    from imagetranslation.affinity import train as train_module

    built, unet = [], train_module.unet
    monkeypatch.setattr(train_module, "unet",
                        lambda *a, **k: built.append((k["dtype"], k["conv"])) or unet(*a, **k))
    monkeypatch.setattr(runtime, "cpu_flags", lambda path=None: frozenset())
    assert cli.main([*argv, "--checkpoint", str(tmp_path / "run"), "--max_steps", "2"]) == 0
    assert built == [("mixed_bfloat16", "conv3d")]
    assert json.loads((tmp_path / "run" / "training.json").read_text())["steps"] == 2


def test_a_non_finite_step_in_bf16_is_skipped(tmp_path, monkeypatch):
    import tensorflow as tf

    from imagetranslation.affinity import train as train_module

    original = train_module.batch

    def poisoned(volumes, crop, size, seed, step, augment, balanced):
        x, target, weight = original(volumes, crop, size, seed, step, augment, balanced)
        return x, target, (np.full_like(weight, np.nan) if step == 1 else weight)

    monkeypatch.setattr(train_module, "batch", poisoned)
    em, labels = (tifffile.imread(p) for p in _volume(tmp_path))
    for precision, name in (("bf16", "guarded"), (None, "plain")):
        settings = Settings(features=2, levels=2, crop=(4, 8, 8), max_steps=3,
                            mixed_precision=precision)
        record = train(settings, [(em, labels)], tmp_path / name, log=lambda line: None)
        if precision:
            reader = tf.train.load_checkpoint(str(tmp_path / name / "ckpt-3"))
            # the weights and Adam's moments (in process, the weights are saved under the
            # optimizer's _trainable_variables: the same objects, found first there)
            tensors = [reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                       if "trainable_variables" in n or n.startswith(("model/", "optimizer/"))]
            floats = [t for t in tensors if np.asarray(t).dtype.kind == "f"]
            assert len(floats) > 20 and all(np.isfinite(t).all() for t in floats)
            assert record["skipped_steps"] == 1
        else:  # float32 has no guard: nothing is counted
            assert record["skipped_steps"] == 0

"""imagetranslation: combine, the networks, train/test/export through translate.main, resume."""

import json

import numpy as np
import pytest
from conftest import assert_user_error, combined_images, run_script
from PIL import Image

from imagetranslation import translate
from imagetranslation.tools import process as combine_cli
from neuron3d import io
from neuron3d.labels import membrane
from neuron3d.synthetic import synthetic_volume

tf = pytest.importorskip("tensorflow")


def _combined(tmp_path, n=3, size=32, seed=0):
    """Combined EM|membrane pairs from synthetic data in tmp_path/combined."""
    return combined_images(tmp_path, (n, size, size), seed)


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith(("translate.py", "process.py"))]
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def test_combine_gray_rgba_and_errors(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "a" / "1.png")
    Image.fromarray(np.full((4, 5, 4), 9, np.uint8), "RGBA").save(tmp_path / "b" / "1.png")
    assert combine_cli.main(["--operation", "combine", "--input_dir", str(tmp_path / "a"),
                             "--b_dir", str(tmp_path / "b"), "--output_dir", str(tmp_path / "c")]) == 0
    pair = np.asarray(Image.open(tmp_path / "c" / "1.png"))
    assert pair.shape == (4, 10, 3)
    assert (pair[:, :5] == 7).all() and (pair[:, 5:] == 9).all()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "a" / "2.png")
    assert combine_cli.main(["--operation", "combine", "--input_dir", str(tmp_path / "a"),
                             "--b_dir", str(tmp_path / "b"), "--output_dir", str(tmp_path / "d")]) == 2
    _one_error_line(capsys, "2.png", "no partner")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "b" / "2.png")
    assert combine_cli.main(["--operation", "combine", "--input_dir", str(tmp_path / "a"),
                             "--b_dir", str(tmp_path / "b"), "--output_dir", str(tmp_path / "d")]) == 2
    _one_error_line(capsys, "sizes differ", "2.png")
    assert not (tmp_path / "d").exists()  # no empty output folder after a failed combine


def test_combine_refuses_to_overwrite_its_inputs_and_replaces_stale_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder, value in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        for name in ("x1", "x10", "x2"):
            Image.fromarray(np.full((2, 3), value, np.uint8)).save(tmp_path / folder / f"{name}.png")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.png")}
    for flag, same in (("--input_dir", "a/"), ("--input_dir", str(tmp_path / "b" / ".." / "a")),
                       ("--b_dir", str(tmp_path / "b"))):
        r = run_script("imagetranslation/tools/process.py", "--operation", "combine",
                       "--input_dir", "a", "--b_dir", "b", "--output_dir", same, cwd=tmp_path)
        assert_user_error(r, f"--output_dir {same}", "is the same folder as", flag,
                          "choose another --output_dir")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.png")} == before
    # A re-run with fewer pairs leaves no stale pair; other files stay; no temporaries.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    (tmp_path / "c" / "old.png").write_bytes(b"stale")
    (tmp_path / "a" / "x10.png").unlink()
    assert combine_cli.main(["--operation", "combine", "--input_dir", "a", "--b_dir", "b",
                             "--output_dir", "c"]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["notes.txt", "x1.png", "x2.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert np.asarray(Image.open(tmp_path / "c" / "x2.png"))[..., 0].tolist() == [[1, 1, 1, 2, 2, 2]] * 2
    # Two images with one base name are ambiguous partners.
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "b" / "x1.tif")
    r = run_script("imagetranslation/tools/process.py", "--operation", "combine",
                   "--input_dir", "a", "--b_dir", "b", "--output_dir", "d", cwd=tmp_path)
    assert_user_error(r, "two images in --b_dir share the base name 'x1'")
    assert not (tmp_path / "d").exists()


def test_resnet_parameter_count_by_hand():
    from imagetranslation.models import resnet_generator

    model = resnet_generator(3, 3, ngf=4, n_res_blocks=1)
    conv = lambda k, i, o: k * k * i * o + o  # noqa: E731
    bn = lambda c: 4 * c  # noqa: E731  gamma, beta, moving mean and variance
    expected = (conv(7, 3, 4) + conv(3, 4, 8) + conv(3, 8, 16)   # encoder, no norm
                + 2 * (conv(3, 16, 16) + bn(16))                  # one residual block
                + conv(4, 16, 8) + bn(8) + conv(4, 8, 4) + bn(4)  # transposed convs
                + conv(7, 4, 3))
    assert model.count_params() == expected
    x = np.random.default_rng(0).uniform(-1, 1, (1, 20, 28, 3)).astype(np.float32)
    y = np.asarray(model(x))
    assert y.shape == (1, 20, 28, 3) and np.abs(y).max() <= 1.0
    # Batch normalisation uses the current batch's statistics, at test time too.
    other = np.random.default_rng(1).uniform(-1, 1, (1, 20, 28, 3)).astype(np.float32)
    together = np.asarray(model(np.concatenate([x, other]), training=False))[0]
    assert not np.allclose(together, y, atol=1e-4)


def test_unet_and_discriminator_shapes():
    from imagetranslation.models import patch_discriminator, unet_generator

    unet = unet_generator(3, 3, ngf=4, depth=4)
    assert unet(np.zeros((1, 32, 48, 3), np.float32)).shape == (1, 32, 48, 3)
    disc = patch_discriminator(ndf=4)
    out = disc([np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 64, 3), np.float32)])
    assert out.shape == (1, 6, 6, 1)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6: 70 x 70 patches


def test_thesis_commands_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    em, ids = synthetic_volume((2, 32, 32), seed=2)
    io.write_slices("datasets/em_a", em)
    io.write_slices("datasets/membrane_a", membrane(ids))
    line = ("python imagetranslation/tools/process.py --operation combine --input_dir datasets/em_a "
            "--b_dir datasets/membrane_a --output_dir datasets/combined/")
    assert combine_cli.main(line.split()[2:]) == 0
    line = ("python imagetranslation/translate.py --mode train --input_dir datasets/combined --output_dir results/T3_em_membrane_a "
            "--which_direction AtoB --Y_loss square --model pix2pix --generator resnet --fliplr --flipud --transpose "
            "--max_epochs 2000 --display_freq 500 --gan_weight 0")
    args = line.split()[2:]
    args[args.index("--max_epochs") + 1] = "1"  # the thesis' 2000 epochs are hours
    args[args.index("--display_freq") + 1] = "1"
    assert translate.main(args) == 0
    out = tmp_path / "results" / "T3_em_membrane_a"
    options = json.loads((out / "options.json").read_text())
    assert options["ngf"] == 32 and options["n_res_blocks"] == 9 and options["max_steps"] == 2
    assert (out / "index.html").exists() and len(list((out / "images").glob("*.png"))) == 6
    assert list(out.glob("events.out.tfevents.*")) and (out / "checkpoint").exists()
    line = ("python imagetranslation/translate.py --mode test --checkpoint results/T3_em_membrane_a --input_dir datasets/combined/ "
            "--output_dir results/P3_em_membrane_b --image_height 512 --image_width 512 --model pix2pix")
    args = line.replace("512", "32").split()[2:]
    assert translate.main(args) == 0
    images = tmp_path / "results" / "P3_em_membrane_b" / "images"
    assert sorted(p.name for p in images.iterdir()) == [
        "00-inputs.png", "00-outputs.png", "00-targets.png",
        "01-inputs.png", "01-outputs.png", "01-targets.png"]
    assert np.asarray(Image.open(images / "00-outputs.png")).shape == (32, 32, 3)
    assert "00-outputs.png" in (images.parent / "index.html").read_text()


def _train(tmp_path, combined, out, steps, checkpoint=None):
    args = ["--mode", "train", "--input_dir", str(combined), "--output_dir", str(out),
            "--ngf", "4", "--n_res_blocks", "1", "--crop_size", "32", "--scale_size", "32",
            "--max_steps", str(steps), "--seed", "7", "--gan_weight", "1", "--ndf", "4",
            "--summary_freq", "5"]
    if checkpoint:
        args += ["--checkpoint", str(checkpoint)]
    assert translate.main(args) == 0


def _weights(out):
    from imagetranslation.trainer import Model

    options = json.loads((out / "options.json").read_text())
    model = Model(options)
    model.checkpoint.restore(tf.train.latest_checkpoint(str(out))).expect_partial()
    return int(model.step.numpy()), [v.numpy() for v in model.generator.weights]


def test_resume_equals_uninterrupted_run(tmp_path):
    combined = _combined(tmp_path, n=3, size=40)
    _train(tmp_path, combined, tmp_path / "straight", 40)
    _train(tmp_path, combined, tmp_path / "resumed", 20)
    _train(tmp_path, combined, tmp_path / "resumed", 40, checkpoint=tmp_path / "resumed")
    step_a, a = _weights(tmp_path / "straight")
    step_b, b = _weights(tmp_path / "resumed")
    assert step_a == step_b == 40
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_export_predicts_without_this_code(tmp_path):
    combined = _combined(tmp_path, n=2, size=32)
    _train(tmp_path, combined, tmp_path / "t", 2)
    assert translate.main(["--mode", "export", "--checkpoint", str(tmp_path / "t"),
                           "--output_dir", str(tmp_path / "x")]) == 0
    loaded = tf.saved_model.load(str(tmp_path / "x" / "saved_model"))
    image = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    from imagetranslation.trainer import load_for_inference

    generator, _ = load_for_inference(tmp_path / "t")
    np.testing.assert_allclose(np.asarray(loaded.serve(image)), np.asarray(generator(image)),
                               atol=1e-5)


def test_bad_inputs(tmp_path, capsys):
    base = ["--output_dir", str(tmp_path / "out")]
    assert translate.main(["--mode", "train", "--input_dir", str(tmp_path / "nope"), "--max_steps", "1"] + base) == 2
    _one_error_line(capsys, "does not exist", "nope")
    (tmp_path / "empty").mkdir()
    assert translate.main(["--mode", "train", "--input_dir", str(tmp_path / "empty"), "--max_steps", "1"] + base) == 2
    _one_error_line(capsys, "no images", "empty")
    (tmp_path / "odd").mkdir()
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "odd" / "0.png")
    assert translate.main(["--mode", "train", "--input_dir", str(tmp_path / "odd"), "--max_steps", "1"] + base) == 2
    _one_error_line(capsys, "0.png", "width 9 is odd")
    combined = _combined(tmp_path, n=1, size=16)
    assert translate.main(["--mode", "train", "--input_dir", str(combined)] + base) == 2
    _one_error_line(capsys, "--max_epochs or --max_steps")
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--max_steps", "1",
                           "--scale_size", "16", "--crop_size", "64"] + base) == 2
    _one_error_line(capsys, "crop_size 64 is larger than the scaled image (16 x 16)")
    assert translate.main(["--mode", "test", "--input_dir", str(combined)] + base) == 2
    _one_error_line(capsys, "needs --checkpoint")
    (tmp_path / "ckpt").mkdir()
    assert translate.main(["--mode", "test", "--input_dir", str(combined), "--checkpoint",
                           str(tmp_path / "ckpt")] + base) == 2
    _one_error_line(capsys, "no options.json", "ckpt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [
    ["--generator", "unet", "--u_depth", "5", "--Y_loss", "dice", "--loss", "square", "--gan_weight", "1"],
    ["--Y_loss", "logistic", "--mixed_precision", "bf16", "--gan_weight", "0", "--no_transpose"],
    ["--Y_loss", "hinge", "--batch_size", "2", "--xla", "--gan_weight", "0"],
])
def test_other_configurations_train_and_predict(tmp_path, extra, monkeypatch):
    from imagetranslation import trainer
    from imagetranslation.losses import classic_loss

    seen = {}

    class Recorded(trainer.Model):
        """The run's model, its initial weights, and its first step's batch and losses."""

        def train_step_fn(self):
            seen["model"], seen["function"] = self, super().train_step_fn()
            seen["initial"] = [v.numpy() for v in self.generator.variables]
            if self.discriminator is not None:
                seen["initial_d"] = [v.numpy() for v in self.discriminator.trainable_variables]

            def step(inputs, targets):
                result = seen["function"](inputs, targets)
                seen.setdefault("first", (inputs.numpy(), targets.numpy(),
                                          float(result["gen_loss_classic"]),
                                          float(result["gen_loss_GAN"])))
                return result
            return step

    monkeypatch.setattr(trainer, "Model", Recorded)
    combined = _combined(tmp_path, n=2, size=32)
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(tmp_path / "t"), "--ngf", "4", "--n_res_blocks", "1", "--ndf", "4",
                           "--crop_size", "32", "--scale_size", "32", "--max_steps", "3"] + extra) == 0
    saved = json.loads((tmp_path / "t" / "options.json").read_text())
    kind = extra[extra.index("--Y_loss") + 1]
    assert saved["Y_loss"] == kind
    assert saved["transpose"] == ("--no_transpose" not in extra)
    # Behaviour, not only the record: the first step's loss is the chosen loss of the initial
    # generator's outputs on that step's batch (and not another loss's value) ...
    model, (inputs, targets, logged, gan) = seen["model"], seen["first"]
    trained = [v.numpy() for v in model.generator.variables]
    for variable, value in zip(model.generator.variables, seen["initial"]):
        variable.assign(value)
    outputs = tf.cast(model.generator(inputs), tf.float32)
    assert float(classic_loss(kind, outputs, tf.constant(targets))) == pytest.approx(
        logged, rel=2e-2 if "bf16" in extra else 1e-4)
    other = "square" if kind != "square" else "hinge"
    assert float(classic_loss(other, outputs, tf.constant(targets))) != pytest.approx(
        logged, rel=2e-2)
    for variable, value in zip(model.generator.variables, trained):
        variable.assign(value)
    # ... bf16 computes in bfloat16 (the output in float32), --xla compiles the step ...
    conv = next(layer for layer in model.generator.layers if "conv" in layer.name)
    assert conv.compute_dtype == ("bfloat16" if "bf16" in extra else "float32")
    assert model.generator.get_layer("output").compute_dtype == "float32"
    assert seen["function"]._jit_compile is ("--xla" in extra)
    # ... and --gan_weight 1 trains a discriminator, whose weights move, against a GAN loss.
    if "--gan_weight" in extra and extra[extra.index("--gan_weight") + 1] == "1":
        assert model.discriminator is not None and gan > 0
        moved = [not np.array_equal(a, v.numpy()) for a, v in
                 zip(seen["initial_d"], model.discriminator.trainable_variables)]
        assert all(moved)
    else:
        assert model.discriminator is None and gan == 0
    assert translate.main(["--mode", "test", "--checkpoint", str(tmp_path / "t"),
                           "--input_dir", str(combined), "--output_dir", str(tmp_path / "p")]) == 0
    out = np.asarray(Image.open(tmp_path / "p" / "images" / "01-outputs.png"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("where", ["inside", "around"])
def test_combine_refuses_an_output_inside_or_around_an_input(tmp_path, capsys, where):
    for folder in ("d/a", "d/b"):
        (tmp_path / folder).mkdir(parents=True)
        Image.fromarray(np.full((2, 3), 5, np.uint8)).save(tmp_path / folder / "1.png")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "d" / "a" / "c" if where == "inside" else tmp_path / "d"
    assert combine_cli.main(["--operation", "combine", "--input_dir", str(tmp_path / "d" / "a"),
                             "--b_dir", str(tmp_path / "d" / "b"), "--output_dir", str(out)]) == 2
    how = "lies inside" if where == "inside" else "contains"
    _one_error_line(capsys, f"--output_dir {out} {how} --input_dir {tmp_path / 'd' / 'a'}")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "d" / "a" / "c").exists()

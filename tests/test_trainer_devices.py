"""translate.py --devices: training on several devices (tf.distribute.MirroredStrategy).

Without GPUs the tests split the CPU into two logical devices
(``tf.config.set_logical_device_configuration``), which must happen before
TensorFlow starts: they run in a subprocess.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, assert_user_error_status, combined_images

from imagetranslation import translate
from imagetranslation.options import parse_devices

tf = pytest.importorskip("tensorflow")

#: Prepended to the scripts: two logical CPU devices, then the project's modules.
TWO_CPUS = r'''
import contextlib, io, json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from imagetranslation import data as D, models, trainer, translate
'''

#: One training step on two replicas against one step on one device with the same global batch
#: (4 images), from the same weights.  Adam is replaced by plain SGD (update = lr x gradient)
#: so that the comparison sees the gradients themselves: Adam's first step is about
#: lr x sign(gradient), blind to a wrong gradient scale.  The two controls break what the
#: equality rests on (synchronized batch statistics; dice over the global batch) to show that
#: the comparison can fail.
ONE_STEP = TWO_CPUS + r'''
from imagetranslation import model as M  # where the Model finds its parts

M.FusedAdam = lambda learning_rate, beta_1: keras.optimizers.SGD(learning_rate)
real_generator, real_discriminator = M.build_generator, M.patch_discriminator
real_classic = M.classic_loss
# One strategy for the process (see trainer._STRATEGIES).
strategy, names = trainer.device_strategy("CPU:0,CPU:1", 4)
assert names == ["CPU:0", "CPU:1"] and strategy.num_replicas_in_sync == 2


def compare(options, batch_statistics="global", dice="global"):
    M.build_generator = lambda o, synchronized=False: real_generator(
        o, synchronized=synchronized and batch_statistics == "global")
    M.patch_discriminator = lambda **kw: real_discriminator(
        **{**kw, "synchronized": kw["synchronized"] and batch_statistics == "global"})
    M.classic_loss = lambda kind, o, t, replica_sum=None, pos_weight=1.0: real_classic(
        kind, o, t, replica_sum if dice == "global" else None, pos_weight)
    trainer.configure(options)
    one = trainer.Model(options)
    two = trainer.Model(options, strategy)
    nets = [n for n in ("generator", "discriminator") if getattr(one, n) is not None]
    for name in nets:
        getattr(two, name).set_weights(getattr(one, name).get_weights())
    two.reset_ema()  # --ema: the average starts at the copied weights

    def weights(model):
        return [np.asarray(w) for n in nets for w in getattr(model, n).weights]

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    y = np.where(rng.uniform(size=(4, 32, 32, 3)) < 0.3, 1.0, -1.0).astype(np.float32)
    start = weights(one)
    r1 = one.train_step_fn()(x, y)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    shares = next(iter(strategy.experimental_distribute_dataset(batches)))
    assert [s.shape[0] for s in strategy.experimental_local_results(shares[0])] == [2, 2]
    r2 = two.train_step_fn()(*shares)
    w1, w2 = weights(one), weights(two)
    update = max(np.abs(a - b).max() for a, b in zip(w1, start))
    losses = {k: [float(r1[k]), float(r2[k])] for k in ("gen_loss_classic", "gen_loss_GAN",
                                                         "discrim_loss")}
    averages = [[np.asarray(w) for w in m.generator_ema.weights] for m in (one, two)
                if m.generator_ema is not None]
    return {"update": float(update),
            "difference": float(max(np.abs(a - b).max() for a, b in zip(w1, w2))),
            "ema_difference": float(max(np.abs(a - b).max() for a, b in zip(*averages)))
            if averages else None,
            "losses": losses, "steps": [int(r1["step"]), int(r2["step"])],
            "outputs": [list(r1["outputs"].shape), list(r2["outputs"].shape)]}


base = dict(seed=0, ngf=4, n_res_blocks=1, ndf=4, lr=1.0, beta1=0.5, classic_weight=100.0,
            loss="log", mixed_precision=None)
gan = dict(base, generator="resnet", gan_weight=1.0, Y_loss="square")
dice = dict(base, generator="highwaynet", n_highway_units=1, gan_weight=0.0, Y_loss="dice")
print(json.dumps({
    "resnet_gan": compare(gan),
    "highwaynet_dice": compare(dice),
    "resnet_gan_ema": compare(dict(gan, ema=0.5)),
    "control_replica_statistics": compare(gan, batch_statistics="replica"),
    "control_replica_dice": compare(dice, dice="replica"),
}))
'''

#: translate.py on two devices: the same network as on one device (Adam, 4 steps, batch 2), and
#: checkpoints that move between the two (2 steps on one kind, then resumed to 4 on the other).
CLI = TWO_CPUS + r'''
data, folder = sys.argv[1], sys.argv[2]


def run(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = translate.main(list(args))
    return status, err.getvalue().strip().splitlines()


def train(out, steps, *extra):
    return run("--mode", "train", "--input_dir", data, "--output_dir", f"{folder}/{out}",
               "--max_steps", str(steps), "--ngf", "4", "--n_res_blocks", "1", "--crop_size",
               "16", "--scale_size", "16", "--gan_weight", "0", "--batch_size", "2", "--seed",
               "3", "--progress_freq", "0", "--Y_loss", "square", *extra)


TWO = ("--devices", "CPU:0,CPU:1")
report = {"runs": {}}
for out, steps, extra in (("zero", 0, ()), ("one", 4, ()), ("two", 4, TWO + ("--display_freq", "2")),
                          ("two_one", 2, TWO), ("two_one", 4, ("--checkpoint", f"{folder}/two_one")),
                          ("one_two", 2, ()), ("one_two", 4, TWO + ("--checkpoint", f"{folder}/one_two"))):
    status, err = train(out, steps, *extra)
    report["runs"][f"{out} {steps}"] = [status, [line for line in err if "training" in line]]
images = D.to_model_range(D.load_pairs(data)[0])


def predictions(out, test_mode=False):
    """Outputs with the batch's statistics (as in training), or as --mode test predicts them
    (batch norm's moving averages)."""
    generator, _ = trainer.load_for_inference(f"{folder}/{out}")
    if test_mode:
        return np.stack([trainer.predict(generator, image, 4) for image in images])
    return np.asarray(generator(images))


def state(out):
    """Every variable of a run's generator and its Adam moments, by "<layer>:<name>", and the step.

    A bias is named "...:bias_before_norm" where batch norm follows its conv: it cancels there,
    so its gradient is rounding noise, which Adam turns into steps of about lr; such biases,
    their moments and the moving means (which add them up) follow no signal and are left out
    of the comparison.
    """
    model = trainer.Model(json.load(open(f"{folder}/{out}/options.json")))
    model.checkpoint.restore(tf.train.latest_checkpoint(f"{folder}/{out}")).expect_partial()
    layers = model.generator.layers
    names = {}
    for i, layer in enumerate(layers):
        normed = i + 1 < len(layers) and isinstance(layers[i + 1], keras.layers.BatchNormalization)
        for w in layer.weights:
            names[id(w)] = f"{i}:{w.name}" + ("_before_norm" if normed and w.name == "bias" else "")
    values = {names[id(w)]: np.asarray(w) for w in model.generator.weights}
    opt = model.g_opt
    for v, m, u in zip(opt._trainable_variables, opt._momentums, opt._velocities):
        values[names[id(v)] + ":m"], values[names[id(v)] + ":v"] = np.asarray(m), np.asarray(u)
    return values, int(model.step.numpy())


def largest(a, b, names, relative=False):
    return max(float(np.abs(a[n] - b[n]).max() / (np.abs(b[n]).max() if relative else 1.0))
               for n in names)


(reference, _), (start, _) = state("one"), state("zero")
noise = [n for n in reference if "_before_norm" in n or "moving_mean" in n]
kinds = {"weights": [n for n in reference if n.endswith((":kernel", ":bias", ":gamma", ":beta"))],
         "moments": [n for n in reference if n.endswith((":m", ":v")) and n not in noise],
         "moving_variances": [n for n in reference if n.endswith(":moving_variance")]}
assert sum(n.endswith("_before_norm") for n in noise) == 4 and all(kinds.values()), sorted(reference)
report["moved"] = largest(reference, start, kinds["weights"])
report["outputs_moved"] = float(np.abs(predictions("one") - predictions("zero")).max())
report["compared"] = {}
for out in ("two", "two_one", "one_two"):
    values, step = state(out)
    report["compared"][out] = {
        "same_names": sorted(values) == sorted(reference),
        "step": step,
        "outputs": float(np.abs(predictions(out) - predictions("one")).max()),
        "test_outputs": float(np.abs(predictions(out, True) - predictions("one", True)).max()),
        **{kind: largest(values, reference, names, relative=kind != "weights")
           for kind, names in kinds.items()},
        "noise": largest(values, reference, [n for n in noise if n.endswith("_before_norm")]),
    }
report["options"] = json.load(open(f"{folder}/two/options.json"))["training_devices"]
report["display"] = sorted(p for p in __import__("os").listdir(f"{folder}/two/images"))
report["test"] = run("--mode", "test", "--checkpoint", f"{folder}/two", "--input_dir", data,
                     "--output_dir", f"{folder}/predicted")[0]
report["errors"] = {
    "batch": train("bad", 1, "--devices", "CPU:0,CPU:1", "--batch_size", "3"),
    "missing": train("bad", 1, "--devices", "cpu:0,CPU:2"),
    "xla": train("bad", 1, "--devices", "CPU:0,CPU:1", "--xla"),
}
print(json.dumps(report))
'''


def _run(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_parse_devices():
    assert parse_devices(None) == parse_devices("auto") == "auto"
    assert parse_devices(" ALL ") == "all" and parse_devices("cpu") == "cpu"
    assert parse_devices("GPU:0,gpu:1") == ("GPU:0", "GPU:1")
    assert parse_devices("/device:GPU:1, /gpu:0,CPU:0") == ("GPU:1", "GPU:0", "CPU:0")
    with pytest.raises(ValueError, match=r"--devices GPU:0,GPU:0: GPU:0 is named twice"):
        parse_devices("GPU:0,GPU:0")
    with pytest.raises(ValueError, match=r"--devices tpu:0: 'tpu:0' is not a device name"):
        parse_devices("tpu:0")
    with pytest.raises(ValueError, match=r"devices in x.json must be a string, got 2"):
        parse_devices(2, source="x.json")


@pytest.mark.parametrize("value, expected", [
    ("GPU:x", "--devices GPU:x: 'GPU:x' is not a device name (expected auto, all, cpu, or a "
              "comma list such as GPU:0,GPU:1)"),
    ("GPU:0,,GPU:1", "--devices GPU:0,,GPU:1: '' is not a device name"),
    ("GPU:7", "--devices GPU:7: no device GPU:7 here (visible: CPU:0"),
])
def test_unknown_devices_are_one_line(tmp_path, capsys, value, expected):
    combined = combined_images(tmp_path, (1, 16, 16), seed=0)
    status = translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                             str(tmp_path / "out"), "--max_steps", "1", "--devices", value])
    assert_user_error_status(status, capsys, expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_one_step_on_two_replicas_equals_one_step_on_one_device():
    report = _run(ONE_STEP)
    for name in ("resnet_gan", "highwaynet_dice", "resnet_gan_ema"):
        result = report[name]
        assert result["steps"] == [1, 1] and result["outputs"] == [[4, 32, 32, 3], [2, 32, 32, 3]]
        assert result["update"] > 1e-3, result
        assert result["difference"] <= 3e-5 * result["update"], (name, result)
        if name.endswith("_ema"):  # the average moves on every replica alike
            assert result["ema_difference"] <= 3e-5 * result["update"], (name, result)
        else:
            assert result["ema_difference"] is None
        for key, (one, two) in result["losses"].items():
            assert abs(one - two) <= 1e-5 * max(1.0, abs(one)), (name, key, one, two)
    for name in ("control_replica_statistics", "control_replica_dice"):
        result = report[name]
        assert result["difference"] > 1e-3 * result["update"], (name, result)


@pytest.mark.slow
def test_two_devices_train_like_one_and_checkpoints_move_between_them(tmp_path):
    combined = combined_images(tmp_path, (4, 16, 16), seed=2)
    report = _run(CLI, combined, tmp_path)
    for run, (status, lines) in report["runs"].items():
        assert status == 0, (run, lines)
    assert "devices CPU:0, CPU:1 (1 image each)" in report["runs"]["two 4"][1][0]
    assert report["options"] == ["CPU:0", "CPU:1"]
    assert report["display"] == ["00000002-inputs.png", "00000002-outputs.png",
                                 "00000002-targets.png", "00000004-inputs.png",
                                 "00000004-outputs.png", "00000004-targets.png"]
    # As after 4 steps on one device, whether the 4 steps ran on two devices or moved between
    # one and two after step 2: outputs, weights, Adam's moments, batch norm's moving variances
    # (all but the biases that batch norm cancels and the moving means, see state()).
    assert report["outputs_moved"] > 0.1 and report["moved"] > 1e-4
    for out, compared in report["compared"].items():
        assert compared["same_names"] and compared["step"] == 4, (out, compared)
        assert compared["outputs"] <= 1e-5, (out, compared)
        # --mode test normalises with the moving averages, whose means lag behind the noisy
        # biases: a few 1e-4 here, a fraction of a grey level (1/127.5).
        assert compared["test_outputs"] <= 2e-3, (out, compared)
        assert compared["weights"] <= 1e-6, (out, compared)
        assert compared["moments"] <= 1e-3 and compared["moving_variances"] <= 1e-5, (out, compared)
    assert report["test"] == 0
    errors = report["errors"]
    assert errors["batch"] == [2, ["translate.py: error: --devices CPU:0,CPU:1: --batch_size 3 cannot "
                                   "be split evenly over its 2 devices (CPU:0, CPU:1); pass a "
                                   "multiple of 2"]]
    assert errors["missing"] == [2, ["translate.py: error: --devices cpu:0,CPU:2: no device CPU:2 here "
                                     "(visible: CPU:0, CPU:1)"]]
    assert errors["xla"][0] == 2 and "--xla" in errors["xla"][1][0]
    assert not (tmp_path / "bad").exists()

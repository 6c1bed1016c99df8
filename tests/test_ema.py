"""translate.py --ema: an exponential moving average of the generator's weights, updated in
the training step, checkpointed, resumed, validated, and used by --mode test and export."""

import json

import numpy as np
import pytest
from conftest import assert_user_error_status, train_tiny, training_and_held_out

from imagetranslation import trainer
from imagetranslation.data import load_pairs, to_model_range

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_and_held_out(tmp_path_factory.mktemp("data"))


def _train(train, out, *extra):
    return train_tiny(train, out, *extra, seed=5)


def _values(model):
    return [v.numpy().astype(np.float64) for v in model.variables if "float" in str(v.dtype)]


def test_the_average_follows_the_recurrence_with_its_warm_up():
    """After each step t (0, 1, 2, ...) e <- e - (1 - d) (e - w), d = min(decay, (1+t)/(10+t)),
    for the weights and batch norm's statistics, starting at the initial weights."""
    options = {"generator": "resnet", "ngf": 4, "n_res_blocks": 1, "which_direction": "AtoB",
               "Y_loss": "square", "classic_weight": 100.0, "gan_weight": 0.0, "loss": "log",
               "lr": 0.01, "beta1": 0.5, "ema": 0.6, "seed": 0, "encoder_activation": False}
    trainer.configure(options)
    model = trainer.Model(options)
    step = model.train_step_fn()
    rng = np.random.default_rng(0)
    expected = _values(model.generator)
    assert all(np.array_equal(a, b) for a, b in zip(_values(model.generator_ema), expected))
    moved = False
    for t in range(4):
        inputs = tf.constant(rng.uniform(-1, 1, (2, 16, 16, 3)), tf.float32)
        targets = tf.constant(rng.uniform(-1, 1, (2, 16, 16, 3)), tf.float32)
        assert int(step(inputs, targets)["step"]) == t + 1
        decay = min(0.6, (1 + t) / (10 + t))  # 0.1, 0.1818.., 0.25, 0.3077..
        weights = _values(model.generator)
        expected = [e - (1 - decay) * (e - w) for e, w in zip(expected, weights)]
        averages = _values(model.generator_ema)
        for got, want in zip(averages, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        moved |= any(not np.allclose(a, w) for a, w in zip(averages, weights))
    assert moved  # the average is not the generator
    assert model.averaged is model.generator_ema


def test_without_ema_there_is_no_average():
    options = {"generator": "resnet", "ngf": 4, "n_res_blocks": 1, "which_direction": "AtoB",
               "gan_weight": 0.0, "lr": 0.01, "beta1": 0.5, "seed": 0}
    model = trainer.Model(options)
    assert model.generator_ema is None and model.averaged is model.generator
    assert "generator_ema" not in model.checkpoint._trackable_children()


def _checkpointed(out):
    options = json.loads((out / "options.json").read_text())
    model = trainer.Model(options)
    model.checkpoint.restore(tf.train.latest_checkpoint(str(out))).expect_partial()
    return model


def test_resume_continues_the_average_and_test_mode_uses_it(tmp_path, data):
    train, held_out = data
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(train, straight, "--max_steps", "6", "--ema", "0.9") == 0
    assert _train(train, resumed, "--max_steps", "3", "--ema", "0.9") == 0
    # The resume takes --ema from the checkpoint, as the other network options.
    assert _train(train, resumed, "--max_steps", "6", "--checkpoint", str(resumed)) == 0
    assert json.loads((resumed / "options.json").read_text())["ema"] == 0.9
    a, b = _checkpointed(straight), _checkpointed(resumed)
    assert int(a.step.numpy()) == int(b.step.numpy()) == 6
    for x, y in zip(_values(a.generator_ema), _values(b.generator_ema)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # --mode test (and export) load the average, not the last weights.
    generator, options = trainer.load_for_inference(straight)
    assert options["ema"] == 0.9
    loaded = _values(generator)
    assert all(np.array_equal(x, y) for x, y in zip(loaded, _values(a.generator_ema)))
    assert any(not np.allclose(x, y) for x, y in zip(loaded, _values(a.generator)))


def test_validation_scores_and_keeps_the_average(tmp_path, data):
    train, held_out = data
    out = tmp_path / "run"
    assert _train(train, out, "--max_steps", "4", "--ema", "0.8", "--validation_dir",
                  str(held_out), "--validation_freq", "4", "--validation_share", "1") == 0
    record = json.loads((out / "training.json").read_text())["validation"]
    assert record["history"][0][0] == 4 and record["best_step"] == 4
    model = _checkpointed(out)
    inputs, targets, _ = load_pairs(held_out)
    inputs, targets = to_model_range(inputs), to_model_range(targets).astype(np.float64)

    def loss(generator):
        outputs = trainer.predict_batch(generator, inputs, 4).astype(np.float64)
        return np.mean((outputs - targets) ** 2)

    assert loss(model.generator_ema) == pytest.approx(record["best_loss"], rel=1e-4)
    assert loss(model.generator) != pytest.approx(record["best_loss"], rel=1e-3)
    best, _ = trainer.load_for_inference(out)  # the best folder holds the average's weights
    assert all(np.array_equal(x, y) for x, y in zip(_values(best), _values(model.generator_ema)))


def test_restore_generators_starts_the_average_at_the_restored_weights(tmp_path, data):
    train, _ = data
    source = tmp_path / "source"
    assert _train(train, source, "--max_steps", "3") == 0
    options = json.loads((source / "options.json").read_text())
    model = trainer.Model({**options, "ema": 0.5})
    trainer.restore_weights(model, source, "generators")
    restored = _checkpointed(source)
    for x, y in zip(_values(model.generator_ema), _values(restored.generator)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "1.5"])
def test_bad_ema_is_one_line(tmp_path, data, capsys, value):
    train, _ = data
    status = _train(train, tmp_path / "out", "--max_steps", "1", "--ema", value)
    assert_user_error_status(status, capsys, f"--ema must be in [0, 1), got {float(value)!r}")
    assert not (tmp_path / "out").exists()

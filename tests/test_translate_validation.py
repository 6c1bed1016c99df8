"""translate.py --validation_dir: the held-out loss during training, the best weights kept in
<output_dir>/best and used by --mode test (early stopping by checkpoint choice)."""

import json

import numpy as np
import pytest
from conftest import assert_user_error_status, combined_images, train_tiny, training_and_held_out

from imagetranslation import trainer, translate
from imagetranslation.data import load_pairs, to_model_range
from neuron3d.io import read_stack

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_and_held_out(tmp_path_factory.mktemp("data"))


def _train(train, out, *extra):
    return train_tiny(train, out, *extra, seed=3)


def test_validation_records_every_check_and_keeps_the_best_weights(tmp_path, data):
    train, held_out = data
    out = tmp_path / "run"
    assert _train(train, out, "--max_steps", "7", "--validation_dir", str(held_out),
                  "--validation_freq", "3", "--validation_share", "1") == 0
    record = json.loads((out / "training.json").read_text())["validation"]
    assert (record["images"], record["of"], record["share"]) == (2, 2, 1.0)
    steps = [s for s, _ in record["history"]]
    assert steps == [3, 6, 7]  # every 3 steps and the last one
    losses = dict(record["history"])
    assert record["best_step"] == min(losses, key=losses.get)
    assert record["best_loss"] == min(losses.values()) and record["loss"] == "square"
    assert tf.train.latest_checkpoint(str(out / "best")).endswith(f"ckpt-{record['best_step']}")
    # The loss is the L2 of --mode test's prediction of the held-out images.
    generator, options = trainer.load_for_inference(out)
    inputs, targets, _ = load_pairs(held_out)
    outputs = trainer.predict_batch(generator, to_model_range(inputs), 4)
    expected = np.mean((outputs.astype(np.float64) - to_model_range(targets)) ** 2)
    assert expected == pytest.approx(record["best_loss"], rel=1e-4)
    # --mode test takes the best weights; --weights last the last checkpoint.
    for weights in ("best", "last"):
        assert translate.main(["--mode", "test", "--checkpoint", str(out), "--input_dir",
                               str(held_out), "--output_dir", str(tmp_path / weights),
                               "--weights", weights]) == 0
    best = read_stack(tmp_path / "best" / "images", channel=0)
    last = read_stack(tmp_path / "last" / "images", channel=0)
    reference = (np.clip((outputs[..., 0] + 1) * 127.5, 0, 255) + 0.5).astype(np.uint8)
    assert np.abs(best.astype(int) - reference.astype(int)).max() <= 1
    if record["best_step"] != 7:
        assert np.abs(best.astype(int) - last.astype(int)).max() > 1


def test_a_resumed_run_keeps_the_best_of_before(tmp_path, data):
    train, held_out = data
    out = tmp_path / "run"
    assert _train(train, out, "--max_steps", "4", "--validation_dir", str(held_out),
                  "--validation_freq", "2") == 0
    first = json.loads((out / "training.json").read_text())["validation"]
    assert _train(train, out, "--checkpoint", str(out), "--max_steps", "6",
                  "--validation_dir", str(held_out), "--validation_freq", "2") == 0
    second = json.loads((out / "training.json").read_text())["validation"]
    assert second["history"][:len(first["history"])] == first["history"]
    assert [s for s, _ in second["history"]] == [2, 4, 6]
    assert second["best_loss"] == min(v for _, v in second["history"])


def test_a_missing_validation_folder_is_one_line(tmp_path, data, capsys):
    train, _ = data
    status = _train(train, tmp_path / "out", "--max_steps", "2", "--validation_dir",
                    str(tmp_path / "nowhere"))
    assert_user_error_status(status, capsys, "--validation_dir", str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()
    status = _train(train, tmp_path / "out", "--max_steps", "2", "--validation_freq", "0")
    assert_user_error_status(status, capsys, "--validation_freq must be an integer >= 1")
    for share in ("0", "1.5", "nan"):
        status = _train(train, tmp_path / "out", "--max_steps", "2", "--validation_share", share)
        assert_user_error_status(status, capsys, "--validation_share must be in (0, 1]")
        assert not (tmp_path / "out").exists()


def test_pos_weight_validates_with_the_weighted_loss(tmp_path, data):
    """--pos_weight is recorded, and validation scores the weighted L2 the run trains on."""
    train, held_out = data
    out = tmp_path / "run"
    assert _train(train, out, "--max_steps", "3", "--validation_dir", str(held_out),
                  "--validation_freq", "3", "--pos_weight", "2.5", "--validation_share", "1") == 0
    assert json.loads((out / "options.json").read_text())["pos_weight"] == 2.5
    record = json.loads((out / "training.json").read_text())["validation"]
    assert record["pos_weight"] == 2.5
    generator, options = trainer.load_for_inference(out)
    assert options["pos_weight"] == 2.5
    inputs, targets, _ = load_pairs(held_out)
    outputs = trainer.predict_batch(generator, to_model_range(inputs), 4).astype(np.float64)
    targets = to_model_range(targets).astype(np.float64)
    weights = 1 + 1.5 * (targets + 1) / 2
    expected = np.mean(weights * (outputs - targets) ** 2)
    assert expected == pytest.approx(record["best_loss"], rel=1e-4)
    assert np.mean((outputs - targets) ** 2) != pytest.approx(record["best_loss"], rel=1e-2)


@pytest.mark.parametrize("extra, message", [
    (["--pos_weight", "0"], "--pos_weight must be a finite number > 0, got 0.0"),
    (["--pos_weight", "-2"], "--pos_weight must be a finite number > 0, got -2.0"),
    (["--pos_weight", "nan"], "--pos_weight must be a finite number > 0, got nan"),
    (["--pos_weight", "2", "--Y_loss", "dice"], "--pos_weight 2.0 does not apply to the dice"),
])
def test_bad_pos_weight_is_one_line(tmp_path, data, capsys, extra, message):
    train, _ = data
    status = _train(train, tmp_path / "out", "--max_steps", "1", *extra)
    assert_user_error_status(status, capsys, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("share, freq, batch, expected", [
    # 3 x 10 x 1 x 8^2 = 1920 pixels trained between validations; images of 4 x 8 = 32 pixels
    (0.1, 10, 1, [0, 2, 4, 5, 7, 9]),  # 0.1 x 1920 / 32 = 6 of the 10, evenly spread
    (0.05, 10, 1, [0, 4, 9]),           # 3 (np.round takes 4.5 to 4)
    (1.0, 10, 1, list(range(10))),      # 60 >= 10: all of them
    (0.001, 10, 1, [0]),                # 0.06: at least one
    (0.05, 10, 2, [0, 2, 4, 5, 7, 9]),  # a batch of 2 trains twice the pixels: 6
    (0.05, 20, 1, [0, 2, 4, 5, 7, 9]),  # validating half as often: 6
])
def test_the_validation_subset_holds_its_share(share, freq, batch, expected):
    from imagetranslation.config import Config
    from imagetranslation.loop import validation_subset

    options = Config(validation_share=share, validation_freq=freq, batch_size=batch,
                     crop_size=8)
    assert validation_subset(10, (4, 8), options).tolist() == expected


def test_validation_costs_its_share_of_a_budget_by_a_fake_clock(tmp_path, data, monkeypatch):
    """A fake clock charges a training step 3 units per trained pixel and a prediction 1 per
    pixel (the cost model of --validation_share): over a --max_minutes budget, validation's
    recorded seconds are at most its share of the run's, and near it."""
    from imagetranslation import loop

    train, _ = data
    held_out = combined_images(tmp_path / "many", (40, 16, 24), seed=4)
    unit = 1e-3  # fake seconds per pixel
    now = [0.0]
    monkeypatch.setattr(loop, "_clock", lambda: now[0])
    real_predict = loop.predict_batch

    def predict(generator, images, stride):
        now[0] += unit * images.shape[0] * images.shape[1] * images.shape[2]
        return real_predict(generator, images, stride)

    def after_step(self, step):
        now[0] += unit * 3 * 16 * 16  # --crop_size 16, --batch_size 1

    monkeypatch.setattr(loop, "predict_batch", predict)
    monkeypatch.setattr(loop.Loop, "after_step", after_step)
    out = tmp_path / "run"
    # 0.768 fake s a step, 30 s: 40 steps; every 5 steps 3 x 5 x 256 = 3840 trained pixels,
    # so a share of 0.3 allows 1152 / 384 = 3 of the 40 images of 16 x 24.
    assert _train(train, out, "--max_minutes", "0.5", "--validation_dir", str(held_out),
                  "--validation_freq", "5", "--validation_share", "0.3") == 0
    record = json.loads((out / "training.json").read_text())
    validation = record["validation"]
    assert (validation["images"], validation["of"]) == (3, 40)
    checks = len(validation["history"])
    assert validation["seconds"] == pytest.approx(checks * 3 * 384 * unit, rel=1e-6)
    share = validation["seconds"] / record["seconds"]
    assert 0.2 < share <= 0.3 + 1e-9, share

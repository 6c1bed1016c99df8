"""translate.py: bad numbers, run folders that must not be clobbered, Ctrl-C, corrupt checkpoints."""

import json
import signal

import numpy as np
import pytest
from conftest import assert_user_error_status, combined_images
from PIL import Image

from imagetranslation import loop, trainer, translate

tf = pytest.importorskip("tensorflow")

TINY = ["--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16", "--scale_size", "16",
        "--gan_weight", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    return combined_images(tmp_path_factory.mktemp("data"), (2, 16, 16), seed=1)


def _train(combined, out, steps, *extra):
    return translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(out), "--max_steps", str(steps), *TINY, *extra])


def _contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("--lr", "-1", "--lr must be a finite number > 0, got -1.0"),
    ("--lr", "0", "--lr must be a finite number > 0, got 0.0"),
    ("--beta1", "1", "--beta1 must be in [0, 1), got 1.0"),
    ("--beta1", "-0.5", "--beta1 must be in [0, 1), got -0.5"),
    ("--beta1", "nan", "--beta1 must be in [0, 1), got nan"),
    ("--gan_weight", "-1", "--gan_weight must be a finite number >= 0, got -1.0"),
    ("--gan_weight", "inf", "--gan_weight must be a finite number >= 0, got inf"),
    ("--classic_weight", "nan", "--classic_weight must be a finite number >= 0, got nan"),
    ("--classic_weight", "-100", "--classic_weight must be a finite number >= 0, got -100.0"),
    ("--save_freq", "-5", "--save_freq must be an integer >= 0, got -5"),
    ("--summary_freq", "-1", "--summary_freq must be an integer >= 0, got -1"),
    ("--progress_freq", "-1", "--progress_freq must be an integer >= 0, got -1"),
    ("--display_freq", "-2", "--display_freq must be an integer >= 0, got -2"),
    ("--image_height", "0", "--image_height must be an integer >= 1, got 0"),
    ("--image_width", "-4", "--image_width must be an integer >= 1, got -4"),
    ("--threads", "0", "--threads must be an integer >= 1, got 0"),
    ("--max_steps", "-1", "--max_steps must be an integer >= 0, got -1"),
])
def test_numbers_out_of_range_name_flag_and_value(tmp_path, capsys, flag, value, expected):
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--max_steps", "1",
                             "--output_dir", str(tmp_path / "out"), flag, value])
    assert_user_error_status(status, capsys, expected)
    assert not (tmp_path / "out").exists()


def test_test_mode_size_flags_and_zero_weights(tmp_path, capsys):
    status = translate.main(["--mode", "test", "--input_dir", str(tmp_path), "--checkpoint",
                             str(tmp_path), "--output_dir", str(tmp_path / "p"),
                             "--image_height", "0"])
    assert_user_error_status(status, capsys, "--image_height must be an integer >= 1, got 0")
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--max_steps", "1",
                             "--output_dir", str(tmp_path / "t"), "--gan_weight", "0",
                             "--classic_weight", "0"])
    assert_user_error_status(status, capsys, "--gan_weight and --classic_weight are both 0")


def test_train_into_an_existing_run_needs_checkpoint_or_force(tmp_path, combined, capsys):
    run = tmp_path / "run"
    assert _train(combined, run, 4, "--display_freq", "2") == 0
    (run / "notes.txt").write_text("mine")
    before = _contents(run)
    capsys.readouterr()
    assert_user_error_status(_train(combined, run, 2), capsys, f"--output_dir {run} already holds a run",
                f"--checkpoint {run}", "--force")
    assert_user_error_status(_train(combined, run, 2, "--checkpoint", str(tmp_path / "elsewhere")), capsys,
                f"--output_dir {run} already holds a run")
    assert_user_error_status(_train(combined, run, 6, "--checkpoint", str(run), "--force"), capsys,
                "--force would remove the checkpoints of --checkpoint")
    assert _contents(run) == before
    # Resuming in place goes on from step 4.
    assert _train(combined, run, 6, "--checkpoint", str(run) + "/") == 0
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-6")
    # --force starts over: the old run's checkpoints, events and images are gone first.
    assert _train(combined, run, 1, "--force") == 0
    names = sorted(p.name for p in run.iterdir())
    assert [n for n in names if n.startswith("ckpt-")] == ["ckpt-1.data-00000-of-00001",
                                                          "ckpt-1.index"]
    assert len([n for n in names if n.startswith("events.out")]) == 1
    assert "images" not in names and "index.html" not in names and "notes.txt" in names
    assert json.loads((run / "options.json").read_text())["max_steps"] == 1


def test_ctrl_c_saves_a_checkpoint_at_the_current_step(tmp_path, combined, capsys, monkeypatch):
    # Driven by the step reached (the loop's hook after every step), not by the progress
    # reporter, whose updates depend on how fast the machine is.
    def after_step(self, step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C

    monkeypatch.setattr(loop.Loop, "after_step", after_step)
    assert _train(combined, tmp_path / "run", 50, "--save_freq", "20") == 130
    err = capsys.readouterr().err
    assert "interrupted at step 3" in err and f"--checkpoint {tmp_path / 'run'}" in err
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-3")
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["stopped_by"] == "interrupted" and record["steps_reached"] == 3
    monkeypatch.undo()
    assert _train(combined, tmp_path / "run", 5, "--checkpoint", str(tmp_path / "run")) == 0
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-5")
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["stopped_by"] == "max_steps" and record["steps_reached"] == 5
    assert record["start_step"] == 3 and record["seconds_total"] >= record["seconds"]


def test_test_mode_refuses_a_training_run_folder_and_leaves_nothing_on_error(
        tmp_path, combined, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(combined, run, 1) == 0
    before = _contents(run)
    capsys.readouterr()
    test = ["--mode", "test", "--input_dir", str(combined), "--checkpoint", str(run)]
    assert_user_error_status(translate.main(test + ["--output_dir", str(run)]), capsys,
                f"--output_dir {run} is the --checkpoint folder", "options.json")
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(tmp_path / "other"), "--max_steps", "1", *TINY]) == 0
    capsys.readouterr()
    assert_user_error_status(translate.main(test + ["--output_dir", str(tmp_path / "other")]), capsys,
                f"--output_dir {tmp_path / 'other'} is a training run's folder")
    assert_user_error_status(translate.main(["--mode", "export", "--checkpoint", str(run),
                                "--output_dir", str(run)]), capsys, "--mode export")
    assert _contents(run) == before
    calls = []

    def failing_predict(generator, image, stride):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("prediction failed on the second image")
        return image

    monkeypatch.setattr(trainer, "predict", failing_predict)
    assert_user_error_status(translate.main(test + ["--output_dir", str(tmp_path / "p" / "q")]), capsys,
                "second image")
    assert not (tmp_path / "p").exists()
    # A test output folder may be re-used: the new images replace the old ones.
    monkeypatch.undo()
    assert translate.main(test + ["--output_dir", str(tmp_path / "p")]) == 0
    assert translate.main(test + ["--output_dir", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["images", "index.html",
                                                                 "options.json"]


def _corrupt_data(run):
    data = next(run.glob("ckpt-*.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return data


def _corrupt_index(run):
    index = next(run.glob("ckpt-*.index"))
    index.write_bytes(b"\x00garbage" * 10)
    return index


def _corrupt_list(run):
    (run / "checkpoint").write_text("junk")


@pytest.mark.parametrize("damage", [_corrupt_data, _corrupt_index, _corrupt_list])
def test_corrupt_checkpoint_is_one_line_naming_it(tmp_path, combined, capsys, damage):
    run = tmp_path / "run"
    assert _train(combined, run, 1) == 0
    prefix = tf.train.latest_checkpoint(str(run))
    damage(run)
    capsys.readouterr()
    expected = (f"the checkpoint list {run / 'checkpoint'} is unreadable"
                if damage is _corrupt_list else f"cannot read checkpoint {prefix}")
    assert_user_error_status(translate.main(["--mode", "test", "--input_dir", str(combined), "--checkpoint",
                                str(run), "--output_dir", str(tmp_path / "p")]), capsys, expected)
    assert_user_error_status(_train(combined, run, 3, "--checkpoint", str(run)), capsys, expected)
    assert not (tmp_path / "p").exists()


def test_malformed_options_json_names_the_file(tmp_path, combined, capsys):
    run = tmp_path / "run"
    assert _train(combined, run, 1) == 0
    capsys.readouterr()
    test = ["--mode", "test", "--input_dir", str(combined), "--checkpoint", str(run),
            "--output_dir", str(tmp_path / "p")]
    (run / "options.json").write_text('{"ngf": 4,')
    assert_user_error_status(translate.main(test), capsys, f"cannot parse {run / 'options.json'}")
    (run / "options.json").write_text("[1, 2]")
    assert_user_error_status(translate.main(test), capsys, f"{run / 'options.json'} must hold a JSON object")
    (run / "options.json").write_text('{"ngf": "four", "generator": "resnet"}')
    assert_user_error_status(translate.main(test), capsys,
                f"ngf in {run / 'options.json'} must be an integer >= 1, got 'four'")
    (run / "options.json").write_text('{"generator": "vgg"}')
    assert_user_error_status(_train(combined, run, 2, "--checkpoint", str(run)), capsys,
                f"generator in {run / 'options.json'} must be one of resnet, unet, highwaynet, densenet, segunet; got 'vgg'")
    assert not (tmp_path / "p").exists()


def test_train_returns_a_new_dict_and_leaves_options_alone(tmp_path, combined):
    args = translate.build_parser().parse_args(
        ["--mode", "train", "--input_dir", str(combined), "--output_dir", str(tmp_path / "t"),
         "--max_epochs", "1", *TINY])
    options = translate.resolve(args)
    frozen = json.dumps(options, sort_keys=True)
    result = trainer.train(options)
    assert json.dumps(options, sort_keys=True) == frozen
    assert options["max_steps"] is None and result["options"]["max_steps"] == 2
    assert result["step"] == 2 and set(result["losses"]) == {"gen_loss_classic"}
    saved = json.loads((tmp_path / "t" / "options.json").read_text())
    assert saved["max_steps"] == 2 and saved["runtime"] == trainer.runtime_settings()
    assert {"op_determinism", "intra_op_threads", "inter_op_threads", "onednn",
            "tensorflow"} <= set(saved["runtime"])


def test_display_images_and_index_survive_a_resume(tmp_path, combined):
    run = tmp_path / "run"
    assert _train(combined, run, 2, "--display_freq", "1") == 0
    assert _train(combined, run, 3, "--display_freq", "1", "--checkpoint", str(run)) == 0
    page = (run / "index.html").read_text()
    for step in (1, 2, 3):
        assert f"images/{step:08d}-outputs.png" in page
    image = np.asarray(Image.open(run / "images" / "00000003-outputs.png"))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert not [p for p in run.rglob(".*")]  # no temporaries

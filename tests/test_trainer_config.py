"""imagetranslation.config: one declaration per option, from which the parser, the
options.json record and the checks come."""

import dataclasses
import json
from pathlib import Path

import pytest

from imagetranslation import config as C
from imagetranslation import data, models, translate

LEGACY = Path(__file__).parent / "data" / "legacy_run_v1" / "run" / "options.json"


def test_the_key_lists_are_those_the_trainer_had():
    assert sorted(C.ARCH_KEYS) == sorted((
        "which_direction", "model", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
        "n_highway_units", "n_dense_blocks", "n_dense_layers", "encoder_activation", "Y_loss",
        "pos_weight", "loss", "gan_weight", "classic_weight", "mixed_precision", "ema"))
    assert sorted(C.NETWORK_KEYS) == sorted((
        "which_direction", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
        "n_highway_units", "n_dense_blocks", "n_dense_layers", "encoder_activation", "loss",
        "mixed_precision", "ema"))
    assert C.GENERATOR_SHAPE_KEYS == {
        "resnet": ("n_res_blocks", "encoder_activation"), "unet": ("u_depth",),
        "segunet": ("u_depth",), "highwaynet": ("n_highway_units", "encoder_activation"),
        "densenet": ("n_dense_blocks", "n_dense_layers", "encoder_activation")}
    assert models.GENERATOR_DEFAULTS == {"n_res_blocks": 9, "u_depth": 8, "n_highway_units": 9,
                                         "n_dense_blocks": 5, "n_dense_layers": 5}
    assert data.AUGMENT_DEFAULTS == {
        "brightness": 0.1, "contrast": 0.2, "gamma": 1.25, "blur_sigma": 1.0,
        "elastic_pixels": 2.0, "elastic_spacing": 16, "missing_slice_p": 0.1, "misalign_p": 0.2,
        "misalign_pixels": 3}


def test_the_parser_has_a_flag_for_every_option_with_its_default():
    parser = translate.build_parser()
    defaults = vars(parser.parse_args(["--mode", "test", "--output_dir", "o"]))
    fields = {f.name: f for f in dataclasses.fields(C.Config)}
    assert set(defaults) == set(fields) - {"training_devices"}
    for name, value in defaults.items():
        if name in ("mode", "output_dir"):  # given
            continue
        expected = "" if name == "augment" else fields[name].default
        assert value == expected, name
    flags = {s for action in parser._actions for s in action.option_strings}
    assert {"--no_fliplr", "--no_flipud", "--no_transpose", "--tile", "--scheduler"} <= flags


def test_an_old_runs_options_json_reads_back_to_the_same_record():
    saved = json.loads(LEGACY.read_text())
    del saved["runtime"]
    config = C.Config.from_mapping(saved, source=LEGACY)
    # the same keys, values and types (lists, floats, null), and the options added since the
    # run was written at their defaults
    added = {"validation_share": 0.1, "views": False}
    assert set(config.record()) - set(saved) == set(added)
    assert config.record() == {**saved, **added}
    assert json.dumps(config.record(), sort_keys=True) == json.dumps({**saved, **added},
                                                                     sort_keys=True)
    assert config.augment == () and config.training_devices == () and config.ema == 0.9
    assert dict(config)["ngf"] == config["ngf"] == config.ngf == 4  # also a read-only mapping
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ngf = 8
    with pytest.raises(KeyError):
        config["runtime"]
    # A test's or export's record has no training_devices, as before.
    assert "training_devices" not in C.Config(mode="test").record()
    assert C.Config().weights is None and C.Config().record()["weights"] == "best"


def test_values_are_checked_once_at_construction_with_the_flag_or_the_file_named():
    with pytest.raises(ValueError, match=r"^--ngf must be an integer >= 1, got -1$"):
        C.Config(ngf=-1)
    with pytest.raises(ValueError, match=r"^--beta1 must be in \[0, 1\), got 1\.0$"):
        C.Config.from_mapping({"beta1": 1.0})
    with pytest.raises(ValueError, match=r"^ngf in x/options\.json must be an integer >= 1, "
                                         r"got 'four'$"):
        C.Config.from_mapping({"ngf": "four"}, source="x/options.json")
    with pytest.raises(ValueError, match="pos_weight 2.0 does not apply to the dice loss"):
        C.Config(Y_loss="dice", pos_weight=2.0)
    with pytest.raises(ValueError, match=r"^--lr_decay must be one of none, cosine, linear; "
                                         r"got 'step'$"):
        C.Config().replace(lr_decay="step")
    # Normalised once: --ngf 0 is the generator's default, --augment a tuple in pipeline order,
    # an integer for a float option a float (as argparse gives it).
    assert C.Config(ngf=0).ngf == 32 and C.Config(ngf=0, generator="unet").ngf == 64
    assert C.Config(augment="blur,elastic").augment == ("elastic", "blur")
    assert C.Config(gan_weight=0).gan_weight == 0.0 and isinstance(C.Config(lr=1).lr, float)


@pytest.mark.parametrize("extra, message", [
    (["--max_steps", "1", "--tta"], "--tta is for --mode test"),
    ([], "--mode train needs --max_epochs or --max_steps"),
    (["--max_steps", "1", "--restore", "generators"], "--restore generators needs --checkpoint"),
])
def test_what_a_mode_needs(extra, message):
    args = translate.build_parser().parse_args(
        ["--mode", "train", "--input_dir", "i", "--output_dir", "o", *extra])
    with pytest.raises(ValueError, match=message):
        translate.resolve(args)

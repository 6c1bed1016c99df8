"""translate.py --generator highwaynet|densenet (the thesis trainer's other generators),
--generator segunet (the segmentation U-Net) and
--restore generators|both (a new training from another run's weights)."""

import json

import keras
import numpy as np
import pytest
from conftest import assert_user_error_status, combined_images
from PIL import Image

from imagetranslation import translate
from imagetranslation.data import load_pairs, to_model_range
from imagetranslation.models import (
    HIGHWAY_GATE_OFFSET,
    build_generator,
    dense_generator,
    highway_generator,
    resnet_generator,
    segmentation_unet,
    stride_of,
)
from imagetranslation.trainer import load_for_inference

tf = pytest.importorskip("tensorflow")

TINY = ["--ngf", "4", "--crop_size", "16", "--scale_size", "16", "--seed", "3",
        "--progress_freq", "0"]
GENERATORS = {"highwaynet": ["--generator", "highwaynet", "--n_highway_units", "2"],
              "densenet": ["--generator", "densenet", "--n_dense_blocks", "2",
                           "--n_dense_layers", "2"],
              "segunet": ["--generator", "segunet", "--u_depth", "2", "--ngf", "16"]}


def conv(k, i, o):
    return k * k * i * o + o


def bn(c):
    return 4 * c  # gamma, beta, moving mean and variance


#: Parameters of the shared encoder and decoder at ngf 4, 3 -> 3 channels.
ENCODER = conv(7, 3, 4) + conv(3, 4, 8) + conv(3, 8, 16)
DECODER = conv(4, 16, 8) + bn(8) + conv(4, 8, 4) + bn(4) + conv(7, 4, 3)


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    return combined_images(tmp_path_factory.mktemp("data"), (2, 20, 20), seed=4)


def _train(combined, out, steps, *extra):
    return translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(out), "--max_steps", str(steps), *TINY, *extra])


def _checkpoint(out, prefix=""):
    """Every variable of the latest checkpoint in ``out`` whose name starts with ``prefix``."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(prefix) and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _scalars(out, tag):
    """The values of a TensorBoard scalar in ``out``'s event files, by step."""
    values = {}
    for path in sorted(out.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_highway_generator_by_hand():
    model = highway_generator(3, 3, ngf=4, n_highway_units=2)
    unit = 2 * (conv(3, 16, 16) + bn(16)) + conv(3, 16, 16) + bn(16)  # transform H; gate T
    assert model.count_params() == ENCODER + 2 * unit + DECODER
    x = np.random.default_rng(0).uniform(-1, 1, (2, 20, 28, 3)).astype(np.float32)
    y = np.asarray(model(x))
    assert y.shape == (2, 20, 28, 3) and np.abs(y).max() <= 1.0
    # Each unit: y = T H(x) + (1 - T) x with T = (1 + sigmoid(BN(conv(x)))) / 2, the gate's
    # batch norm offset starting at -10: T starts at 0.5 (an even mix), as in the thesis' trainer.
    gate_norms = [layer for layer in model.layers
                  if isinstance(layer, keras.layers.BatchNormalization)
                  and np.all(np.asarray(layer.beta) == HIGHWAY_GATE_OFFSET)]
    assert len(gate_norms) == 2
    for unit in (1, 2):
        output = model.get_layer(f"highway_{unit}")
        probe = keras.Model(model.input, [output.input[0], model.get_layer(
            f"highway_{unit}_transform").output, model.get_layer(f"highway_{unit}_gate").output,
            output.output])
        before, h, gate, after = (np.asarray(v) for v in probe(x))
        assert before.shape == h.shape == gate.shape == after.shape == (2, 5, 7, 16)
        assert 0.5 <= gate.min() and gate.mean() < 0.5 + 1e-3 and gate.max() < 0.51
        assert np.abs(h - before).max() > 0.1  # so that the check below can fail
        np.testing.assert_allclose(after, gate * h + (1 - gate) * before, rtol=1e-5, atol=1e-6)


def test_segmentation_unet_by_hand():
    model = segmentation_unet(3, 3, ngf=4, depth=2)
    def level(c_in, c):  # two (3x3 conv, batch norm, ReLU)
        return conv(3, c_in, c) + bn(c) + conv(3, c, c) + bn(c)
    down = level(3, 4) + level(4, 8) + level(8, 16)
    up = level(16 + 8, 8) + level(8 + 4, 4)  # upsampled features and the skip
    assert model.count_params() == down + up + conv(1, 4, 3)
    joins = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert [tuple(layer.output.shape[1:]) for layer in joins] == [(None, None, 24),
                                                                  (None, None, 12)]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 12, 3)).astype(np.float32)
    y = np.asarray(model(x))
    assert y.shape == (2, 8, 12, 3) and np.abs(y).max() <= 1.0
    # The skips join the half- and the full-resolution features.
    joined = keras.Model(model.input, [layer.output for layer in joins])(x)
    assert [tuple(v.shape) for v in joined] == [(2, 4, 6, 24), (2, 8, 12, 12)]
    # No dropout: the same input gives the same output (the pix2pix U-Net's differs).
    np.testing.assert_array_equal(np.asarray(model(x)), y)
    assert stride_of({"generator": "segunet", "u_depth": 2}) == 4


def test_dense_generator_by_hand():
    model = dense_generator(3, 3, ngf=4, n_dense_blocks=2, n_dense_layers=3)
    # Layer l of a block sees the block input and layers 1..l-1: 16 l channels in, 16 out.
    block = sum(conv(3, 16 * layer, 16) + bn(16) for layer in (1, 2, 3))
    assert model.count_params() == ENCODER + 2 * block + DECODER
    joins = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert [layer.output.shape[-1] for layer in joins] == [32, 48, 32, 48]
    y = np.asarray(model(np.zeros((1, 12, 8, 3), np.float32)))
    assert y.shape == (1, 12, 8, 3)
    # Without units or blocks both are the resnet's encoder and decoder.
    plain = resnet_generator(3, 3, ngf=4, n_res_blocks=0).count_params()
    assert highway_generator(3, 3, ngf=4, n_highway_units=0).count_params() == plain
    assert dense_generator(3, 3, ngf=4, n_dense_blocks=0).count_params() == plain


def test_stride_and_defaults_of_the_generators():
    for kind in ("resnet", "highwaynet", "densenet"):
        assert stride_of({"generator": kind, "u_depth": 8}) == 4
    assert stride_of({"generator": "unet", "u_depth": 5}) == 32
    assert stride_of({"generator": "segunet", "u_depth": 3}) == 8
    with pytest.raises(ValueError, match="unknown generator 'vgg'"):
        stride_of({"generator": "vgg"})
    # The thesis trainer's defaults: 9 highway units, 5 dense blocks of 5 layers, ngf 32.
    parser = translate.build_parser()
    args = parser.parse_args(["--mode", "train", "--output_dir", "o", "--generator", "densenet"])
    assert (args.n_highway_units, args.n_dense_blocks, args.n_dense_layers) == (9, 5, 5)
    assert args.restore == "all"
    args.input_dir, args.max_steps = "i", 1
    assert translate.resolve(args)["ngf"] == 32
    # An older run's options.json has no size options of the new generators: the defaults.
    model = build_generator({"generator": "highwaynet", "ngf": 2})
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) == 9


@pytest.mark.parametrize("args, expected", [
    (["--n_highway_units", "-1"], "--n_highway_units must be an integer >= 0, got -1"),
    (["--n_dense_blocks", "-2"], "--n_dense_blocks must be an integer >= 0, got -2"),
    (["--n_dense_layers", "0"], "--n_dense_layers must be an integer >= 1, got 0"),
    (["--restore", "generators"], "--restore generators needs --checkpoint"),
])
def test_generator_and_restore_flags_out_of_range(tmp_path, capsys, args, expected):
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--max_steps", "1",
                             "--output_dir", str(tmp_path / "out"), *args])
    assert_user_error_status(status, capsys, expected)
    assert not (tmp_path / "out").exists()


def test_crop_must_be_a_multiple_of_the_stride(tmp_path, combined, capsys):
    status = _train(combined, tmp_path / "out", 1, "--generator", "densenet", "--crop_size", "18",
                    "--scale_size", "18")
    assert_user_error_status(status, capsys, "--crop_size 18 must be a multiple of 4 for the "
                             "densenet generator")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_new_generator_learns_saves_resumes_and_predicts(tmp_path, combined, kind):
    # Whole 20 x 20 images, no flips: the two images are the whole task.
    extra = [*GENERATORS[kind], "--gan_weight", "0", "--Y_loss", "square", "--lr", "0.002",
             "--crop_size", "20", "--scale_size", "20", "--no_fliplr", "--no_flipud",
             "--no_transpose", "--summary_freq", "1", "--save_freq", "0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(combined, straight, 48, *extra) == 0
    saved = json.loads((straight / "options.json").read_text())
    assert saved["generator"] == kind
    # The loss falls far below that of the best constant output (the targets' variance).
    _, targets, _ = load_pairs(combined)
    constant = float(np.var(to_model_range(targets)))
    losses = _scalars(straight, "gen_loss_classic")
    assert sorted(losses) == list(range(1, 49))
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (46, 47, 48)])
    assert first > 0.9 * constant and last < 0.3 * constant, (first, last, constant)
    # Stopped at step 24 and resumed to 48: the weights of the uninterrupted run.
    assert _train(combined, resumed, 24, *extra) == 0
    assert _train(combined, resumed, 48, *extra, "--checkpoint", str(resumed)) == 0
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert a.keys() == b.keys() and int(b["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 48
    # The same network: its predictions agree.  (Weights are not compared: the biases of the
    # convs that batch norm follows get gradients of rounding noise, which Adam turns into
    # steps of up to lr, so a last-bit difference between two traces moves them apart; this
    # was seen in some runs of this test, the predictions agreeing.)
    images = to_model_range(load_pairs(combined)[0])
    (gen_a, _), (gen_b, _) = load_for_inference(straight), load_for_inference(resumed)
    out_a, out_b = np.asarray(gen_a(images)), np.asarray(gen_b(images))
    np.testing.assert_allclose(out_b, out_a, atol=1e-3)
    # --mode test takes the architecture from the checkpoint; 20 x 20 is a multiple of 4.
    predicted = tmp_path / "predicted"
    assert translate.main(["--mode", "test", "--checkpoint", str(straight), "--input_dir",
                           str(combined), "--output_dir", str(predicted)]) == 0
    used = json.loads((predicted / "options.json").read_text())
    size_keys = [k for k in ("n_highway_units", "n_dense_blocks", "n_dense_layers", "u_depth")
                 if f"--{k}" in GENERATORS[kind]]
    assert used["generator"] == kind and all(used[k] == 2 for k in size_keys)
    outputs = sorted((predicted / "images").glob("*-outputs.png"))
    assert len(outputs) == 2
    image = np.asarray(Image.open(outputs[0]))
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A resnet run with a discriminator (ngf 4, 1 block, ndf 4, 32 x 32 crops), 2 steps."""
    out = tmp_path_factory.mktemp("runs") / "T3"
    data = combined_images(tmp_path_factory.mktemp("data32"), (2, 32, 32), seed=5)
    assert translate.main(["--mode", "train", "--input_dir", str(data), "--output_dir",
                           str(out), "--max_steps", "2", "--ngf", "4", "--n_res_blocks", "1",
                           "--ndf", "4", "--crop_size", "32", "--scale_size", "32",
                           "--gan_weight", "1", "--seed", "1", "--progress_freq", "0"]) == 0
    return out, data


def _transfer(data, out, checkpoint, steps, *extra):
    return translate.main(["--mode", "train", "--input_dir", str(data), "--output_dir", str(out),
                           "--max_steps", str(steps), "--ngf", "4", "--n_res_blocks", "1",
                           "--ndf", "4", "--crop_size", "32", "--scale_size", "32", "--seed", "9",
                           "--progress_freq", "0", "--checkpoint", str(checkpoint), *extra])


def test_restore_generators_starts_a_new_training_from_the_generator(tmp_path, source_run):
    source, data = source_run
    before = _contents(source)
    # NN-4 from NN-3: other data direction, loss and no discriminator; only the generator's
    # weights come over, the optimizer and the step start anew.
    at_start, trained = tmp_path / "T4_start", tmp_path / "T4"
    for out, steps in ((at_start, 0), (trained, 3)):
        assert _transfer(data, out, source, steps, "--restore", "generators", "--gan_weight", "0",
                         "--which_direction", "BtoA", "--Y_loss", "square") == 0
    theirs, mine = _checkpoint(source, "generator/"), _checkpoint(at_start, "generator/")
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
    record = json.loads((trained / "training.json").read_text())
    assert (record["start_step"], record["steps_reached"]) == (0, 3)
    assert record["seconds_total"] == record["seconds"]  # not the source run's time
    options = json.loads((trained / "options.json").read_text())
    assert options["restore"] == "generators" and options["which_direction"] == "BtoA"
    moved = _checkpoint(trained, "generator/")
    assert any(not np.array_equal(moved[n], mine[n]) for n in mine)  # and it trains on
    counters = _checkpoint(trained)
    assert counters["step/.ATTRIBUTES/VARIABLE_VALUE"] == 3
    assert [v for k, v in counters.items() if k.startswith("gen_optimizer/") and "iteration" in k] == [3]
    # --restore both: the discriminator comes over too.
    both = tmp_path / "both"
    assert _transfer(data, both, source, 0, "--restore", "both", "--gan_weight", "1") == 0
    theirs, mine = _checkpoint(source, "discriminator/"), _checkpoint(both, "discriminator/")
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
    assert _contents(source) == before


@pytest.mark.parametrize("extra, expected", [
    (["--restore", "generators", "--generator", "densenet"],
     ["--restore generators: --generator densenet does not match the generator of --checkpoint",
      "(generator 'resnet' in", "options.json)"]),
    (["--restore", "generators", "--ngf", "8"], ["--ngf 8 does not match", "(ngf 4 in"]),
    (["--restore", "generators", "--n_res_blocks", "2"], ["--n_res_blocks 2 does not match"]),
    (["--restore", "generators", "--encoder_activation"],
     ["--encoder_activation on does not match", "(encoder_activation False in"]),
    (["--restore", "both", "--gan_weight", "0"],
     ["--restore both: --gan_weight 0 trains no discriminator"]),
    (["--restore", "both", "--gan_weight", "1", "--ndf", "8"], ["--restore both: --ndf 8"]),
])
def test_restore_refuses_another_generator_and_leaves_the_checkpoint_alone(
        tmp_path, capsys, source_run, extra, expected):
    source, data = source_run
    before = _contents(source)
    status = _transfer(data, tmp_path / "out", source, 1, *extra)
    assert_user_error_status(status, capsys, *expected)
    assert not (tmp_path / "out").exists()
    assert _contents(source) == before


def test_restore_refuses_another_channel_count_and_its_own_folder(tmp_path, capsys, source_run):
    source, data = source_run
    # A checkpoint whose options.json says resnet, ngf 4, 1 block, but whose generator reads
    # one channel: the weights' shapes give it away.
    other = tmp_path / "gray"
    other.mkdir()
    (other / "options.json").write_bytes((source / "options.json").read_bytes())
    gray = resnet_generator(1, 3, ngf=4, n_res_blocks=1)
    tf.train.CheckpointManager(tf.train.Checkpoint(generator=gray), str(other), 1).save(5)
    before = _contents(other)
    status = _transfer(data, tmp_path / "out", other, 1, "--restore", "generators")
    line = assert_user_error_status(status, capsys, f"checkpoint {other / 'ckpt-5'} does not "
                                    "match the network being trained",
                                    "shape (7, 7, 1, 4)", "has shape (7, 7, 3, 4)")
    assert "channel count" in line
    assert _contents(other) == before and not (tmp_path / "out").exists()
    # A new training may not write into the folder it starts from.
    before = _contents(source)
    for what in ("generators", "both"):
        status = _transfer(data, source, source, 1, "--restore", what, "--force")
        assert_user_error_status(status, capsys, f"--restore {what} starts a new training",
                                 "--output_dir must be another folder")
        assert _contents(source) == before

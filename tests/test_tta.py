"""translate.py --mode test --tta: predictions averaged over the 8 flips and transposes."""

import json

import numpy as np
import pytest
from conftest import combined_images
from PIL import Image

from imagetranslation import data as D
from imagetranslation import translate
from imagetranslation.trainer import DIHEDRAL, dihedral, dihedral_inverse, predict, predict_tta

tf = pytest.importorskip("tensorflow")


def _image(shape=(16, 24, 3), seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def equivariant(batch, training=False):
    """A 3x3 kernel with the square's symmetries, zero 'same' padding, then tanh."""
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 8
    channels = batch.shape[-1]
    weights = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))
    mixed = tf.nn.depthwise_conv2d(tf.constant(batch), weights, [1, 1, 1, 1], "SAME")
    return tf.tanh(mixed + tf.reduce_mean(mixed, axis=-1, keepdims=True))


def lopsided(batch, training=False):
    """Not equivariant: weighs pixels by their position and looks one pixel right."""
    batch = np.asarray(batch)
    _, h, w, _ = batch.shape
    ramp = (np.arange(h)[:, None] * 3 + np.arange(w)[None, :] + 1.0)[None, :, :, None]
    return batch * ramp + np.roll(batch, -1, axis=2)


def test_the_eight_transforms_are_the_dihedral_group_and_invert():
    image = np.arange(2 * 3).reshape(2, 3)
    seen = set()
    for transform in DIHEDRAL:
        moved = dihedral(image, transform)
        assert dihedral_inverse(moved, transform).tobytes() == image.tobytes()
        seen.add((moved.shape, moved.tobytes()))
    square = np.arange(9).reshape(3, 3)
    expected = {np.rot90(g, k).tobytes() for g in (square, square.T) for k in range(4)}
    assert {dihedral(square, t).tobytes() for t in DIHEDRAL} == expected
    assert len(seen) == 8 and DIHEDRAL[0] == (False, False, False)


@pytest.mark.parametrize("shape", [(16, 16, 3), (16, 24, 3), (8, 20, 1)])
def test_tta_of_an_equivariant_generator_equals_plain_prediction(shape):
    image = _image(shape)
    plain = predict(equivariant, image, 4)
    assert not np.allclose(plain, np.asarray(equivariant(image[None]))[0][::-1])  # not trivial
    np.testing.assert_allclose(predict_tta(equivariant, image, 4), plain, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 6, 2), (5, 7, 1)])
def test_tta_of_a_lopsided_function_is_the_explicit_average(shape):
    image = _image(shape, seed=1)
    outputs = []
    for k in range(4):  # rotations, with and without a mirror, each undone
        for mirror in (False, True):
            moved = np.rot90(image[:, ::-1] if mirror else image, k)
            back = np.rot90(lopsided(moved[None])[0], -k)
            outputs.append(back[:, ::-1] if mirror else back)
    expected = np.mean(outputs, axis=0)
    result = predict_tta(lopsided, image, 1)
    assert result.dtype == np.float32 and result.shape == image.shape
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(result, predict(lopsided, image, 1))


def test_test_mode_tta_writes_the_averaged_outputs_and_records_it(tmp_path):
    combined = combined_images(tmp_path, (2, 16, 16), seed=2)
    run = tmp_path / "run"
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(run), "--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16",
                           "--scale_size", "16", "--gan_weight", "0", "--max_steps", "6",
                           "--lr", "0.02"]) == 0
    for flags, out in (([], "plain"), (["--tta"], "tta")):
        assert translate.main(["--mode", "test", "--checkpoint", str(run), "--input_dir",
                               str(combined), "--output_dir", str(tmp_path / out), *flags]) == 0
        assert json.loads((tmp_path / out / "options.json").read_text())["tta"] == bool(flags)
    from imagetranslation.trainer import load_for_inference

    generator, _ = load_for_inference(run)
    inputs, _, _ = D.load_pairs(combined)
    for index, image in enumerate(inputs):
        x = D.to_model_range(image)
        average = np.mean([dihedral_inverse(np.asarray(generator(
            np.ascontiguousarray(dihedral(x, t))[None], training=False))[0], t)
            for t in DIHEDRAL], axis=0)
        written = np.asarray(Image.open(tmp_path / "tta" / "images" / f"{index:02d}-outputs.png"))
        assert np.abs(written.astype(int) - D.from_model_range(average)).max() <= 1
        plain = np.asarray(Image.open(tmp_path / "plain" / "images" / f"{index:02d}-outputs.png"))
        assert not np.array_equal(written, plain)


# ---- --views: a volume's three orthogonal views, averaged -------------------------------------


def plane_mean(generator, image, stride):
    """A fake predictor: every pixel gets its image's mean (per channel)."""
    return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).copy()


def test_views_average_the_three_planes_through_each_voxel():
    from imagetranslation.inference import predict_views

    volume = np.random.default_rng(3).uniform(-1, 1, (3, 4, 5, 1)).astype(np.float32)
    got = predict_views(None, volume, 1, plane_mean)
    v = volume[..., 0].astype(np.float64)
    expected = (v.mean(axis=(1, 2))[:, None, None] + v.mean(axis=(0, 2))[None, :, None]
                + v.mean(axis=(0, 1))[None, None, :]) / 3
    assert got.shape == volume.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[..., 0], expected, rtol=1e-6, atol=1e-6)
    # a voxel's value is that of its own three planes: one corner by hand
    corner = (v[0].mean() + v[:, 0].mean() + v[:, :, 0].mean()) / 3
    assert got[0, 0, 0, 0] == pytest.approx(corner, abs=1e-6)


def test_test_mode_views_writes_the_views_mean_and_refuses_training(tmp_path, capsys):
    from imagetranslation.inference import predict_views
    from imagetranslation.trainer import load_for_inference

    combined = combined_images(tmp_path, (5, 16, 12), seed=4)
    run = tmp_path / "run"
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(run), "--ngf", "4", "--n_res_blocks", "1", "--crop_size", "12",
                           "--scale_size", "12", "--gan_weight", "0", "--max_steps", "6",
                           "--lr", "0.02"]) == 0
    for flags, out in (([], "plain"), (["--views"], "views")):
        assert translate.main(["--mode", "test", "--checkpoint", str(run), "--input_dir",
                               str(combined), "--output_dir", str(tmp_path / out), *flags]) == 0
        assert json.loads((tmp_path / out / "options.json").read_text())["views"] == bool(flags)
    generator, options = load_for_inference(run)
    inputs, _, _ = D.load_pairs(combined)
    expected = D.from_model_range(predict_views(generator, D.to_model_range(inputs), 4))
    differ = 0
    for index in range(len(inputs)):
        written = np.asarray(Image.open(tmp_path / "views" / "images" / f"{index:02d}-outputs.png"))
        assert np.abs(written.astype(int) - expected[index]).max() <= 1
        plain = np.asarray(Image.open(tmp_path / "plain" / "images" / f"{index:02d}-outputs.png"))
        differ += not np.array_equal(written, plain)
    assert differ == len(inputs)
    capsys.readouterr()
    status = translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                             str(tmp_path / "again"), "--max_steps", "1", "--views"])
    err = capsys.readouterr().err
    assert status == 2 and "--views is for --mode test" in err and "Traceback" not in err
    assert not (tmp_path / "again").exists()

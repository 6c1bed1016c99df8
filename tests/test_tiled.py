"""Prediction of zarr volumes (imagetranslation/tiled.py): whole slices per z-chunk, tiles."""

import numpy as np
import pytest
from conftest import combined_images

pytest.importorskip("zarr")
tf = pytest.importorskip("tensorflow")

from imagetranslation import tiled  # noqa: E402
from neuron3d import zarrio  # noqa: E402


def box(batch, training=False):
    """A local network: a 5 x 5 mean with zero padding, then tanh (no batch statistics)."""
    kernel = np.ones((5, 5, 3, 1), np.float32) / 25
    return tf.tanh(tf.nn.depthwise_conv2d(tf.constant(np.asarray(batch)), kernel,
                                          [1, 1, 1, 1], "SAME"))


def normalised(batch, training=False):
    """Like the generators at test time: normalised by the statistics of the image it sees."""
    batch = np.asarray(batch)
    return np.tanh((batch - batch.mean()) / (batch.std() + 1e-3))


def test_receptive_radius_is_measured():
    assert tiled.receptive_radius(box, stride=4) == 2


def test_tiles_with_a_halo_equal_the_whole_slice_for_a_local_network():
    image = np.random.default_rng(0).uniform(-1, 1, (70, 90, 3)).astype(np.float32)
    whole = tiled.predict_slice(box, image, 4)
    halo = 4  # the radius 2, rounded up to the stride
    tiles = tiled.predict_slice(box, image, 4, tile=16, halo=halo)
    assert np.abs(tiles.astype(int) - whole.astype(int)).max() <= 1
    without = tiled.predict_slice(box, image, 4, tile=16, halo=0)
    assert (without != whole).any()  # the halo is what makes it work


def test_tiles_would_differ_with_batch_statistics():
    image = np.random.default_rng(1).uniform(-1, 1, (64, 64, 3)).astype(np.float32)
    image[:32] += 0.5  # tiles of different brightness normalise differently
    whole = tiled.predict_slice(normalised, image, 4)
    tiles = tiled.predict_slice(normalised, image, 4, tile=32, halo=8)
    assert np.abs(tiles.astype(int) - whole.astype(int)).max() > 1


def test_zarr_prediction_equals_the_png_prediction(tmp_path):
    """A trained network on a zarr EM volume, a z-chunk of whole slices per block, equals
    translate.py --mode test on the same slices; so do 16 x 16 tiles grown by the measured
    receptive radius (prediction normalises with the moving averages: outputs are local)."""
    from imagetranslation import translate
    from imagetranslation.data import load_pairs
    from neuron3d.io import read_stack

    combined = combined_images(tmp_path, (5, 64, 64), seed=4)
    run = tmp_path / "run"
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(run), "--max_steps", "25", "--lr", "0.02", "--ngf", "4", "--n_res_blocks", "1",
                           "--crop_size", "32", "--scale_size", "32", "--gan_weight", "0",
                           "--summary_freq", "0", "--progress_freq", "0",
                           "--display_freq", "0"]) == 0
    assert translate.main(["--mode", "test", "--checkpoint", str(run), "--input_dir",
                           str(combined), "--output_dir", str(tmp_path / "png")]) == 0
    expected = read_stack(tmp_path / "png" / "images", channel=0)
    em = load_pairs(combined)[0][..., 0]
    zarrio.write_zarr(tmp_path / "em.zarr", em, (2, 32, 32))
    shape = tiled.predict_volume(run, tmp_path / "em.zarr", tmp_path / "out.zarr")
    got = zarrio.read_zarr(tmp_path / "out.zarr")
    assert shape == em.shape and got.shape == expected.shape
    assert got.std() > 2  # a network that draws something (not a constant image)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    tiled.predict_volume(run, tmp_path / "em.zarr", tmp_path / "tiles.zarr", tile=16)
    tiles = zarrio.read_zarr(tmp_path / "tiles.zarr")
    assert np.abs(tiles.astype(int) - got.astype(int)).max() <= 1
    # The command line, on a LocalCluster of 2 workers (each loads the network once).
    from conftest import assert_user_error, run_script

    r = run_script("imagetranslation/translate.py", "--mode", "test", "--checkpoint", run,
                   "--input_dir", tmp_path / "em.zarr", "--output_dir", tmp_path / "cli.zarr",
                   "--tile", "16", "--scheduler", "local:2")
    assert r.returncode == 0, r.stderr[-3000:]
    cli = zarrio.read_zarr(tmp_path / "cli.zarr")
    assert np.abs(cli.astype(int) - got.astype(int)).max() <= 1
    assert_user_error(run_script("imagetranslation/translate.py", "--mode", "test",
                                 "--checkpoint", run, "--input_dir", tmp_path / "em.zarr",
                                 "--output_dir", tmp_path / "x", "--scheduler", "local:1"),
                      "--output_dir", ".zarr")
    generator, _ = tiled._generator(run)
    assert 16 < tiled.receptive_radius(generator, 4) < 64  # tiles of 16 need the halo
    with pytest.raises(ValueError, match="--tile must be a multiple of 4"):
        tiled.predict_volume(run, tmp_path / "em.zarr", tmp_path / "out2.zarr", tile=10)
    assert not (tmp_path / "out2.zarr").exists()

"""translate.py --augment: EM augmentations in the tf.data pipeline (imagetranslation.data)."""

import json

import numpy as np
import pytest
from conftest import assert_user_error_status, combined_images
from scipy import ndimage

from imagetranslation import data as D
from imagetranslation import translate
from imagetranslation.options import AUGMENTATIONS, parse_augment

tf = pytest.importorskip("tensorflow")

INPUT_ONLY = ("intensity", "blur", "misalign", "missing_slice")
ALWAYS = {"missing_slice_p": 1.0, "misalign_p": 1.0}


def _pair(size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(-1, 1, (size, size, channels)).astype(np.float32)
    targets = np.where(rng.uniform(size=(size, size, 3)) < 0.3, 1.0, -1.0).astype(np.float32)
    return inputs, targets


def _augment(names, inputs, targets, index=5, seed=3, **params):
    a, b = D.augment_example(tf.constant(inputs), tf.constant(targets), index, seed,
                             {"augment": names, **params})
    return np.asarray(a), np.asarray(b)


def test_parse_augment_orders_names_and_rejects_unknown_ones():
    assert parse_augment("") == parse_augment("none") == parse_augment(None) == []
    assert parse_augment("blur, elastic,blur") == ["elastic", "blur"]
    assert parse_augment(list(reversed(AUGMENTATIONS))) == list(AUGMENTATIONS)
    with pytest.raises(ValueError, match=r"--augment blur,warp: unknown augmentation 'warp' "
                                         r"\(choose from elastic, intensity, blur"):
        parse_augment("blur,warp")
    with pytest.raises(ValueError, match="augment in run/options.json .* unknown augmentation"):
        parse_augment(["elastic", "rotate"], source="run/options.json")


@pytest.mark.parametrize("flag, value, expected", [
    ("--augment", "intensity,noise", "--augment intensity,noise: unknown augmentation 'noise'"),
    ("--brightness", "1.5", "--brightness must be in [0, 1], got 1.5"),
    ("--contrast", "1", "--contrast must be in [0, 1), got 1.0"),
    ("--gamma", "0.8", "--gamma must be a finite number >= 1, got 0.8"),
    ("--gamma", "inf", "--gamma must be a finite number >= 1, got inf"),
    ("--blur_sigma", "-1", "--blur_sigma must be a finite number >= 0, got -1.0"),
    ("--blur_sigma", "11", "--blur_sigma must be <= 10, got 11.0"),
    ("--elastic_pixels", "nan", "--elastic_pixels must be a finite number >= 0, got nan"),
    ("--elastic_spacing", "1", "--elastic_spacing must be an integer >= 2, got 1"),
    ("--missing_slice_p", "-0.1", "--missing_slice_p must be in [0, 1], got -0.1"),
    ("--misalign_p", "nan", "--misalign_p must be in [0, 1], got nan"),
    ("--misalign_pixels", "-2", "--misalign_pixels must be an integer >= 0, got -2"),
])
def test_bad_augmentation_flags_one_line_exit_2(tmp_path, capsys, flag, value, expected):
    status = translate.main(["--mode", "train", "--input_dir", str(tmp_path), "--max_steps", "1",
                             "--output_dir", str(tmp_path / "out"), flag, value])
    assert_user_error_status(status, capsys, expected)
    assert not (tmp_path / "out").exists()


def test_blur_kernel_must_fit_the_crop(tmp_path, capsys):
    combined = combined_images(tmp_path, (1, 16, 16), seed=0)
    status = translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                             str(tmp_path / "out"), "--max_steps", "1", "--crop_size", "16",
                             "--scale_size", "16", "--gan_weight", "0", "--augment", "blur",
                             "--blur_sigma", "6"])
    assert_user_error_status(status, capsys, "--blur_sigma 6.0 needs a kernel of radius 18",
                    "smaller than --crop_size 16")
    assert not (tmp_path / "out").exists()


def test_warp_equals_scipy_map_coordinates():
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (20, 24, 2)).astype(np.float32)
    field = rng.uniform(-3, 3, (20, 24, 2)).astype(np.float32)
    warped = np.asarray(D.warp(tf.constant(image), tf.constant(field)))
    yy, xx = np.mgrid[:20, :24].astype(np.float64)
    coords = [yy + field[..., 0], xx + field[..., 1]]
    for c in range(2):
        expected = ndimage.map_coordinates(image[..., c].astype(np.float64), coords, order=1,
                                           mode="nearest")
        np.testing.assert_allclose(warped[..., c], expected, atol=2e-6)
    # A zero field is the identity, exactly.
    same = np.asarray(D.warp(tf.constant(image), tf.zeros((20, 24, 2))))
    np.testing.assert_array_equal(same, image)


def test_elastic_field_is_bounded_smooth_and_a_function_of_seed_and_index():
    field = np.asarray(D.elastic_field(64, 48, seed=3, index=7, pixels=2.5, spacing=16))
    assert field.shape == (64, 48, 2) and field.dtype == np.float32
    assert np.abs(field).max() <= 2.5 and np.abs(field).max() > 1.0
    # Smooth, without folds: neighbours move alike, so y + dy and x + dx keep increasing.
    assert np.abs(np.diff(field, axis=0)).max() < 1.0
    assert np.abs(np.diff(field, axis=1)).max() < 1.0
    again = np.asarray(D.elastic_field(64, 48, seed=3, index=7, pixels=2.5, spacing=16))
    assert again.tobytes() == field.tobytes()
    assert not np.array_equal(field, D.elastic_field(64, 48, seed=3, index=8, pixels=2.5))
    assert not np.array_equal(field, D.elastic_field(64, 48, seed=4, index=7, pixels=2.5))


def test_elastic_moves_a_square_alike_in_input_and_target():
    size = 48
    square = np.full((size, size), -1.0, np.float32)
    square[16:32, 20:36] = 1.0
    inputs = np.stack([square, square, np.full_like(square, -1.0)], axis=-1)
    targets = np.repeat(square[..., None], 3, axis=-1)
    moved = []
    for index in range(4):
        a, b = _augment(["elastic"], inputs, targets, index=index, elastic_pixels=3.0,
                        elastic_spacing=8)
        # The same field and interpolation: the square lands on the same pixels in both.
        np.testing.assert_array_equal(a[..., 0], b[..., 0])
        np.testing.assert_array_equal(a[..., 1], b[..., 0])
        np.testing.assert_array_equal(a[..., 2], -1.0)
        assert not np.array_equal(a[..., 0], square)  # it did move
        # ... by at most 3 pixels: its centre of mass, and no pixel far from the square.
        weight = (b[..., 0] + 1) / 2
        centre = np.array(ndimage.center_of_mass(weight))
        assert np.abs(centre - [23.5, 27.5]).max() <= 3.0
        near = np.zeros((size, size), bool)
        near[16 - 3:32 + 3, 20 - 3:36 + 3] = True
        assert (weight[~near] == 0).all()
        assert (weight[16 + 3:32 - 3, 20 + 3:36 - 3] == 1).all()
        moved.append(a.tobytes())
    assert len(set(moved)) == 4


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_is_a_function_of_seed_and_index(name):
    inputs, targets = _pair()
    first = _augment([name], inputs, targets, index=5, seed=3, **ALWAYS)
    second = _augment([name], inputs, targets, index=5, seed=3, **ALWAYS)
    assert first[0].tobytes() == second[0].tobytes() and first[1].tobytes() == second[1].tobytes()
    outcomes = [_augment([name], inputs, targets, index=i, seed=3, **ALWAYS)[0].tobytes()
                for i in range(5, 17)]
    assert outcomes[0] == first[0].tobytes() and len(set(outcomes)) > 1
    other_seed = [_augment([name], inputs, targets, index=i, seed=4, **ALWAYS)[0].tobytes()
                  for i in range(5, 17)]
    assert other_seed != outcomes
    assert not np.array_equal(first[0], inputs)
    assert first[0].min() >= -1.0 and first[0].max() <= 1.0
    if name in INPUT_ONLY:
        assert first[1].tobytes() == targets.tobytes()


def test_intensity_with_only_brightness_is_an_offset():
    inputs, targets = _pair()
    inputs = inputs * 0.5  # away from the clipping bounds
    out, _ = _augment(["intensity"], inputs, targets, brightness=0.1, contrast=0.0, gamma=1.0)
    offset = out - inputs
    np.testing.assert_allclose(offset, offset.flat[0], atol=2e-6)
    assert 0 < abs(offset.flat[0]) <= 0.2  # 0.1 of the 0..1 range is 0.2 in [-1, 1]
    same, _ = _augment(["intensity"], inputs, targets, brightness=0.0, contrast=0.0, gamma=1.0)
    np.testing.assert_allclose(same, inputs, atol=1e-6)


def test_blur_equals_scipy_gaussian_filter_with_the_drawn_sigma():
    inputs, targets = _pair(size=24)
    seed, index, sigma_max = 3, 5, 1.5
    out, _ = _augment(["blur"], inputs, targets, index=index, seed=seed, blur_sigma=sigma_max)
    sigma = float(D._uniform([], seed, D._SALTS["blur"], index, 0.0, sigma_max))
    radius = D.blur_radius(sigma_max)
    assert radius == 5 and 0 < sigma < sigma_max
    for c in range(3):
        # TensorFlow's REFLECT padding is scipy's "mirror" (the edge pixel is not repeated).
        expected = ndimage.gaussian_filter(inputs[..., c].astype(np.float64), sigma,
                                           mode="mirror", truncate=radius / sigma)
        np.testing.assert_allclose(out[..., c], expected, atol=2e-6)
    same, _ = _augment(["blur"], inputs, targets, blur_sigma=0.0)
    assert same.tobytes() == inputs.tobytes()


def _shifted(channel, dy, dx):
    h, w = channel.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[rows][:, cols]


def test_misalign_shifts_red_or_green_by_whole_pixels():
    inputs, targets = _pair(size=20)
    channels, shifts = set(), set()
    for index in range(12):
        out, back = _augment(["misalign"], inputs, targets, index=index, misalign_p=1.0,
                             misalign_pixels=2)
        assert back.tobytes() == targets.tobytes()
        changed = [c for c in range(3) if not np.array_equal(out[..., c], inputs[..., c])]
        assert len(changed) <= 1 and 2 not in changed
        if not changed:  # drew a shift of (0, 0)
            continue
        c = changed[0]
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(out[..., c], _shifted(inputs[..., c], dy, dx))]
        assert len(match) == 1, match
        channels.add(c)
        shifts.add(match[0])
    assert channels == {0, 1} and len(shifts) > 3
    never, _ = _augment(["misalign"], inputs, targets, misalign_p=0.0)
    assert never.tobytes() == inputs.tobytes()


def test_missing_slice_blanks_red_or_green_with_probability_p():
    inputs, targets = _pair(size=16)
    blanked = []
    for index in range(200):
        out, back = _augment(["missing_slice"], inputs, targets, index=index,
                             missing_slice_p=0.25)
        assert back.tobytes() == targets.tobytes()
        black = [c for c in range(3) if (out[..., c] == -1.0).all()]
        others = [c for c in range(3) if c not in black]
        for c in others:
            assert np.array_equal(out[..., c], inputs[..., c])
        assert black in ([], [0], [1])
        blanked += black
    assert 30 <= len(blanked) <= 70  # 200 x 0.25 = 50 expected
    assert blanked.count(0) > 10 and blanked.count(1) > 10


def _batches(dataset):
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]


def test_augmented_pipeline_resumes_bit_identically_and_none_changes_nothing(tmp_path):
    combined = combined_images(tmp_path, (3, 24, 24), seed=2)
    inputs, targets, _ = D.load_pairs(combined)
    options = {"seed": 7, "batch_size": 2, "max_steps": 6, "fliplr": True, "flipud": True,
               "transpose": True, "scale_size": 24, "crop_size": 16,
               "augment": list(AUGMENTATIONS), **ALWAYS}
    full = _batches(D.training_dataset(inputs, targets, options))
    tail = _batches(D.training_dataset(inputs, targets, options, start_step=4))
    assert len(full) == 6 and len(tail) == 2
    for (a, b), (c, d) in zip(full[4:], tail):
        assert a.tobytes() == c.tobytes() and b.tobytes() == d.tobytes()
    plain = dict(options, augment=[])
    del plain["missing_slice_p"], plain["misalign_p"]
    without = _batches(D.training_dataset(inputs, targets, plain))
    legacy = {k: v for k, v in plain.items() if k != "augment"}
    for (a, b), (c, d) in zip(without, _batches(D.training_dataset(inputs, targets, legacy))):
        assert a.tobytes() == c.tobytes() and b.tobytes() == d.tobytes()
    # The augmentations change the inputs; elastic also moves the targets.
    assert not np.array_equal(full[0][0], without[0][0])
    assert not np.array_equal(full[0][1], without[0][1])


def test_training_records_augmentations_and_warns_on_one_slice_inputs(tmp_path, capsys):
    combined = combined_images(tmp_path, (2, 16, 16), seed=1)
    out = tmp_path / "t"
    assert translate.main(["--mode", "train", "--input_dir", str(combined), "--output_dir",
                           str(out), "--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16",
                           "--scale_size", "16", "--gan_weight", "0", "--max_steps", "2",
                           "--augment", "missing_slice,intensity,elastic",
                           "--brightness", "0.05", "--elastic_pixels", "1.5"]) == 0
    err = capsys.readouterr().err
    assert "warning: --augment missing_slice changes the red or the green channel" in err
    saved = json.loads((out / "options.json").read_text())
    assert saved["augment"] == ["elastic", "intensity", "missing_slice"]
    assert saved["brightness"] == 0.05 and saved["elastic_pixels"] == 1.5
    assert saved["contrast"] == D.AUGMENT_DEFAULTS["contrast"]
    assert saved["missing_slice_p"] == D.AUGMENT_DEFAULTS["missing_slice_p"]

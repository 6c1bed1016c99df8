"""Stack I/O: numeric order, padding, channels, atomic writes, dtypes."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from neuron3d import io


def _save(path, array):
    Image.fromarray(array).save(path)


def test_slices_read_in_numeric_order(tmp_path):
    for n in (10, 2, 1, 100):
        _save(tmp_path / f"{n}.png", np.full((3, 4), n, np.uint8))
    stack = io.read_stack(tmp_path)
    assert stack[:, 0, 0].tolist() == [1, 2, 10, 100]


def test_trainer_outputs_are_picked(tmp_path):
    for n in range(3):
        _save(tmp_path / f"{n:02d}-outputs.png", np.full((2, 2, 3), n, np.uint8))
        _save(tmp_path / f"{n:02d}-inputs.png", np.full((2, 2, 3), 99, np.uint8))
    stack = io.read_stack(tmp_path, channel=0)
    assert stack.shape == (3, 2, 2)
    assert stack[:, 0, 0].tolist() == [0, 1, 2]


def test_duplicate_numbers_are_an_error(tmp_path):
    _save(tmp_path / "1.png", np.zeros((2, 2), np.uint8))
    _save(tmp_path / "01.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="two slice files carry number 1"):
        io.read_stack(tmp_path)


def test_write_slices_padding_and_round_trip(tmp_path):
    stack = np.random.default_rng(0).integers(0, 256, (101, 5, 6), dtype=np.uint8)
    files = io.write_slices(tmp_path / "out", stack)
    assert files[0].name == "000.png" and files[-1].name == "100.png"
    np.testing.assert_array_equal(io.read_stack(tmp_path / "out"), stack)
    assert io.slice_names(3) == ["00.png", "01.png", "02.png"]
    # Rewriting with fewer slices leaves no stale slice behind, and no temporary files.
    io.write_slices(tmp_path / "out", stack[:3])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00.png", "01.png", "02.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_tif_round_trip_keeps_dtype_and_single_slice(tmp_path, dtype):
    stack = np.array([[[0, 1], [2, np.iinfo(dtype).max]]], dtype=dtype)
    io.write_tif(tmp_path / "x.tif", stack)
    back = io.read_stack(tmp_path / "x.tif")
    assert back.dtype == dtype and back.shape == (1, 2, 2)
    np.testing.assert_array_equal(back, stack)
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.read_stack(tmp_path / "missing.tif")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"must be 3-D .*\(4, 5\)"):
        io.read_stack(tmp_path / "flat.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no slice files"):
        io.read_stack(tmp_path / "empty")
    (tmp_path / "sizes").mkdir()
    _save(tmp_path / "sizes" / "0.png", np.zeros((2, 2), np.uint8))
    _save(tmp_path / "sizes" / "1.png", np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        io.read_stack(tmp_path / "sizes")


def test_label_validation():
    with pytest.raises(ValueError, match="integer dtype, got float32 from x.tif"):
        io.as_label_stack(np.zeros((1, 2, 2), np.float32), "x.tif")
    with pytest.raises(ValueError, match=r"negative values \(min -1\)"):
        io.as_label_stack(np.array([[[-1, 2]]], np.int16), "x.tif")
    with pytest.raises(ValueError, match="fractional"):
        io.as_label_stack(np.array([[[0.5]]]), "x.tif", allow_integral_float=True)
    ok = io.as_label_stack(np.array([[[3.0, 70000.0]]]), "x.tif", allow_integral_float=True)
    assert ok.dtype == np.uint32 and ok.tolist() == [[[3, 70000]]]
    assert io.as_label_stack(np.array([[[7]]], np.int64), "x").dtype == np.uint64

"""Stack I/O: numeric order, padding, channels, atomic writes, permissions, dtypes."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_images_listed_in_natural_order_not_listing_order(tmp_path):
    for name in ("b10.png", "b2.png", "a.TIF", "b1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in io.list_slice_files(tmp_path, pattern=None)]
    assert names == ["a.TIF", "b1.jpg", "b2.png", "b10.png"]
    with pytest.raises(ValueError, match=r"--b_dir holds no images \(png, tif.*\): .*sub.png"):
        io.list_slice_files(tmp_path / "sub.png", pattern=None, what="--b_dir")
    with pytest.raises(FileNotFoundError, match="--input_dir does not exist: .*nope"):
        io.list_slice_files(tmp_path / "nope", pattern=None, what="--input_dir")
    with pytest.raises(ValueError, match="--input_dir must be a folder of images, got a file"):
        io.list_slice_files(tmp_path / "b2.png", what="--input_dir")


def _mode(path):
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_tif(tmp_path / "new" / "x.tif", np.zeros((1, 2, 2), np.uint8))
        io.write_file(tmp_path / "t.json", "{}")
        io.write_image(tmp_path / "i.png", np.zeros((2, 2), np.uint8))
        io.write_slices(tmp_path / "slices", np.zeros((2, 2, 2), np.uint8))
        io.write_slices(tmp_path / "slices", np.zeros((3, 2, 2), np.uint8))  # into an existing one
    finally:
        os.umask(old)
    for file in (tmp_path / "new" / "x.tif", tmp_path / "t.json", tmp_path / "i.png",
                 tmp_path / "slices" / "00.png", tmp_path / "slices" / "02.png"):
        assert _mode(file) == 0o666 & ~umask, (file, oct(_mode(file)))
    for folder in (tmp_path / "new", tmp_path / "slices"):
        assert _mode(folder) == 0o777 & ~umask, (folder, oct(_mode(folder)))


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stale = [tmp_path / f".x.tif.{dead.pid}-0123abcd.part.tif",  # a killed write_tif
             tmp_path / ".x.tif.k2_9zq0a.part.tif",  # the names of earlier versions
             tmp_path / f".out.{dead.pid}-89abcdef.part"]  # a killed write_slices (a folder)
    stale[0].write_bytes(b"half")
    stale[1].write_bytes(b"half")
    stale[2].mkdir()
    (stale[2] / "00.png").write_bytes(b"half")
    live = tmp_path / f".x.tif.{os.getpid()}-00000000.part.tif"  # a writer still running
    live.write_bytes(b"busy")
    other = tmp_path / f".x.tif.tif.{dead.pid}-0123abcd.part"  # another target's temporary
    other.write_bytes(b"")
    io.write_tif(tmp_path / "x.tif", np.zeros((1, 2, 2), np.uint8))
    io.write_slices(tmp_path / "out", np.zeros((1, 2, 2), np.uint8))
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_temporaries_of_a_killed_writer_not_yet_reaped_are_removed(tmp_path):
    """A writer killed together with its parent is a zombie until init reaps it, and
    kill(pid, 0) succeeds on a zombie: its temporary must count as stale all the same."""
    import time

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{zombie.pid}/stat")
    for _ in range(600):  # it exits at once; not waited for, so it stays a zombie
        if stat.read_text().rpartition(")")[2].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the child never exited")
    stale = tmp_path / f".x.tif.{zombie.pid}-0123abcd.part.tif"
    stale.write_bytes(b"half")
    assert io.remove_stale_temporaries(tmp_path / "x.tif") == [stale]
    zombie.wait()


def test_write_folder_is_all_or_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "out"

    def failing(tmp):
        (tmp / "1.png").write_bytes(b"x")
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        io.write_folder(target, failing)
    assert list(tmp_path.iterdir()) == []  # not even the missing parents
    io.write_folder(target, lambda tmp: (tmp / "1.png").write_bytes(b"one"))
    (target / "keep.txt").write_text("mine")
    (target / "old.png").write_bytes(b"old")
    with pytest.raises(ValueError):
        io.write_folder(target, failing)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["1.png", "keep.txt", "old.png"]
    files = io.write_folder(target, lambda tmp: (tmp / "2.png").write_bytes(b"two"),
                            owned=lambda name: name.endswith(".png"))
    assert files == [target / "2.png"]
    assert sorted(p.name for p in target.iterdir()) == ["2.png", "keep.txt"]
    with pytest.raises(ValueError, match="existing file, expected a folder"):
        io.write_folder(target / "keep.txt", failing)


def test_failed_file_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        io.write_file(tmp_path / "new" / "x.txt", 3.5)
    with pytest.raises((KeyError, ValueError)):  # tifffile cannot store objects
        io.write_tif(tmp_path / "new" / "y.tif", np.zeros((1, 2, 2), object))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, slices, reader_dtype", [
    ("s.tif", False, np.uint16), ("folder", True, np.uint16), ("s.zarr", False, np.uint16),
    ("f.zarr", True, np.uint16),
])
def test_write_stack_round_trips_every_format(tmp_path, name, slices, reader_dtype):
    stack = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 1000
    written = io.write_stack(tmp_path / name, stack, slices=slices, chunks=(1, 2, 2))
    back = io.read_stack(tmp_path / name)
    assert back.dtype == reader_dtype
    np.testing.assert_array_equal(back, stack)
    if name.endswith(".zarr"):
        from neuron3d import zarrio

        assert written == tmp_path / name and zarrio.open_array(written).chunks == (1, 2, 2)
    elif slices:
        assert [p.name for p in written] == ["00.png", "01.png"]
    else:
        assert written == tmp_path / name and (tmp_path / name).is_file()


def test_write_stack_masks_are_0_255(tmp_path):
    mask = np.array([[[True, False]]])
    io.write_stack(tmp_path / "m", mask, slices=True)
    io.write_stack(tmp_path / "m.zarr", mask)
    for path in ("m", "m.zarr"):
        np.testing.assert_array_equal(io.read_stack(tmp_path / path), [[[255, 0]]])

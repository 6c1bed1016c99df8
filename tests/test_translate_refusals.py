"""translate.py refuses what would destroy data or do the wrong thing (issue 21's items of the
trainer): one stderr line naming the flag or file, exit 2, nothing created, inputs unchanged."""

import hashlib

import numpy as np
import pytest
from conftest import assert_user_error_status, combined_images, train_tiny

from imagetranslation import translate
from neuron3d import zarrio

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(combined pairs, a tiny trained run without best/, an EM store (uint8 (4, 16, 16)))."""
    root = tmp_path_factory.mktemp("trained")
    combined = combined_images(root, (2, 16, 16), seed=1)
    assert train_tiny(combined, root / "run", "--max_steps", "2", seed=3) == 0
    em = np.random.default_rng(0).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    store = zarrio.write_zarr(root / "E.zarr", em, chunks=(2, 16, 16))
    return combined, root / "run", store


def _hashes(*folders):
    """sha256 of every file (and the list of every path) under ``folders``."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() \
                else "dir"
    return out


def _test(run, source, out, *extra):
    return translate.main(["--mode", "test", "--checkpoint", str(run), "--input_dir",
                           str(source), "--output_dir", str(out), *extra])


@pytest.mark.parametrize("output", ["same", "inside"])
def test_test_mode_refuses_an_output_in_its_slice_input(trained, capsys, output):
    combined, run, _ = trained
    before = _hashes(combined, run)
    out = combined if output == "same" else combined / "pred"
    capsys.readouterr()
    line = assert_user_error_status(_test(run, combined, out), capsys, f"--input_dir {combined}",
                                    "would destroy the input")
    assert str(out / "images") in line and "--output_dir" in line
    assert _hashes(combined, run) == before
    assert not (combined / "pred").exists()


@pytest.mark.parametrize("output", ["E.zarr", "E.zarr/pred.zarr", "E.zarr/0/p.zarr"])
def test_zarr_test_mode_refuses_an_output_that_is_or_lies_inside_its_input(trained, capsys,
                                                                             output):
    _, run, store = trained
    before = _hashes(store, run)
    out = store.parent / output
    capsys.readouterr()
    how = "is" if output == "E.zarr" else "lies inside"
    assert_user_error_status(_test(run, store, out), capsys,
                             f"--output_dir {out} {how} --input_dir {store}",
                             "would destroy the input")
    assert _hashes(store, run) == before


@pytest.mark.parametrize("engine", [(), ("--scheduler", "local:1")], ids=["serial", "dask"])
def test_zarr_test_mode_names_a_corrupt_chunk_in_one_line(trained, tmp_path, capsys, engine):
    _, run, store = trained
    broken = tmp_path / "B.zarr"
    zarrio.write_zarr(broken, zarrio.read_zarr(store), chunks=(2, 16, 16))
    chunks = sorted(p for p in broken.rglob("*") if p.is_file() and p.parent.name.isdigit()
                    and not p.name.startswith("."))
    assert chunks, list(broken.rglob("*"))
    chunks[-1].write_bytes(b"\x00 not a chunk \xff" * 3)
    before = _hashes(broken)
    capsys.readouterr()
    status = _test(run, broken, tmp_path / "P.zarr", *engine)
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "Compute Failed" not in err, err
    lines = [line for line in err.strip().splitlines()  # beside the engine's dashboard line
             if not line.startswith("dask: ") and " blocks " not in line]
    assert len(lines) == 1 and lines[0].startswith("translate.py: error: "), err
    assert f"--input_dir {broken}" in lines[0] and "unreadable chunks" in lines[0], lines[0]
    assert not (tmp_path / "P.zarr").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["B.zarr"]  # no temporaries either
    assert _hashes(broken) == before


@pytest.mark.parametrize("dtype", [np.float64, bool, np.uint16])
def test_zarr_test_mode_refuses_stores_that_are_not_em(trained, tmp_path, capsys, dtype):
    _, run, _ = trained
    values = np.random.default_rng(1).integers(0, 2, (3, 16, 16)).astype(dtype)
    source = tmp_path / "L.zarr"
    import zarr

    array = zarr.open_array(str(source), mode="w", shape=values.shape, dtype=values.dtype,
                            chunks=(1, 16, 16))
    array[...] = values
    before = _hashes(source)
    capsys.readouterr()
    line = assert_user_error_status(_test(run, source, tmp_path / "P.zarr"), capsys,
                                    f"--input_dir {source} holds {np.dtype(dtype)}",
                                    "expected EM: uint8 (z, y, x) or (z, y, x, c)")
    assert "(3, 16, 16)" in line
    assert not (tmp_path / "P.zarr").exists()
    assert _hashes(source) == before


def test_devices_naming_cpu_twice_says_so(trained, tmp_path, capsys):
    combined, _, _ = trained
    status = train_tiny(combined, tmp_path / "t", "--max_steps", "1", "--devices", "cpu,cpu",
                        seed=0)
    assert_user_error_status(status, capsys, "--devices cpu,cpu: cpu is named twice",
                             "--devices cpu")
    assert not (tmp_path / "t").exists()
    status = train_tiny(combined, tmp_path / "t", "--max_steps", "1", "--devices",
                        "CPU:0,all", seed=0)
    assert_user_error_status(status, capsys, "--devices CPU:0,all: all is in a list",
                             "stands alone")
    assert not (tmp_path / "t").exists()


def test_train_refuses_tta(trained, tmp_path, capsys):
    combined, _, _ = trained
    status = train_tiny(combined, tmp_path / "t", "--max_steps", "1", "--tta", seed=0)
    assert_user_error_status(status, capsys, "--tta is for --mode test", "--mode train")
    assert not (tmp_path / "t").exists()


def test_weights_best_on_a_run_without_best_is_refused(trained, tmp_path, capsys):
    combined, run, store = trained
    before = _hashes(run)
    capsys.readouterr()
    assert_user_error_status(_test(run, combined, tmp_path / "p", "--weights", "best"), capsys,
                             f"--weights best: the run {run} has no validated best weights",
                             "--weights last")
    assert_user_error_status(_test(run, store, tmp_path / "P.zarr", "--weights", "best"), capsys,
                             f"--weights best: the run {run} has no validated best weights")
    assert list(tmp_path.iterdir()) == []
    assert _hashes(run) == before
    # Without --weights (best when the run has them) and with --weights last: the last checkpoint.
    assert _test(run, combined, tmp_path / "a") == 0
    assert _test(run, combined, tmp_path / "b", "--weights", "last") == 0
    for name in ("00-outputs.png", "01-outputs.png"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == \
            (tmp_path / "b" / "images" / name).read_bytes()


def test_resume_with_max_steps_below_the_checkpoint_is_refused(trained, tmp_path, capsys):
    combined, run, _ = trained
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run, copy)
    before = _hashes(copy)
    capsys.readouterr()
    status = train_tiny(combined, copy, "--max_steps", "1", "--checkpoint", str(copy), seed=3)
    assert_user_error_status(status, capsys, "--max_steps 1", f"--checkpoint {copy} (step 2)")
    assert _hashes(copy) == before
    # At the checkpoint's step: nothing left to train, not refused.
    assert train_tiny(combined, copy, "--max_steps", "2", "--checkpoint", str(copy), seed=3) == 0

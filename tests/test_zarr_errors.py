"""zarr errors are one line naming the store (issue 21 items 9, 12, 15, 17).

Broken metadata (bad JSON, a negative shape, a dtype that is not a number), a corrupt chunk
read in memory, serially or by dask workers, labels of the wrong dtype or with negative
values under ``--scheduler``, and NaN/inf voxel sizes: each is a ValueError (exit 2, one
line on stderr) naming the store and what was expected, with nothing written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("zarr")

from neuron3d import blockwise, zarrio  # noqa: E402

IDS = (np.arange(4 * 8 * 8).reshape(4, 8, 8) // 7 + 1).astype(np.uint32)


def good(tmp_path, name="s", array=IDS):
    return zarrio.write_zarr(tmp_path / f"{name}.zarr", array, (2, 8, 8))


def edit_array_metadata(path, **changes):
    meta_path = path / "0" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("change, fragments", [
    ("json", ["0/.zarray is not valid JSON", "Expecting ',' delimiter", "expected zarr metadata"]),
    ("list", ["0/.zarray holds list, expected a JSON object"]),
    ("shape", ["0/.zarray: expected a shape of whole numbers >= 0, got [-1, 8, 8]"]),
    ("object", ["0/.zarray: expected a numeric dtype (bool, integers or floats), got '|O'"]),
    ("unknown", ["expected a numeric dtype (bool, integers or floats), got '<q9'"]),
    ("group", [".zattrs is not valid JSON"]),
])
def test_broken_metadata_names_the_store_and_what_was_expected(tmp_path, change, fragments):
    path = good(tmp_path)
    if change == "json":
        (path / "0" / ".zarray").write_text('{\n "zarr_format": 2\n "shape": [4, 8, 8]}')
    elif change == "list":
        (path / "0" / ".zarray").write_text("[1, 2]")
    elif change == "shape":
        edit_array_metadata(path, shape=[-1, 8, 8])
    elif change == "object":
        edit_array_metadata(path, dtype="|O")
    elif change == "unknown":
        edit_array_metadata(path, dtype="<q9")
    else:
        (path / ".zattrs").write_text("{bad")
    for call in (lambda: zarrio.open_array(path, "--true"), lambda: zarrio.read_zarr(path, "--true"),
                 lambda: blockwise.open_input(path, "--true")):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"--true {path}") and "\n" not in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def test_zarr_v3_metadata_is_checked_too(tmp_path):
    import zarr

    path = tmp_path / "v3.zarr"
    zarr.create_array(store=str(path), shape=(2, 3, 4), dtype="u2", zarr_format=3)
    assert zarrio.open_array(path).shape == (2, 3, 4)
    meta = json.loads((path / "zarr.json").read_text())
    meta["data_type"] = "string"
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"v3.zarr: zarr.json: expected a numeric dtype .* got "
                                         r"'string'"):
        zarrio.open_array(path)


def corrupt_chunk(path):
    """Overwrite the first chunk file of the store's array with bytes no codec decodes."""
    chunk = path / "0" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage, not a blosc frame" * 3)
    return chunk


def test_corrupt_chunk_in_memory_and_serially_names_the_store(tmp_path):
    path = good(tmp_path)
    corrupt_chunk(path)
    with pytest.raises(ValueError, match=f"--input_dir {path} has unreadable chunks"):
        zarrio.read_zarr(path, "--input_dir")
    with pytest.raises(ValueError, match=f"^{path} has unreadable chunks"):
        blockwise.per_slice(blockwise.SerialExecutor(), "membrane", path, tmp_path / "m.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0])
def test_voxel_size_must_be_finite_and_positive(tmp_path, value):
    with pytest.raises(ValueError, match=r"--voxel_size must be three finite sizes > 0 in nm "
                                         rf"\(z y x\), got {value} 6 6"):
        zarrio.write_zarr(tmp_path / "v.zarr", IDS, voxel_size=(value, 6, 6))
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a temporary
    with pytest.raises(ValueError, match="--voxel_size must be three"):
        zarrio.check_voxel_size((6, 6))
    assert zarrio.check_voxel_size([30, 6, 6.5]) == (30.0, 6.0, 6.5)


def test_written_voxel_sizes_are_plain_json(tmp_path):
    path = zarrio.write_zarr(tmp_path / "v.zarr", IDS, voxel_size=(30, 6, 6))
    meta = json.loads((path / ".zattrs").read_text(), parse_constant=pytest.fail)
    scale = meta["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [30.0, 6.0, 6.0]


def test_evaluate_float_store_under_scheduler_refused_before_the_engine(tmp_path, capsys):
    from conftest import assert_user_error_status

    import evaluate3D

    floats = good(tmp_path, "f64", IDS.astype(np.float64))
    ids = good(tmp_path, "ids")
    status = evaluate3D.main(["--predicted", str(floats), "--true", str(ids), "--scheduler",
                              "local:1"])
    assert_user_error_status(status, capsys, "integer dtype, got float64", "f64.zarr")


def assert_one_error_line(result, prog, *fragments):
    """Exit 2; stderr holds no traceback and no dask worker log, and one error line (beside
    the engine's dashboard line and progress lines) naming every fragment."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Compute Failed" not in result.stderr, \
        result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("dask: ") and " blocks " not in line]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("script", ["process3D.py", "evaluate3D.py", "reconstruct3D.py"])
def test_corrupt_chunk_under_scheduler_is_one_line(tmp_path, script):
    """Workers meet the corrupt chunk; the client says it in one line, workers log nothing."""
    from conftest import run_script

    path = good(tmp_path, "bad")
    other = good(tmp_path, "ids")
    corrupt_chunk(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = {"process3D.py": ["--operation", "membrane", "--input_dir", path, "--output_dir",
                             tmp_path / "m.zarr"],
            "evaluate3D.py": ["--predicted", other, "--true", path],
            "reconstruct3D.py": ["--input_dir_cytoplasm", path, "--input_dir_overlap", other,
                                 "--output_dir", tmp_path, "--name", "r.zarr"]}[script]
    result = run_script(script, *args, "--scheduler", "local:1")
    assert_one_error_line(result, script, str(path), "has unreadable chunks")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .part store left


def test_negative_labels_under_scheduler_are_one_line_and_quiet_workers(tmp_path):
    from conftest import run_script

    negative = IDS.astype(np.int32)
    negative[3, 7, 7] = -2
    path = good(tmp_path, "neg", negative)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_script("process3D.py", "--operation", "overlap", "--input_dir", path,
                        "--output_dir", tmp_path / "o.zarr", "--scheduler", "local:1")
    assert_one_error_line(result, "process3D.py", "negative values (min -2)", str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_process3D_float_labels_under_scheduler_refused_before_the_engine(tmp_path, capsys):
    """A float label store is refused from its metadata: stderr is the error line alone
    (no "dask: ..." line, so no cluster was started) and nothing is written."""
    import process3D

    floats = good(tmp_path, "f64", IDS.astype(np.float64))
    before = sorted(p.name for p in tmp_path.iterdir())
    status = process3D.main(["--operation", "membrane", "--input_dir", str(floats),
                             "--output_dir", str(tmp_path / "mem.zarr"), "--scheduler", "local:1"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("process3D.py: error: ") and "f64.zarr" in err
    assert "float64" in err and "dask" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before

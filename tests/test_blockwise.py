"""Blockwise (zarr + dask.distributed) operations equal the in-memory ones, bit for bit.

One LocalCluster of 2 worker processes serves the module; chunks 7 x 50 x 61 do not divide
the 20 x 130 x 150 test volumes along any axis.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

from neuron3d import blockwise, labels, zarrio  # noqa: E402
from neuron3d.metrics import contingency, evaluate, scores_from_table  # noqa: E402
from neuron3d.reconstruct import evaluation_volume, reconstruct  # noqa: E402

SHAPE = (20, 130, 150)
CHUNKS = (7, 50, 61)


@pytest.fixture(scope="module")
def client():
    with blockwise.engine("local:2") as c:
        yield c


def blobs(shape, count, seed):
    """Labels of random Voronoi cells with background holes: many objects cross faces."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    seeds = np.zeros(shape, np.int32)
    points = tuple(rng.integers(0, s, count) for s in shape)
    seeds[points] = np.arange(1, count + 1)
    _, index = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[tuple(index)].astype(np.uint32)
    cells[rng.random(shape) < 0.05] = 0
    return cells


def random_masks(shape, density, seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random(shape), (0, 2, 2))
    return noise > np.quantile(noise, 1 - density)


def store(tmp_path, name, array, chunks=CHUNKS):
    return str(zarrio.write_zarr(tmp_path / f"{name}.zarr", array, chunks))


@pytest.mark.parametrize("operation", ["membrane", "cytoplasm", "overlap"])
def test_label_operations_equal_in_memory(client, tmp_path, operation):
    ids = blobs(SHAPE, 300, 1)
    out = tmp_path / "out.zarr"
    blockwise.per_slice(client, operation, store(tmp_path, "ids", ids), out, CHUNKS)
    expected = {"membrane": labels.membrane, "cytoplasm": labels.cytoplasm,
                "overlap": labels.overlap}[operation](ids)
    got = zarrio.read_zarr(out)
    assert got.dtype == np.uint8 and zarrio.open_array(out).chunks == CHUNKS
    np.testing.assert_array_equal(got, expected.astype(np.uint8) * 255)


def test_consecutive_and_eroskele_equal_in_memory(client, tmp_path):
    images = np.random.default_rng(2).integers(0, 256, SHAPE).astype(np.uint8)
    src = store(tmp_path, "em", images)
    blockwise.per_slice(client, "consecutive", src, tmp_path / "cons.zarr", CHUNKS)
    np.testing.assert_array_equal(zarrio.read_zarr(tmp_path / "cons.zarr"),
                                  labels.consecutive(images))
    masks = random_masks(SHAPE, 0.5, 3)
    src = store(tmp_path, "masks", masks)
    blockwise.per_slice(client, "eroskele", src, tmp_path / "thin.zarr", CHUNKS, erosions=2)
    expected = labels.eroskele(masks, 2)
    assert expected.any()
    np.testing.assert_array_equal(zarrio.read_zarr(tmp_path / "thin.zarr") > 0, expected)


def spiral_and_comb(shape):
    """Objects that cross block faces many times: a comb whose teeth join only in the last
    block along x."""
    cyto = np.zeros(shape, bool)
    z, y, x = shape
    cyto[:, 5:y - 5:4, 2:x - 2] = True          # teeth along x
    cyto[:, 5:y - 5, x - 3] = True               # their back, only in the last block
    over = np.zeros((z - 1, y, x), bool)
    over[:, 5:y - 5:4, 10] = True                # teeth connect through z at one column
    return cyto, over


def spiral(shape):
    """A spiral staircase: one object whose steps wind around the centre through every
    block of the grid, each step joined to the next only through an overlap plane."""
    z, y, x = shape
    cyto = np.zeros(shape, bool)
    over = np.zeros((z - 1, y, x), bool)
    yy, xx = np.mgrid[:y, :x]
    angle = np.arctan2(yy - y / 2, xx - x / 2)
    ring = np.hypot(yy - y / 2, xx - x / 2)
    for k in range(z):
        start = -np.pi + 2 * np.pi * k / z * 3 % (2 * np.pi)
        arc = (np.mod(angle - start, 2 * np.pi) < 2.5) & (ring > 20) & (ring < 60)
        cyto[k] = arc
        if k:
            over[k - 1] = arc & cyto[k - 1]
    return cyto, over


@pytest.mark.parametrize("case", ["random", "comb", "spiral", "dense", "one_slice", "empty"])
def test_reconstruct_equals_in_memory(client, tmp_path, case):
    shape = SHAPE
    if case == "random":
        cyto, over = random_masks(shape, 0.55, 4), random_masks((shape[0] - 1,) + shape[1:],
                                                                 0.3, 5)
    elif case == "comb":
        cyto, over = spiral_and_comb(shape)
    elif case == "spiral":
        cyto, over = spiral(shape)
    elif case == "dense":  # objects touching every face of every block
        cyto = np.ones(shape, bool)
        over = np.zeros((shape[0] - 1,) + shape[1:], bool)
        over[:, ::3, ::3] = True
    elif case == "one_slice":
        shape = (1,) + shape[1:]
        cyto, over = random_masks(shape, 0.5, 6), np.zeros((0,) + shape[1:], bool)
    else:
        cyto, over = np.zeros(shape, bool), np.zeros((shape[0] - 1,) + shape[1:], bool)
    expected = reconstruct(cyto, over)
    if case in ("spiral", "dense"):
        assert expected.max() == 1  # one object through every block
    out = tmp_path / "recon.zarr"
    # Overlap stores always hold a plane per cytoplasm slice here: the last one is ignored.
    padded = np.concatenate([over, np.zeros((1,) + shape[1:], bool)])
    count = blockwise.reconstruct(client, store(tmp_path, "cyto", cyto),
                                  store(tmp_path, "over", padded), out, CHUNKS)
    got = zarrio.read_zarr(out)
    assert count == int(expected.max())
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_more_than_65535_objects_and_chunk_size_one(client, tmp_path):
    shape = (4, 260, 260)
    cyto = np.zeros(shape, bool)
    cyto[:, ::2, ::2] = True                     # 4 x 130 x 130 = 67600 isolated pixels
    over = np.zeros(shape, bool)
    over[1, :20:2, ::2] = True                   # some joined through z: 67600 - 1300
    expected = reconstruct(cyto, over[:-1])
    assert expected.max() > 65535 and expected.dtype == np.uint32
    out = tmp_path / "many.zarr"
    count = blockwise.reconstruct(client, store(tmp_path, "c", cyto, (1, 100, 61)),
                                  store(tmp_path, "o", over, (1, 100, 61)), out, (1, 100, 61))
    assert count == expected.max()
    np.testing.assert_array_equal(zarrio.read_zarr(out), expected)


def test_open_input_reopens_a_store_replaced_under_the_same_name(tmp_path):
    path = tmp_path / "x.zarr"
    zarrio.write_zarr(path, np.zeros((3, 4, 5), np.uint8), (2, 4, 5))
    first = blockwise.open_input(path)
    assert blockwise.open_input(path) is first  # opened once per process
    zarrio.write_zarr(path, np.ones((6, 7, 8), np.uint16), (2, 4, 5))  # renamed in
    again = blockwise.open_input(path)
    assert again.shape == (6, 7, 8) and again.dtype == np.uint16
    with pytest.raises(FileNotFoundError, match="gone.zarr"):
        blockwise.open_input(tmp_path / "gone.zarr")


def test_local_workers_use_the_heap_for_block_sized_arrays(client):
    import os

    def environment():
        return {k: os.environ.get(k) for k in blockwise.WORKER_MALLOC}

    expected = {k: str(v) for k, v in blockwise.WORKER_MALLOC.items()}
    assert list(client.run(environment).values()) == [expected, expected]


def test_evaluation_volume_equals_in_memory(client, tmp_path):
    ids = blobs(SHAPE, 200, 7)
    out = tmp_path / "evaluation.zarr"
    blockwise.evaluation_volume(client, store(tmp_path, "ids", ids), out, CHUNKS)
    np.testing.assert_array_equal(zarrio.read_zarr(out), evaluation_volume(ids))


def test_contingency_and_every_score_equal_in_memory(client, tmp_path):
    true, pred = blobs(SHAPE, 150, 8), blobs(SHAPE, 220, 9)
    table = blockwise.contingency_table(client, store(tmp_path, "t", true),
                                        store(tmp_path, "p", pred), CHUNKS)
    whole = contingency(true, pred)
    for field in ("true", "pred", "counts"):
        np.testing.assert_array_equal(getattr(table, field), getattr(whole, field))
    assert scores_from_table(table) == evaluate(true, pred)  # every float, bit for bit


def test_bad_scheduler_and_memory_limit():
    for spec in ("local:0", "local:x", "localhost", ""):
        with pytest.raises(ValueError, match="--scheduler"):
            blockwise.parse_scheduler(spec)
    with pytest.raises(ValueError, match="--memory_limit"):
        blockwise.check_memory_limit("lots")
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match="no dask scheduler answered"):
        with blockwise.engine("tcp://127.0.0.1:9", connect_timeout=2):
            pass
    assert time.perf_counter() - start < 10


def test_probe_accepts_a_dask_scheduler(client):
    blockwise.probe_scheduler(client.scheduler.address, 5)  # no error: it is one


# ---------------------------------------------------------------------------------------------
# the command lines: the thesis' pipeline through zarr and local:2 equals the .tif pipeline


def test_cli_pipeline_through_zarr_equals_tif(tmp_path):
    import json

    import tifffile
    from conftest import run_script

    ids = blobs((9, 70, 90), 60, 11)
    tifffile.imwrite(tmp_path / "label.tif", ids)
    chunks = ("--chunks", "4", "30", "41")
    engine = ("--scheduler", "local:2", "--memory_limit", "1GiB")

    def ok(script, *args):
        result = run_script(script, *args)
        assert result.returncode == 0, result.stderr
        return result

    t, z = str(tmp_path) + "/", lambda name: str(tmp_path / f"{name}.zarr")
    ok("process3D.py", "--operation", "tif_to_zarr", "--input_dir", t + "label.tif",
       "--output_dir", z("label"), *chunks, "--voxel_size", "30", "6", "6")
    meta = json.loads((tmp_path / "label.zarr" / ".zattrs").read_text())["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [30.0, 6.0, 6.0]
    for op in ("cytoplasm", "overlap"):
        ok("process3D.py", "--operation", op, "--input_dir", t + "label.tif", "--output_dir",
           t + op)
        ok("process3D.py", "--operation", op, "--input_dir", z("label"), "--output_dir", z(op),
           *chunks, *engine)
    ok("process3D.py", "--operation", "eroskele", "--input_dir", t + "overlap",
       "--output_dir", t + "thin", "--erosions", "1")
    ok("process3D.py", "--operation", "eroskele", "--input_dir", z("overlap"),
       "--output_dir", z("thin"), "--erosions", "1", *chunks, *engine)
    ok("process3D.py", "--operation", "evaluation", "--input_dir", t + "label.tif",
       "--output_dir", t, "--name", "evaluate")
    ok("process3D.py", "--operation", "evaluation", "--input_dir", z("label"),
       "--output_dir", z("evaluate"), *chunks, *engine)
    ok("reconstruct3D.py", "--input_dir_cytoplasm", t + "cytoplasm", "--input_dir_overlap",
       t + "thin", "--output_dir", t, "--name", "recon")
    ok("reconstruct3D.py", "--input_dir_cytoplasm", z("cytoplasm"), "--input_dir_overlap",
       z("thin"), "--output_dir", t, "--name", "recon.zarr", *chunks, *engine)
    np.testing.assert_array_equal(zarrio.read_zarr(z("evaluate")),
                                  tifffile.imread(tmp_path / "evaluate.tif"))
    np.testing.assert_array_equal(zarrio.read_zarr(z("recon")),
                                  tifffile.imread(tmp_path / "recon.tif"))
    memory = ok("evaluate3D.py", "--predicted", t + "recon.tif", "--true", t + "evaluate.tif",
                "--labels", t + "label.tif").stdout
    dask = ok("evaluate3D.py", "--predicted", z("recon"), "--true", z("evaluate"), "--labels",
              z("label"), *engine).stdout
    assert dask.replace(z("evaluate"), "E").replace(z("label"), "L") == \
        memory.replace(t + "evaluate.tif", "E").replace(t + "label.tif", "L")
    ok("process3D.py", "--operation", "zarr_to_tif", "--input_dir", z("recon"),
       "--output_dir", t + "back.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif"),
                                  tifffile.imread(tmp_path / "recon.tif"))


@pytest.mark.parametrize("script, args, fragments", [
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/missing.zarr",
                      "--output_dir", "{t}/m.zarr"], ["missing.zarr", "does not exist"]),
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/corrupt.zarr",
                      "--output_dir", "{t}/m.zarr"], ["corrupt.zarr", "zarr"]),
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/flat.zarr",
                      "--output_dir", "{t}/m.zarr"], ["flat.zarr", "3-D"]),
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/ids.zarr",
                      "--output_dir", "{t}/m.zarr", "--chunks", "0", "8", "8"],
     ["--chunks", "0 8 8"]),
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/ids.zarr",
                      "--output_dir", "{t}/m", "--scheduler", "local:1"],
     ["--output_dir", ".zarr"]),
    ("process3D.py", ["--operation", "membrane", "--input_dir", "{t}/ids.zarr",
                      "--output_dir", "{t}/m.zarr", "--scheduler", "tcp://127.0.0.1:9"],
     ["tcp://127.0.0.1:9", "no dask scheduler answered"]),
    ("process3D.py", ["--operation", "tif_to_zarr", "--input_dir", "{t}/ids.zarr",
                      "--output_dir", "{t}/m.tif"], ["--output_dir", ".zarr"]),
    ("evaluate3D.py", ["--predicted", "{t}/ids.zarr", "--true", "{t}/small.zarr",
                       "--scheduler", "local:1"], ["shapes differ", "small.zarr"]),
    ("reconstruct3D.py", ["--input_dir_cytoplasm", "{t}/ids.zarr", "--input_dir_overlap",
                          "{t}/ids.zarr", "--output_dir", "{t}", "--name", "r.zarr",
                          "--scheduler", "local:1", "--connectivity", "26"],
     ["--connectivity 26"]),
])
def test_bad_zarr_input_one_line_exit_2(tmp_path, script, args, fragments):
    from conftest import assert_user_error, run_script

    zarrio.write_zarr(tmp_path / "ids.zarr", blobs((4, 20, 20), 5, 1))
    zarrio.write_zarr(tmp_path / "small.zarr", blobs((4, 20, 19), 5, 1))
    (tmp_path / "corrupt.zarr").mkdir()
    (tmp_path / "corrupt.zarr" / ".zgroup").write_text("{not json")
    import zarr

    zarr.create_array(store=str(tmp_path / "flat.zarr"), shape=(5, 5), dtype="u1",
                      zarr_format=2)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_script(script, *[a.format(t=tmp_path) for a in args])
    assert_user_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_cli_connects_to_a_running_scheduler(tmp_path):
    """--scheduler tcp://HOST:PORT: the path a cluster deployment (dask-jobqueue, ...) takes."""
    from conftest import run_script
    from dask.distributed import LocalCluster

    ids = blobs((6, 40, 50), 20, 12)
    src = store(tmp_path, "ids", ids, (4, 16, 32))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = run_script("process3D.py", "--operation", "membrane", "--input_dir", src,
                            "--output_dir", tmp_path / "m.zarr", "--scheduler",
                            cluster.scheduler_address)
    assert result.returncode == 0, result.stderr
    assert "dask: 1 workers" in result.stderr
    np.testing.assert_array_equal(zarrio.read_zarr(tmp_path / "m.zarr"),
                                  labels.membrane(ids).astype(np.uint8) * 255)


def test_workers_paused_for_memory_fail_naming_the_flag(monkeypatch):
    """Issue 21 item 6: a worker above its pause level runs nothing and dask raises nothing;
    the engine gives up after PAUSED_SECONDS, naming --memory_limit."""
    import time

    import dask
    from dask.distributed import Client, LocalCluster

    from neuron3d.blockwise import executor

    monkeypatch.setattr(executor, "PAUSED_SECONDS", 1.0)
    with dask.config.set({"distributed.worker.memory.pause": 0.05}):  # paused at 51 MiB
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               memory_limit="1GiB", host="127.0.0.1", dashboard_address=None)
    with cluster, Client(cluster) as paused:
        start = time.perf_counter()
        while [w["status"] for w in paused.scheduler_info()["workers"].values()] != ["paused"]:
            assert time.perf_counter() - start < 20, "the worker was never paused"
            time.sleep(0.1)
        with pytest.raises(ValueError, match=r"^test blocks: every dask worker has been paused "
                                             r"for memory for 1 s.*--memory_limit"):
            blockwise.run_tasks(paused, abs, [-1, -2], "test blocks")
        assert time.perf_counter() - start < 30


STOPPED_RUN = '''
import sys
import time

from neuron3d import blockwise, zarrio
from neuron3d.cli import run_cli


def body():
    with blockwise.engine("local:1") as client:
        with zarrio.creating(sys.argv[1], (2, 4, 4), "u1"):
            print("started", flush=True)
            blockwise.run_tasks(client, time.sleep, [120], "sleep blocks")


if __name__ == "__main__":
    raise SystemExit(run_cli("stopped", body))
'''


def test_sigterm_during_a_blockwise_run_leaves_no_part_store(tmp_path):
    """Issue 21 item 6: the SIGTERM that stopped a stuck run left a .part store."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_RUN)
    folder = tmp_path / "out"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(folder / "x.zarr")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "started"
        assert any(p.name.endswith(".part") for p in folder.iterdir())  # being written
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped: interrupted"
    assert list(folder.iterdir()) == []


def test_workers_killed_running_a_block_fail_naming_the_flag():
    """A worker that dies running a block (the nanny's kill at 95% of --memory_limit looks
    the same to the client) is one ValueError naming --memory_limit, not KilledWorker."""
    import os

    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        with cluster, Client(cluster) as dying:
            with pytest.raises(ValueError, match=r"^die blocks: dask workers died running a "
                                                 r"block \(out of memory\? see --memory_limit"):
                blockwise.run_tasks(dying, os._exit, [3], "die blocks")

"""The blockwise engine: the serial executor, the operations table, tasks that return bad
input, the memory checks and the scheduler probe (issue 21 items 5-8).

Nothing here starts a dask cluster: the serial executor runs the same tasks in this process,
and the scheduler addresses are local servers (127.0.0.1, stopped at the end of each test).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

from neuron3d import blockwise, labels, zarrio  # noqa: E402
from neuron3d.blockwise import executor  # noqa: E402
from neuron3d.metrics import contingency, evaluate, scores_from_table  # noqa: E402
from neuron3d.reconstruct import evaluation_volume, reconstruct  # noqa: E402

SHAPE = (6, 23, 29)
CHUNKS = (4, 10, 12)   # divides no axis


def blobs(shape, count, seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    seeds = np.zeros(shape, np.int32)
    seeds[tuple(rng.integers(0, s, count) for s in shape)] = np.arange(1, count + 1)
    _, index = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[tuple(index)].astype(np.uint32)
    cells[rng.random(shape) < 0.05] = 0
    return cells


def store(tmp_path, name, array, chunks=CHUNKS):
    return str(zarrio.write_zarr(tmp_path / f"{name}.zarr", array, chunks))


# ---- the serial executor ------------------------------------------------------------------

def test_engine_without_scheduler_is_the_serial_executor():
    with blockwise.engine(None) as client:
        assert isinstance(client, blockwise.SerialExecutor)
    with pytest.raises(ValueError, match="--memory_limit applies to --scheduler local:N"):
        with blockwise.engine(None, "1GiB"):
            pass


def test_serial_map_computes_inputs_first_once_and_frees_them():
    calls = []

    def square(x):
        calls.append(x)
        return x * x

    client = blockwise.SerialExecutor()
    first = client.map(square, [1, 2, 3])
    second = client.map(lambda a, b: a + b, first, [10, 20, 30], pure=False, priority=1)
    assert calls == []  # nothing runs before it is asked for
    assert blockwise.gather_with_progress(second, "sum") == [11, 24, 39]
    assert calls == [1, 2, 3]
    assert [f.result() for f in first] == [1, 4, 9] and calls == [1, 2, 3]
    assert second == [None, None, None]  # each future dropped once its result is here
    assert blockwise.run_tasks(client, square, [4, 5], "squares") == [16, 25]


@pytest.mark.parametrize("operation", ["membrane", "cytoplasm", "overlap", "consecutive",
                                       "eroskele"])
def test_serial_per_slice_equals_in_memory(tmp_path, operation):
    ids = blobs(SHAPE, 20, 1)
    images = np.random.default_rng(2).integers(0, 256, SHAPE).astype(np.uint8)
    source = store(tmp_path, "in", images if operation in ("consecutive", "eroskele") else ids)
    out = tmp_path / "out.zarr"
    with blockwise.engine(None) as client:
        shape = blockwise.per_slice(client, operation, source, out, CHUNKS, erosions=1)
    expected = {"membrane": lambda: labels.membrane(ids),
                "cytoplasm": lambda: labels.cytoplasm(ids),
                "overlap": lambda: labels.overlap(ids),
                "consecutive": lambda: labels.consecutive(images),
                "eroskele": lambda: labels.eroskele(images >= 127, 1)}[operation]()
    got = zarrio.read_zarr(out)
    assert shape == expected.shape == got.shape
    np.testing.assert_array_equal(got, expected.astype(np.uint8) * 255
                                  if expected.dtype == bool else expected)


def test_serial_reconstruct_evaluation_and_contingency_equal_in_memory(tmp_path):
    rng = np.random.default_rng(3)
    cyto = rng.random(SHAPE) < 0.6
    over = rng.random(SHAPE) < 0.3
    client = blockwise.SerialExecutor()
    count = blockwise.reconstruct(client, store(tmp_path, "c", cyto), store(tmp_path, "o", over),
                                  tmp_path / "r.zarr", CHUNKS)
    expected = reconstruct(cyto, over[:-1])
    assert count == expected.max() > 1
    got = zarrio.read_zarr(tmp_path / "r.zarr")
    assert got.dtype == expected.dtype == np.uint16
    np.testing.assert_array_equal(got, expected)
    ids = blobs(SHAPE, 20, 4)
    blockwise.evaluation_volume(client, store(tmp_path, "ids", ids), tmp_path / "e.zarr", CHUNKS)
    np.testing.assert_array_equal(zarrio.read_zarr(tmp_path / "e.zarr"), evaluation_volume(ids))
    table = blockwise.contingency_table(client, str(tmp_path / "ids.zarr"),
                                        str(tmp_path / "r.zarr"), CHUNKS)
    whole = contingency(ids, expected)
    for field in ("true", "pred", "counts"):
        np.testing.assert_array_equal(getattr(table, field), getattr(whole, field))
    assert scores_from_table(table) == evaluate(ids, expected)


# ---- the operations table -------------------------------------------------------------------

def test_operations_table_shapes_halos_and_memory():
    ops = blockwise.OPERATIONS
    assert set(ops) == {"membrane", "cytoplasm", "overlap", "consecutive", "eroskele"}
    assert [ops[n].output_shape((5, 7, 9)) for n in ops] == \
        [(5, 7, 9), (5, 7, 9), (4, 7, 9), (4, 7, 9, 3), (5, 7, 9)]
    assert ops["membrane"].halo == (0, 1, 1) and ops["overlap"].next_slices == 1
    assert ops["eroskele"].whole_slices and not ops["consecutive"].labels
    region = (slice(0, 2), slice(0, 3), slice(0, 4))
    # membrane reads 2 x (3 + 2) x (4 + 2) voxels; uint32 input + 10 bytes of work each
    assert ops["membrane"].block_bytes(region, 4) == 2 * 5 * 6 * 14
    assert ops["overlap"].block_bytes(region, 1) == 3 * 5 * 6 * 17


def test_membrane_blockwise_exact_on_a_tiny_stack(tmp_path):
    """Chunks of 1 x 2 x 2: every pixel's 3 x 3 neighbourhood crosses a block face."""
    ids = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]]], np.uint16)
    out = tmp_path / "m.zarr"
    blockwise.per_slice(blockwise.SerialExecutor(), "membrane",
                        store(tmp_path, "ids", ids, (1, 2, 2)), out, (1, 2, 2))
    expected = np.array([[[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]], np.uint8) * 255
    np.testing.assert_array_equal(zarrio.read_zarr(out), expected)
    assert zarrio.open_array(out).chunks == (1, 2, 2)


def test_float_labels_refused_before_any_block(tmp_path):
    source = store(tmp_path, "f", np.zeros((2, 4, 4), np.float64))
    client = blockwise.SerialExecutor()
    for call in (lambda: blockwise.per_slice(client, "membrane", source, tmp_path / "m.zarr"),
                 lambda: blockwise.evaluation_volume(client, source, tmp_path / "e.zarr"),
                 lambda: blockwise.contingency_table(client, source, source)):
        with pytest.raises(ValueError, match="integer dtype, got float64 from .*f.zarr"):
            call()
    with pytest.raises(ValueError, match="no blockwise operation 'split'"):
        blockwise.check_operation_input("split", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]


def test_negative_labels_are_one_error_from_the_task(tmp_path):
    ids = np.zeros((2, 4, 4), np.int32)
    ids[1, 2, 3] = -5
    source = store(tmp_path, "neg", ids, (1, 4, 4))
    with pytest.raises(ValueError, match=r"negative values \(min -5\) in .*neg.zarr"):
        blockwise.per_slice(blockwise.SerialExecutor(), "membrane", source, tmp_path / "m.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neg.zarr"]  # no .part left


def test_task_returns_bad_input_and_passes_it_on():
    def bad(x):
        raise FileNotFoundError(f"no such store: {x}.zarr\nsecond line")

    failed = blockwise.task(bad)(3)
    assert failed.kind is FileNotFoundError and failed.message == "no such store: 3.zarr"
    assert blockwise.task(lambda a: a + 1)(failed) is failed
    assert blockwise.task(lambda a: a + 1)(1) == 2
    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: it raises
        blockwise.task(lambda a: a / 0)(1)
    client = blockwise.SerialExecutor()
    futures = client.map(blockwise.task(bad), [1, 2])
    with pytest.raises(FileNotFoundError, match=r"^no such store: 1.zarr$"):
        blockwise.gather_with_progress(futures, "bad")
    assert futures[1]._call is None  # the rest cancelled


def test_output_inside_an_input_store_is_refused(tmp_path):
    source = store(tmp_path, "X", blobs((2, 8, 8), 3, 5), (1, 8, 8))
    client = blockwise.SerialExecutor()
    with pytest.raises(ValueError, match=r"output .*X.zarr/mem.zarr lies inside input .*X.zarr"):
        blockwise.per_slice(client, "membrane", source, tmp_path / "X.zarr" / "mem.zarr")
    with pytest.raises(ValueError, match="is input"):
        blockwise.evaluation_volume(client, source, source)
    with pytest.raises(ValueError, match="r.zarr lies inside --input_dir_cytoplasm .*X.zarr"):
        blockwise.reconstruct(client, source, source, tmp_path / "X.zarr" / "0" / "r.zarr")
    assert sorted(p.name for p in (tmp_path / "X.zarr").iterdir()) == [".zattrs", ".zgroup", "0"]


# ---- memory (issue 21 items 6 and 8) --------------------------------------------------------

@pytest.mark.parametrize("text", ["1e400", "inf", "nan", "-1GB", "lots", "1e30"])
def test_memory_limit_must_be_a_finite_size(text):
    with pytest.raises(ValueError, match=f"--memory_limit must be a size such as 2GiB or "
                                         f"500MB, got '{text}'"):
        blockwise.check_memory_limit(text)


def test_memory_limit_below_what_a_worker_needs_is_refused():
    with pytest.raises(ValueError, match=r"--memory_limit 1MB is below the 256 MiB"):
        blockwise.check_memory_limit("1MB")
    assert blockwise.check_memory_limit("256MiB") == 256 * 2**20
    assert blockwise.check_memory_limit("2GiB") == 2 * 2**30


class FakeClient:
    """What check_block_memory asks of a dask client: the workers' memory limits."""

    def __init__(self, *limits):
        self.limits = limits
        self.mapped = 0

    def scheduler_info(self):
        return {"workers": {f"tcp://w{i}": {"memory_limit": m} for i, m in
                            enumerate(self.limits)}}

    def map(self, *args, **kwargs):  # pragma: no cover - must not be reached
        self.mapped += 1
        raise AssertionError("blocks were submitted")


def test_block_larger_than_a_worker_can_hold_is_refused_before_submitting(tmp_path):
    source = store(tmp_path, "ids", blobs((4, 64, 64), 5, 6), (4, 64, 64))
    need = blockwise.OPERATIONS["membrane"].block_bytes(
        (slice(0, 4), slice(0, 64), slice(0, 64)), 4)
    assert need == 4 * 66 * 66 * 14
    small = int((executor.WORKER_BASELINE + need) / 0.8) - 1
    client = FakeClient(small, 0)  # 0: a worker without a limit
    with pytest.raises(ValueError, match=r"--memory_limit: a worker's limit of 160 MiB is too "
                                         r"small for one block of --operation membrane.*--chunks"):
        blockwise.per_slice(client, "membrane", source, tmp_path / "m.zarr", (4, 64, 64))
    assert client.mapped == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["ids.zarr"]
    blockwise.check_block_memory(FakeClient(small + 2), need, "x")  # just enough
    blockwise.check_block_memory(FakeClient(0, 0), 10**15, "x")     # no limits
    blockwise.check_block_memory(blockwise.SerialExecutor(), 10**15, "x")
    with pytest.raises(ValueError, match="too small for one block of the connected"):
        blockwise.reconstruct(FakeClient(160 * 2**20), source, source, tmp_path / "r.zarr", (4, 64, 64))
    with pytest.raises(ValueError, match="too small for one block of the contingency table"):
        blockwise.contingency_table(FakeClient(2**27 + 2**25), source, source, (4, 64, 64))


def test_cli_memory_limit_refused_in_one_line_before_a_cluster_starts(tmp_path, capsys):
    from conftest import assert_user_error_status

    import process3D

    source = store(tmp_path, "ids", blobs((4, 16, 16), 5, 7))
    for limit, message in (("1MB", "--memory_limit 1MB is below the 256 MiB"),
                           ("1e400", "--memory_limit must be a size")):
        start = time.perf_counter()
        status = process3D.main(["--operation", "membrane", "--input_dir", source,
                                 "--output_dir", str(tmp_path / "m.zarr"), "--scheduler",
                                 "local:1", "--memory_limit", limit])
        assert_user_error_status(status, capsys, message)
        assert time.perf_counter() - start < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.zarr"]


# ---- the scheduler probe (issue 21 items 5 and 7) -------------------------------------------

@contextmanager
def local_server(mode, seconds=30):
    """A TCP server on 127.0.0.1 that is not dask: ``silent`` accepts and never answers,
    ``banner`` sends an SSH banner, ``http`` answers what it is sent as an HTTP server would.
    It stops at the end of the ``with`` block, or by itself after ``seconds``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def serve():
        conns = []
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conns.append(conn)
            if mode == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n")
            elif mode == "http":
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass
        for conn in conns:
            conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.parametrize("mode, message", [
    ("silent", "no dask scheduler answered within 2 s"),
    ("banner", "is not a dask scheduler"),
    ("http", "is not a dask scheduler"),
])
def test_probe_fails_within_seconds_on_a_service_that_is_not_dask(mode, message):
    with local_server(mode) as address:
        start = time.perf_counter()
        with pytest.raises(ValueError, match=f"--scheduler {address}.*{message}"):
            with blockwise.engine(address, connect_timeout=2):
                pass
        assert time.perf_counter() - start < 6


def test_http_server_is_not_a_scheduler():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ValueError, match="--scheduler tcp://127.0.0.1:.*(not a dask "
                                             "scheduler|no dask scheduler answered)"):
            blockwise.probe_scheduler(f"tcp://127.0.0.1:{server.server_port}", 2)
        assert time.perf_counter() - start < 6
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("script", ["process3D.py", "evaluate3D.py"])
@pytest.mark.parametrize("mode", ["silent", "banner"])
def test_cli_scheduler_that_is_not_dask_one_line_exit_2(tmp_path, capsys, script, mode):
    from conftest import assert_user_error_status

    import evaluate3D
    import process3D

    source = store(tmp_path, "ids", blobs((4, 16, 16), 5, 8))
    with local_server(mode) as address:
        argv = ["--operation", "membrane", "--input_dir", source, "--output_dir",
                str(tmp_path / "m.zarr")] if script == "process3D.py" else \
            ["--predicted", source, "--true", source]
        start = time.perf_counter()
        main = process3D.main if script == "process3D.py" else evaluate3D.main
        status = main(argv + ["--scheduler", address])
        assert time.perf_counter() - start < 15
    assert_user_error_status(status, capsys, f"--scheduler {address}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.zarr"]


def _results_held_here(tag, wait_seconds=60.0):
    """On a dask worker: how many results of the run ``tag`` the worker holds, once the
    client has had up to ``wait_seconds`` to release those it has fetched."""
    import time

    from distributed import get_worker

    deadline = time.monotonic() + wait_seconds
    while True:
        held = sum(1 for key in get_worker().data if str(key).startswith(tag))
        if held <= 1 or time.monotonic() > deadline:
            return held


def test_gathering_frees_each_result_on_its_worker(tmp_path):
    """A pass's results (a region graph per block) grow with the volume: the worker frees
    each one once the client has it, so it holds the results not fetched yet, not all."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    tag = "held-results"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        futures = [client.submit(_results_held_here, tag, key=f"{tag}-{k}", pure=False)
                   for k in range(6)]
        held = blockwise.gather_with_progress(futures, "held")
    # without the release, the k-th task sees the k results before it (up to 5)
    assert max(held) <= 1, held
    assert futures == [None] * 6

"""Blockwise agglomeration (zarr in, zarr out) equals neuron3d.agglomerate.agglomerate bit for bit.

Blocks are Z whole slices; chunks that do not divide the shape, one-slice blocks, objects
crossing every block, more than 65535 fragments and objects, serially and on local:1.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

from conftest import assert_user_error_status  # noqa: E402

import reconstruct3D  # noqa: E402
from neuron3d import agglomerate as A  # noqa: E402
from neuron3d import blockwise, labels, zarrio  # noqa: E402
from neuron3d.blockwise import regiongraph as R  # noqa: E402
from neuron3d.synthetic import synthetic_labels  # noqa: E402

THRESHOLDS = [0.7, 0.3, 0.5, 0.6]


def noisy(shape, seed):
    """Membrane and overlap probabilities of synthetic neurons with noise: many ties."""
    rng = np.random.default_rng(seed)
    ids = synthetic_labels(shape, seed=seed)
    mask = labels.membrane(ids)
    mem = np.clip(mask * 0.8 + rng.normal(0, 0.25, shape), 0, 1).astype(np.float32)
    over = labels.overlap(ids, mask) * 0.8 + rng.normal(0, 0.25, (shape[0] - 1,) + shape[1:])
    return mem, np.clip(over, 0, 1).astype(np.float32)


def stores(tmp_path, mem, over, chunks):
    return (str(zarrio.write_zarr(tmp_path / "membrane.zarr", mem, chunks)),
            str(zarrio.write_zarr(tmp_path / "overlap.zarr", over, chunks)))


def run(client, tmp_path, mem, over, chunks, thresholds=THRESHOLDS, **options):
    sources = stores(tmp_path, mem, over, chunks)
    outputs = [tmp_path / f"out_{t}.zarr" for t in thresholds]
    result = blockwise.agglomerate_stores(client, *sources, outputs, thresholds, chunks,
                                          **options)
    return [zarrio.read_zarr(o) for o in outputs], result


@pytest.mark.parametrize("scoring", sorted(A.SCORINGS))
def test_serial_equals_in_memory_with_chunks_that_do_not_divide(tmp_path, scoring):
    mem, over = noisy((11, 70, 90), 1)
    expected = A.agglomerate(mem, over, THRESHOLDS, scoring=scoring, workers=1)
    got, result = run(blockwise.SerialExecutor(), tmp_path, mem, over, (3, 40, 50),
                      scoring=scoring)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    assert result["counts"] == [int(e.max()) for e in expected]
    assert result["fragments"] > 100 and result["edges"] > result["fragments"]


@pytest.mark.parametrize("scoring", sorted(A.SCORINGS))
def test_3d_fragments_per_block_equal_in_memory(tmp_path, scoring):
    mem, over = noisy((11, 70, 90), 1)
    # the in-memory equal: the same per-block 3-D fragments given as fragment_ids
    frags = blockwise.block_fragments(mem, 3)
    expected = A.agglomerate(mem, over, THRESHOLDS, scoring=scoring, workers=1,
                             fragment_ids=frags)
    got, result = run(blockwise.SerialExecutor(), tmp_path, mem, over, (3, 40, 50),
                      scoring=scoring, fragments="3d")
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    assert result["fragments"] == int(frags.max())
    # fragments span slices (far fewer than per slice) but never a block face
    per_slice = int(A.fragments(mem, workers=1).max())
    assert result["fragments"] < per_slice / 2
    for z in (3, 6, 9):
        assert not np.intersect1d(frags[:z], frags[z:]).size
    # each block is the in-memory 3-D watershed of its slices, after the blocks before it
    top = 0
    for z in range(0, 11, 3):
        block = frags[z:z + 3]
        np.testing.assert_array_equal(block - np.uint64(top), A.fragments(mem[z:z + 3],
                                                                        mode="3d"))
        top = int(block.max())
    assert any(len(np.unique(np.flatnonzero((frags == f).any(axis=(1, 2))))) == 3
               for f in np.unique(frags[0]))


def test_block_fragments_refuse_bad_blocks_and_options():
    mem, _ = noisy((4, 16, 16), 2)
    for depth in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="blocks must be a whole number of slices >= 1"):
            blockwise.block_fragments(mem, depth)
    with pytest.raises(ValueError, match="seed_threshold must be in"):
        blockwise.block_fragments(mem, 2, seed_threshold=0)


def test_3d_fragments_default_to_blocks_of_64_and_warn_of_thinner_ones(capsys):
    from neuron3d.blockwise.agglomerate import BLOCK_3D, block_chunks

    assert block_chunks((200, 300, 300), None, "3d") == (BLOCK_3D, 256, 256)
    assert block_chunks((200, 300, 300), None, "2d") == zarrio.DEFAULT_CHUNKS
    assert block_chunks((40, 30, 30), None, "3d") == (40, 30, 30)  # the whole volume
    assert capsys.readouterr().err == ""
    assert block_chunks((200, 300, 300), (16, 64, 64), "3d") == (16, 64, 64)
    err = capsys.readouterr().err
    assert err.startswith("warning: --fragments 3d in blocks of 16 slices") and \
        len(err.splitlines()) == 1
    block_chunks((200, 300, 300), (16, 64, 64), "2d")
    assert capsys.readouterr().err == ""


def test_3d_fragments_in_one_block_are_the_in_memory_3d_fragments(tmp_path):
    mem, over = noisy((7, 48, 52), 6)
    np.testing.assert_array_equal(blockwise.block_fragments(mem, 7),
                                  A.fragments(mem, mode="3d"))
    expected = A.agglomerate(mem, over, [0.4, 0.6], workers=1, fragment_mode="3d")
    got, _ = run(blockwise.SerialExecutor(), tmp_path, mem, over, (7, 20, 20), [0.4, 0.6],
                 fragments="3d")
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    with blockwise.engine("local:1") as client:
        got, _ = run(client, tmp_path / "local", mem, over, (4, 20, 20), [0.5],
                     fragments="3d")
    np.testing.assert_array_equal(
        got[0], A.agglomerate(mem, over, [0.5], workers=1,
                              fragment_ids=blockwise.block_fragments(mem, 4))[0])


def test_one_slice_blocks_and_uint8_inputs(tmp_path):
    mem, over = noisy((5, 40, 33), 2)
    mem8 = np.round(mem * 255).astype(np.uint8)
    over8 = np.round(over * 255).astype(np.uint8)
    expected = A.agglomerate(mem8, over8, [0.5], workers=1)
    (got,), _ = run(blockwise.SerialExecutor(), tmp_path, mem8, over8, (1, 16, 16), [0.5])
    np.testing.assert_array_equal(got, expected[0])


def test_objects_crossing_every_block(tmp_path):
    ids = synthetic_labels((12, 64, 64), seed=4)
    mask = labels.membrane(ids)
    mem, over = mask.astype(np.float32), labels.overlap(ids, mask).astype(np.float32)
    expected = A.agglomerate(mem, over, [0.5], workers=1)[0]
    (got,), _ = run(blockwise.SerialExecutor(), tmp_path, mem, over, (2, 64, 64), [0.5])
    np.testing.assert_array_equal(got, expected)
    # the neurons run through all 12 slices, i.e. through all 6 blocks
    assert any(len(np.unique(np.flatnonzero((got == k).any(axis=(1, 2))))) == 12
               for k in np.unique(got[0]))


def test_more_than_65535_fragments_and_objects(tmp_path):
    # every (even y, even x) pixel is a seed of its own: 4 x 128 x 128 = 65536 + 1024 more
    shape = (5, 256, 256)
    rng = np.random.default_rng(5)
    mem = (0.3 + 0.7 * rng.random(shape)).astype(np.float32)
    mem[:, ::2, ::2] = 0
    over = rng.random((4, 256, 256)).astype(np.float32)
    expected = A.agglomerate(mem, over, [0.05], min_distance=0, workers=1)[0]
    (got,), result = run(blockwise.SerialExecutor(), tmp_path, mem, over, (2, 100, 256),
                         [0.05], min_distance=0)
    assert result["fragments"] == 5 * 128 * 128
    assert expected.max() > 65535 and expected.dtype == np.uint32
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, expected)


def test_local_one_worker_equals_in_memory(tmp_path):
    mem, over = noisy((7, 48, 52), 6)
    expected = A.agglomerate(mem, over, [0.4, 0.6], workers=1)
    with blockwise.engine("local:1") as client:
        got, _ = run(client, tmp_path, mem, over, (3, 20, 20), [0.4, 0.6])
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)


def test_merge_replays_waterz_on_a_graph_built_in_one_block():
    mem, over = noisy((4, 40, 40), 7)
    frags, graph = blockwise.agglomerate.region_graph(mem, over)
    # edges in waterz's order, each with a histogram of positive counts
    order = np.lexsort((graph.v, graph.u))
    np.testing.assert_array_equal(order, np.arange(len(graph)))
    assert (graph.u < graph.v).all() and (graph.counts > 0).all()
    roots = R.merge(graph, int(frags.max()) + 1, [0.5])[0]
    first = np.full(len(roots), np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(first, frags.ravel().astype(np.int64), np.arange(frags.size, dtype=np.uint64))
    table, count = R.segment_labels(roots, first)
    expected = A.agglomerate(mem, over, [0.5], workers=1)[0]
    np.testing.assert_array_equal(table[frags], expected)
    assert count == expected.max()


def test_every_scoring_runs_blockwise():
    assert sorted(R.BLOCKWISE_SCORINGS) == sorted(A.SCORINGS)


def test_running_means_in_float32_in_order():
    # runs [0.1, 0.1, 0.7], [0.3], [] and [0.9, 0.4]: (a + mean * n) / (n + 1) in float32
    values = np.array([0.1, 0.1, 0.7, 0.3, 0.9, 0.4], np.float32)
    got = R.running_means(values, np.array([0, 3, 4, 4]), np.array([3, 1, 0, 2]))
    f = np.float32
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [f(0.29999998), f(0.3), f(0), (f(0.4) + f(0.9)) / f(2)])
    # the order of a run matters in float32: [0.7, 0.1, 0.1] ends one ulp higher
    again = R.running_means(values[[2, 1, 0]], np.array([0]), np.array([3]))
    assert again[0] == f(0.3) != got[0]


@pytest.mark.parametrize("z_threshold", [0.3, None])
def test_mean_graph_scores_equal_waterz_to_the_last_bit(z_threshold):
    """Every initial edge score of the replayed mean graph equals waterz's own (its region
    graph before any merge); a mean in float64, or in another contact order, misses some."""
    import waterz

    mem, over = noisy((6, 64, 50), 3)
    frags, graph = blockwise.agglomerate.region_graph(mem, over, scoring="mean",
                                                      z_threshold=z_threshold)
    m, o = A.check_inputs(mem, over)
    affs = A._affinities(m, o)
    if z_threshold is not None:
        A._rim_fill(affs, frags, m, z_threshold, "mean", 1)
    with A._quiet_stdout():
        _, edges = next(waterz.agglomerate(affs, [0.0], fragments=frags.copy(),
                                           scoring_function=A.SCORINGS["mean"],
                                           return_region_graph=True))
    np.testing.assert_array_equal([e["u"] for e in edges], graph.u)
    np.testing.assert_array_equal([e["v"] for e in edges], graph.v)
    expected = np.array([e["score"] for e in edges], np.float32)
    np.testing.assert_array_equal(np.array(R._Means(graph).initial_scores(), np.float32),
                                  expected)
    # the naive mean (float64 sums) misses a share of them: the test can tell
    u, v, values, _ = R._contacts(frags, affs, len(frags), len(o), scan_order=True)
    _, pair = np.unique(u * np.uint64(frags.max() + 1) + v, return_inverse=True)
    naive = np.bincount(pair, weights=values.astype(np.float64)) / np.bincount(pair)
    naive = (1.0 - naive.astype(np.float32)).astype(np.float32)
    assert (naive != expected).sum() > len(expected) // 10


def test_scores_and_pivots_as_waterz_computes_them():
    assert R._SCORE[0] == float(np.float32(1 - 0.5 / 256))
    assert R._SCORE[255] == float(np.float32(1 - 255.5 / 256))
    np.testing.assert_array_equal(R.discretize([0.0, -1.0, 0.5, 0.99999, 1.0, 2.0]),
                                  [0, 0, 128, 255, 255, 255])
    # Q * sum / 100 + 1 in C int: wraps past 2**31 and divides toward zero
    np.testing.assert_array_equal(R._pivots([1, 2, 3, 100, 2**31 // 50 + 1]),
                                  [1, 2, 2, 51, -21474835])


# ---- the command line -------------------------------------------------------------------


def digest(path):
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def zarr_inputs(tmp_path):
    mem, over = noisy((6, 40, 44), 8)
    mem8 = np.round(mem * 255).astype(np.uint8)
    over8 = np.round(over * 255).astype(np.uint8)
    m, o = stores(tmp_path, mem8, over8, (4, 40, 44))
    return tmp_path, m, o, mem8, over8


def agglomerate_cli(m, o, out, *extra):
    return reconstruct3D.main(["--method", "agglomerate", "--input_dir_membrane", m,
                               "--input_dir_overlap", o, "--output_dir", str(out), *extra])


@pytest.mark.parametrize("scoring", ["median", "mean"])
def test_cli_zarr_serial_equals_in_memory_one_store_per_threshold(zarr_inputs, scoring):
    folder, m, o, mem8, over8 = zarr_inputs
    assert agglomerate_cli(m, o, folder / "out", "--name", "agg.zarr", "--scoring", scoring,
                           "--merge_threshold", "0.4", "0.6", "--chunks", "4", "16", "16") == 0
    expected = A.agglomerate(mem8, over8, [0.4, 0.6], scoring=scoring, workers=1)
    for t, e in zip(["0.4", "0.6"], expected):
        store = folder / "out" / f"agg_{t}.zarr"
        np.testing.assert_array_equal(zarrio.read_zarr(store), e)


def test_cli_zarr_3d_fragments_per_block(zarr_inputs, capsys):
    folder, m, o, mem8, over8 = zarr_inputs
    assert agglomerate_cli(m, o, folder / "out3d", "--name", "agg.zarr", "--fragments", "3d",
                           "--merge_threshold", "0.5", "--chunks", "4", "16", "16") == 0
    assert "3d fragments per block" in capsys.readouterr().err
    expected = A.agglomerate(mem8, over8, [0.5], workers=1,
                             fragment_ids=blockwise.block_fragments(mem8, 4))[0]
    np.testing.assert_array_equal(zarrio.read_zarr(folder / "out3d" / "agg.zarr"), expected)


@pytest.mark.parametrize("case, fragments", [
    ("shape", ["--input_dir_overlap", "bad.zarr", "got (5, 40, 40)"]),
    ("count", ["--input_dir_overlap", "bad.zarr", "got (3, 40, 44)"]),
    ("chunks", ["bad.zarr is chunked (2, 40, 44)", "same --chunks"]),
    ("threshold", ["--merge_threshold must be in [0, 1], got 1.5"]),
    ("range", ["--input_dir_membrane", "membrane.zarr", "values from 0 to 2"]),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(zarr_inputs, capsys, case, fragments):
    folder, m, o, mem8, over8 = zarr_inputs
    extra = ["--name", "agg.zarr"]
    if case == "shape":
        o = str(zarrio.write_zarr(folder / "bad.zarr", over8[:, :, :40], (4, 40, 40)))
    elif case == "count":
        o = str(zarrio.write_zarr(folder / "bad.zarr", over8[:3], (4, 40, 44)))
    elif case == "chunks":
        o = str(zarrio.write_zarr(folder / "bad.zarr", over8, (2, 40, 44)))
    elif case == "threshold":
        extra += ["--merge_threshold", "0.5", "1.5"]
    elif case == "range":
        m = str(zarrio.write_zarr(folder / "membrane.zarr", mem8 / np.float32(127.5),
                                  (4, 40, 44)))
    capsys.readouterr()
    before = {p: digest(folder / p) for p in ("membrane.zarr", "overlap.zarr")}
    status = agglomerate_cli(m, o, folder / "out", *extra)
    err = capsys.readouterr().err
    if case == "range":  # found by a task: beside the progress lines, one line
        lines = [line for line in err.strip().splitlines() if " blocks " not in line]
        assert status == 2 and "Traceback" not in err and len(lines) == 1, err
        assert all(f in lines[0] for f in fragments), err
    else:
        assert_user_error_status(status, _Replay(err), *fragments)
    assert not (folder / "out").exists() or not any((folder / "out").iterdir())
    assert before == {p: digest(folder / p) for p in ("membrane.zarr", "overlap.zarr")}


class _Replay:
    """capsys's interface over output already read."""

    def __init__(self, err):
        self.err = err

    def readouterr(self):
        return self


# ---- the sweep -------------------------------------------------------------------------------


def sweep_inputs(tmp_path, chunks):
    from neuron3d.reconstruct import evaluation_volume

    ids = synthetic_labels((9, 60, 64), seed=9)
    rng = np.random.default_rng(9)
    mask = labels.membrane(ids)
    mem = np.clip(mask * 0.7 + rng.normal(0, 0.3, ids.shape), 0, 1).astype(np.float32)
    over = np.clip(labels.overlap(ids, mask) * 0.7 + rng.normal(0, 0.3, (8, 60, 64)), 0, 1)
    over = over.astype(np.float32)
    evaluation = evaluation_volume(ids)
    m, o = stores(tmp_path, mem, over, chunks)
    t = str(zarrio.write_zarr(tmp_path / "labels.zarr", ids, chunks))
    e = str(zarrio.write_zarr(tmp_path / "evaluation.zarr", evaluation, chunks))
    return (mem, over, ids, evaluation), (m, o, t, e)


@pytest.mark.parametrize("scoring", ["median", "mean"])
def test_sweep_blockwise_equals_in_memory(tmp_path, scoring):
    from neuron3d.sweep import sweep

    arrays, paths = sweep_inputs(tmp_path, (2, 32, 32))
    grid = [0.2, 0.35, 0.5, 0.65, 0.8, 0.5]
    expected = sweep(*arrays, thresholds=grid, scoring=scoring)
    got = blockwise.sweep_stores(blockwise.SerialExecutor(), *paths, thresholds=grid,
                                 chunks=(2, 32, 32), scratch=tmp_path / "sweep.json",
                                 scoring=scoring)
    assert got == expected  # every score, bit for bit, and the choice
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporaries left


def test_sweep_blockwise_3d_fragments_equal_in_memory(tmp_path):
    from neuron3d.metrics import evaluate

    arrays, paths = sweep_inputs(tmp_path, (3, 32, 32))
    mem, over, ids, evaluation = arrays
    grid = [0.2, 0.5, 0.8]
    got = blockwise.sweep_stores(blockwise.SerialExecutor(), *paths, thresholds=grid,
                                 chunks=(3, 32, 32), scratch=tmp_path / "sweep.json",
                                 fragments="3d")
    assert got["fragments"] == "3d" and got["block_slices"] == 3
    volumes = A.agglomerate(mem, over, grid, workers=1,
                            fragment_ids=blockwise.block_fragments(mem, 3))
    for row, volume in zip(got["rows"], volumes):
        assert row["labels"] == evaluate(ids, volume)
    with pytest.raises(ValueError, match="fragments must be one of 2d, 3d, got '4d'"):
        blockwise.sweep_stores(blockwise.SerialExecutor(), *paths, thresholds=grid,
                               chunks=(3, 32, 32), scratch=tmp_path / "sweep.json",
                               fragments="4d")


def test_sweep_cli_zarr_equals_tif(tmp_path):
    import json

    from neuron3d import io
    from neuron3d import sweep as S

    arrays, (m, o, t, e) = sweep_inputs(tmp_path, (4, 60, 64))
    for name, array in zip(("m", "o", "t", "e"), arrays):
        if array.dtype == np.float32:
            array = np.round(array * 255).astype(np.uint8)
            m_or_o = tmp_path / f"{name}8.zarr"
            zarrio.write_zarr(m_or_o, array, (4, 60, 64))
        io.write_tif(tmp_path / f"{name}.tif", array)
    grid = ["--thresholds", "0.3", "0.6"]
    assert S.main(["--input_dir_membrane", str(tmp_path / "m.tif"), "--input_dir_overlap",
                   str(tmp_path / "o.tif"), "--labels", str(tmp_path / "t.tif"), "--evaluation",
                   str(tmp_path / "e.tif"), "--output", str(tmp_path / "a.json"), *grid]) == 0
    assert S.main(["--input_dir_membrane", str(tmp_path / "m8.zarr"), "--input_dir_overlap",
                   str(tmp_path / "o8.zarr"), "--labels", t, "--evaluation", e,
                   "--output", str(tmp_path / "b.json"), *grid]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a.pop("inputs") != b.pop("inputs")
    assert a == b
    # 3-D fragments per block of 3 slices: recorded, and scored as their in-memory equal
    from neuron3d.metrics import evaluate

    assert S.main(["--input_dir_membrane", str(tmp_path / "m8.zarr"), "--input_dir_overlap",
                   str(tmp_path / "o8.zarr"), "--labels", t, "--fragments", "3d",
                   "--chunks", "3", "60", "64", "--output", str(tmp_path / "c.json"),
                   *grid]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["fragments"] == "3d" and c["block_slices"] == 3
    mem8, over8 = (zarrio.read_zarr(tmp_path / f"{n}8.zarr") for n in "mo")
    volumes = A.agglomerate(mem8, over8, [0.3, 0.6], workers=1,
                            fragment_ids=blockwise.block_fragments(mem8, 3))
    for row, volume in zip(c["rows"], volumes):
        expected = evaluate(arrays[2], volume)
        assert row["labels"] == pytest.approx(expected, rel=0, abs=0)


@pytest.mark.parametrize("case, engine, fragments", [
    ("labels", [], ["shapes differ: the labels", "bad.zarr is (9, 60, 60)", "(9, 60, 64)"]),
    ("labels", ["--scheduler", "local:1"], ["shapes differ: the labels", "bad.zarr"]),
    ("float", [], ["label stack must have an integer dtype, got float32", "bad.zarr"]),
    ("float", ["--scheduler", "local:1"], ["integer dtype, got float32", "bad.zarr"]),
])
def test_sweep_cli_bad_input_one_line_exit_2(tmp_path, capsys, case, engine, fragments):
    """Refused before the engine starts (no dask line on stderr), nothing written."""
    from neuron3d import sweep as S

    _, (m, o, t, e) = sweep_inputs(tmp_path, (4, 60, 64))
    extra = list(engine)
    if case == "labels":
        t = str(zarrio.write_zarr(tmp_path / "bad.zarr", np.ones((9, 60, 60), np.uint16)))
    else:
        t = str(zarrio.write_zarr(tmp_path / "bad.zarr", np.ones((9, 60, 64), np.float32)))
    capsys.readouterr()
    status = S.main(["--input_dir_membrane", m, "--input_dir_overlap", o, "--labels", t,
                     "--evaluation", e, "--output", str(tmp_path / "out" / "s.json"), *extra])
    assert_user_error_status(status, capsys, *fragments)
    assert not (tmp_path / "out").exists()


def test_cli_replaces_an_existing_store(zarr_inputs):
    folder, m, o, mem8, over8 = zarr_inputs
    out = folder / "out"
    for threshold in ("0.3", "0.6"):
        assert agglomerate_cli(m, o, out, "--name", "agg.zarr", "--merge_threshold",
                               threshold) == 0
    np.testing.assert_array_equal(zarrio.read_zarr(out / "agg.zarr"),
                                  A.agglomerate(mem8, over8, [0.6], workers=1)[0])
    assert sorted(p.name for p in out.iterdir()) == ["agg.zarr"]  # no temporaries left


@pytest.mark.parametrize("which", ["membrane", "overlap"])
def test_values_outside_0_1_under_local_1_are_one_line(zarr_inputs, which):
    """Found by a worker (pass 1 reads the membrane, pass 3 the overlap): one error line
    beside the engine's and the progress lines, no worker log, no store left."""
    from conftest import run_script

    folder, m, o, mem8, over8 = zarr_inputs
    bad = (mem8 if which == "membrane" else over8) / np.float32(100)
    path = str(zarrio.write_zarr(folder / "bad.zarr", bad, (4, 40, 44)))
    m, o = (path, o) if which == "membrane" else (m, path)
    result = run_script("reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane", m,
                        "--input_dir_overlap", o, "--output_dir", folder / "out", "--name",
                        "agg.zarr", "--scheduler", "local:1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Compute Failed" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("dask: ") and " blocks " not in line]
    assert len(lines) == 1 and lines[0].startswith("reconstruct3D.py: error: "), result.stderr
    assert "bad.zarr" in lines[0] and "values from 0 to 2.55" in lines[0], lines[0]
    assert not (folder / "out").exists()

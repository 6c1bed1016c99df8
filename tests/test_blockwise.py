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
    block along x, and a 3D spiral staircase winding through every block."""
    cyto = np.zeros(shape, bool)
    z, y, x = shape
    cyto[:, 5:y - 5:4, 2:x - 2] = True          # teeth along x
    cyto[:, 5:y - 5, x - 3] = True               # their back, only in the last block
    over = np.zeros((z - 1, y, x), bool)
    over[:, 5:y - 5:4, 10] = True                # teeth connect through z at one column
    return cyto, over


@pytest.mark.parametrize("case", ["random", "comb", "dense", "one_slice", "empty"])
def test_reconstruct_equals_in_memory(client, tmp_path, case):
    shape = SHAPE
    if case == "random":
        cyto, over = random_masks(shape, 0.55, 4), random_masks((shape[0] - 1,) + shape[1:],
                                                                 0.3, 5)
    elif case == "comb":
        cyto, over = spiral_and_comb(shape)
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

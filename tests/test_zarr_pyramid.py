"""The OME-Zarr multiscale pyramid and the image-label metadata of the stores the project writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr")

from neuron3d import blockwise, zarrio  # noqa: E402


def test_levels_halve_the_axes_that_are_not_coarse():
    # unknown voxel size: serial sections, y and x only, until one chunk spans y and x
    assert zarrio.pyramid_levels((5, 300, 260), (2, 64, 64)) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8)]
    assert zarrio.pyramid_levels((5, 64, 64), (2, 64, 64)) == [(1, 1, 1)]
    assert zarrio.pyramid_levels((5, 65, 10), (2, 64, 64)) == [(1, 1, 1), (1, 2, 2)]
    # 30 x 6 x 6 nm: y and x until they are as coarse as z, then all of them... z when finer
    assert zarrio.pyramid_levels((64, 1024, 1024), (16, 64, 64), (30, 6, 6)) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 8, 8), (2, 16, 16)]
    # cubic voxels: every axis; an axis of one voxel is not halved
    assert zarrio.pyramid_levels((1, 256, 256), (1, 64, 64), (10, 10, 10)) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert len(zarrio.pyramid_levels((1, 10**6, 10**6), (1, 1, 1))) == zarrio.MAX_LEVELS + 1


def test_downsample_labels_stride_images_average():
    labels = np.arange(1, 1 + 2 * 3 * 5, dtype=np.uint32).reshape(2, 3, 5)
    np.testing.assert_array_equal(zarrio.downsample(labels, (1, 2, 2), "labels"),
                                  [[[1, 3, 5], [11, 13, 15]], [[16, 18, 20], [26, 28, 30]]])
    image = np.array([[[0, 255, 10], [1, 254, 11]]], np.uint8)  # 1 x 2 x 3, odd x
    # means of (0, 255, 1, 254) = 127.5 -> 128 (rint: half to even), (10, 11) = 10.5 -> 10
    np.testing.assert_array_equal(zarrio.downsample(image, (1, 2, 2), "image"), [[[128, 10]]])
    floats = np.array([[[0.0, 1.0, 0.25]]], np.float32)
    out = zarrio.downsample(floats, (1, 1, 2), "image")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[0.5, 0.25]]])
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[0, 0, 0] = (4, 8, 255)
    np.testing.assert_array_equal(zarrio.downsample(rgb, (1, 2, 2), "image"), [[[[1, 2, 64]]]])


def test_store_levels_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 9, (3, 130, 70)).astype(np.uint32)
    em = rng.integers(0, 256, (3, 130, 70)).astype(np.uint8)
    zarrio.write_zarr(tmp_path / "ids.zarr", ids, (2, 32, 64))
    zarrio.write_zarr(tmp_path / "em.zarr", em, (2, 32, 64), voxel_size=(30, 6, 6))
    import zarr

    labels = zarr.open_group(str(tmp_path / "ids.zarr"), mode="r")
    for k, f in enumerate((1, 2, 4, 8)):
        np.testing.assert_array_equal(labels[str(k)][:], ids[:, ::f, ::f])
    image = zarr.open_group(str(tmp_path / "em.zarr"), mode="r")
    np.testing.assert_array_equal(image["1"][:], zarrio.downsample(em, (1, 2, 2), "image"))
    np.testing.assert_array_equal(image["2"][:],
                                  zarrio.downsample(image["1"][:], (1, 2, 2), "image"))
    ids_meta = json.loads((tmp_path / "ids.zarr" / ".zattrs").read_text())
    em_meta = json.loads((tmp_path / "em.zarr" / ".zattrs").read_text())
    assert ids_meta["image-label"] == {"version": "0.4"} and "image-label" not in em_meta
    assert [d["coordinateTransformations"] for d in ids_meta["multiscales"][0]["datasets"]] == [
        [{"type": "scale", "scale": [1.0, f, f]}] for f in (1.0, 2.0, 4.0, 8.0)]
    em_sets = em_meta["multiscales"][0]["datasets"]
    assert em_sets[2]["coordinateTransformations"] == [
        {"type": "scale", "scale": [30.0, 24.0, 24.0]},
        {"type": "translation", "translation": [0.0, 9.0, 9.0]}]
    np.testing.assert_array_equal(zarrio.read_zarr(tmp_path / "ids.zarr"), ids)  # level 0
    # uint8 labels (a ground truth of few bodies) say so: strided, image-label
    zarrio.write_zarr(tmp_path / "ids8.zarr", ids.astype(np.uint8), (2, 32, 64), kind="labels")
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "ids8.zarr"), mode="r")["1"][:],
                                  ids[:, ::2, ::2])
    assert "image-label" in json.loads((tmp_path / "ids8.zarr" / ".zattrs").read_text())
    with pytest.raises(ValueError, match="kind must be 'image' or 'labels', got 'mask'"):
        zarrio.write_zarr(tmp_path / "x.zarr", ids, kind="mask")
    assert not (tmp_path / "x.zarr").exists()


def test_blockwise_label_store_has_the_in_memory_pyramid(tmp_path):
    from neuron3d import agglomerate as A

    rng = np.random.default_rng(1)
    mem = rng.random((4, 90, 70)).astype(np.float32)
    over = rng.random((3, 90, 70)).astype(np.float32)
    m = zarrio.write_zarr(tmp_path / "m.zarr", mem, (2, 30, 30))
    o = zarrio.write_zarr(tmp_path / "o.zarr", over, (2, 30, 30))
    blockwise.agglomerate_stores(blockwise.SerialExecutor(), m, o, [tmp_path / "b.zarr"], [0.5],
                                 (2, 30, 30), seed_threshold=0.4, min_distance=1)
    labels = A.agglomerate(mem, over, [0.5], seed_threshold=0.4, min_distance=1, workers=1)[0]
    zarrio.write_zarr(tmp_path / "a.zarr", labels, (2, 30, 30))
    files = sorted(p.relative_to(tmp_path / "a.zarr") for p in (tmp_path / "a.zarr").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "b.zarr")
                           for p in (tmp_path / "b.zarr").rglob("*"))
    assert any(str(f).startswith("2/") for f in files)
    for f in files:
        if f.name != ".zattrs" and (tmp_path / "a.zarr" / f).is_file():
            assert (tmp_path / "a.zarr" / f).read_bytes() == \
                (tmp_path / "b.zarr" / f).read_bytes(), f


def test_an_independent_reader_validates_the_metadata(tmp_path):
    """ome-zarr-models validates NGFF 0.4 strictly (pip install ome-zarr-models)."""
    models = pytest.importorskip("ome_zarr_models.v04")
    import zarr

    rng = np.random.default_rng(2)
    zarrio.write_zarr(tmp_path / "ids.zarr", rng.integers(1, 9, (3, 130, 70)).astype(np.uint16),
                      (2, 32, 32))
    zarrio.write_zarr(tmp_path / "em.zarr", rng.integers(0, 256, (3, 130, 70)).astype(np.uint8),
                      (2, 32, 32), voxel_size=(30, 6, 6))
    label = models.ImageLabel.from_zarr(zarr.open_group(str(tmp_path / "ids.zarr"), mode="r"))
    assert len(label.attributes.multiscales[0].datasets) == 4
    models.Image.from_zarr(zarr.open_group(str(tmp_path / "em.zarr"), mode="r"))
    with pytest.raises(Exception, match="image-label"):
        models.ImageLabel.from_zarr(zarr.open_group(str(tmp_path / "em.zarr"), mode="r"))


def test_tif_to_zarr_kind_labels_gives_uint8_ids_a_label_pyramid(tmp_path, capsys):
    import zarr

    import process3D
    from neuron3d.io import write_tif

    rng = np.random.default_rng(1)
    ids = rng.integers(1, 6, (2, 40, 36)).astype(np.uint8)
    write_tif(tmp_path / "ids.tif", ids)
    for kind, name in ((None, "image.zarr"), ("labels", "labels.zarr")):
        args = ["--operation", "tif_to_zarr", "--input_dir", str(tmp_path / "ids.tif"),
                "--output_dir", str(tmp_path / name), "--chunks", "1", "16", "16"]
        assert process3D.main(args + (["--kind", kind] if kind else [])) == 0
    labels = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")
    np.testing.assert_array_equal(labels["1"][:], ids[:, ::2, ::2])  # strided IDs
    assert "image-label" in json.loads((tmp_path / "labels.zarr" / ".zattrs").read_text())
    image = zarr.open_group(str(tmp_path / "image.zarr"), mode="r")  # uint8: an image
    np.testing.assert_array_equal(image["1"][:], zarrio.downsample(ids, (1, 2, 2), "image"))
    assert "image-label" not in json.loads((tmp_path / "image.zarr" / ".zattrs").read_text())
    capsys.readouterr()
    write_tif(tmp_path / "em.tif", rng.random((2, 8, 8)).astype(np.float32))
    for argv, message in (
            (["--operation", "tif_to_zarr", "--input_dir", str(tmp_path / "em.tif"),
              "--output_dir", str(tmp_path / "f.zarr"), "--kind", "labels"],
             "--kind labels needs a (z, y, x) stack of integer IDs, got float32"),
            (["--operation", "membrane", "--input_dir", str(tmp_path / "ids.tif"),
              "--output_dir", str(tmp_path / "m"), "--kind", "labels"],
             "--kind labels is for --operation tif_to_zarr, not membrane")):
        assert process3D.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.zarr").exists() and not (tmp_path / "m").exists()

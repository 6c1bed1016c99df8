"""neuroglancer3D.py: serving over HTTP on 127.0.0.1, screenshots in headless Chromium, bad input."""

import re
import shutil
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tifffile
from conftest import ROOT, assert_user_error, run_script
from test_cli import main_error

import neuroglancer3D
from neuron3d.synthetic import synthetic_volume
from neuron3d.viewer import (
    BROWSERS,
    build_viewer,
    check_segments,
    check_shapes,
    segmentation_dtype,
)

pytest.importorskip("neuroglancer")


@pytest.fixture
def stacks(tmp_path):
    em, ids = synthetic_volume((8, 96, 96), seed=3)
    tifffile.imwrite(tmp_path / "em.tif", em)
    tifffile.imwrite(tmp_path / "label.tif", ids)
    return tmp_path


def test_serves_the_client_offline_on_loopback(stacks):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "neuroglancer3D.py"), "--em", str(stacks / "em.tif"),
         "--label", str(stacks / "label.tif"), "--predicted", str(stacks / "label.tif")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.match(r"^http://127\.0\.0\.1:\d+/v/", url), url
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            page = response.read().decode()
        scripts = re.findall(r'src="([^"]+\.js)"', page)
        assert scripts, page[:500]
        total = 0
        for script in scripts:  # the client's JavaScript, served by the local server
            with urllib.request.urlopen(urllib.request.urljoin(url, script), timeout=30) as js:
                assert js.status == 200
                total += len(js.read())
        assert total > 500_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_inputs(stacks, tmp_path):
    r = run_script("neuroglancer3D.py")
    assert_user_error(r, "no layer given")
    r = run_script("neuroglancer3D.py", "--em", tmp_path / "missing.tif")
    assert_user_error(r, "missing.tif", "does not exist")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((8, 96, 80), np.uint32))
    r = run_script("neuroglancer3D.py", "--em", stacks / "em.tif", "--predicted", tmp_path / "small.tif")
    assert_user_error(r, "shapes differ", "em (8, 96, 96)", "predicted (8, 96, 80)")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 96, 96), np.float32))
    r = run_script("neuroglancer3D.py", "--label", tmp_path / "float.tif")
    assert_user_error(r, "float.tif", "float32")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_script("neuroglancer3D.py", "--em", stacks / "em.tif", "--port", port)
        assert_user_error(r, f"127.0.0.1:{port}", "in use")


def test_screenshot_without_a_browser_says_what_to_install(stacks, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    r = subprocess.run([str(bare / "python"), str(ROOT / "neuroglancer3D.py"), "--em", str(stacks / "em.tif"),
                        "--screenshot", str(tmp_path / "x.png")],
                       capture_output=True, text=True, env={"PATH": str(bare)}, timeout=300)
    assert_user_error(r, "apt-get install -y chromium chromium-driver")
    assert not (tmp_path / "x.png").exists()


def test_segmentation_dtype():
    assert segmentation_dtype(np.array([[[1, 2]]], np.uint8)).dtype == np.uint32
    assert segmentation_dtype(np.array([[[2**40]]], np.uint64)).dtype == np.uint64
    with pytest.raises(ValueError, match="integer dtype, got float64 from x"):
        segmentation_dtype(np.zeros((1, 1, 1)), "x")


def _have_browser():
    return shutil.which("chromedriver") and any(shutil.which(b) for b in BROWSERS)


@pytest.mark.browser
@pytest.mark.skipif(not _have_browser(), reason="no chromium + chromedriver (apt-get install -y chromium chromium-driver)")
def test_screenshot_shows_em_and_coloured_segments(stacks, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    r = run_script("neuroglancer3D.py", "--em", stacks / "em.tif", "--label", stacks / "label.tif",
                   "--screenshot", shot, "--size", "640", "320")
    assert r.returncode == 0, r.stderr
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (320, 640, 3)
    left, right = image[:, :320], image[:, 320:]
    # Cross-section: EM under translucent segment colours -> many distinct saturated colours.
    saturation = image.max(axis=2) - image.min(axis=2)
    assert (saturation[:, :320] > 60).mean() > 0.3
    hues = {tuple(p // 32) for p in left[saturation[:, :320] > 60]}
    assert len(hues) > 10
    # 3D panel: coloured meshes on black.
    assert (right.max(axis=2) > 40).mean() > 0.1 and (saturation[:, 320:] > 60).mean() > 0.05


@pytest.mark.parametrize("spelling", ["dashes", "underscores"])
def test_both_flag_spellings(spelling):
    argv = ["--bind_address", "::1", "--max_segments", "7", "--voxel_size", "4", "4", "40",
            "--static_content_url", "http://x"]
    if spelling == "dashes":
        argv = [a.replace("_", "-") if a.startswith("--") else a for a in argv]
    args = neuroglancer3D.build_parser().parse_args(argv)
    assert (args.bind_address, args.max_segments, args.voxel_size, args.static_content_url) == \
        ("::1", 7, [4.0, 4.0, 40.0], "http://x")
    text = neuroglancer3D.build_parser().format_help()
    assert "--bind_address" in text and "--max_segments" in text and "--voxel_size" in text
    assert "--bind-address" in text  # the docstring says the dashed spelling works too


@pytest.mark.parametrize("argv,fragments", [
    (["--segments", "5", "-1"], ("--segments", "-1", "uint64")),
    (["--segments", str(2**64)], ("--segments", str(2**64))),
    (["--max_segments", "0"], ("--max_segments", "0", ">= 1")),
    (["--max-segments", "-3"], ("--max_segments", "-3")),
    (["--voxel-size", "0", "6", "30"], ("--voxel_size", "0 6 30")),
    (["--port", "70000"], ("--port", "70000")),
    (["--screenshot", "x.jpg"], ("--screenshot", "x.jpg", ".png")),
    (["--screenshot", "x.png", "--size", "0", "10"], ("--size", "0 10")),
])
def test_bad_options_are_one_line_before_reading(tmp_path, capsys, argv, fragments):
    # The EM path does not exist: options are checked before any file is read.
    main_error(neuroglancer3D.main, ["--em", tmp_path / "missing.tif", *argv], capsys, *fragments)


def test_negative_segment_id_subprocess_has_no_traceback(stacks):
    r = run_script("neuroglancer3D.py", "--label", stacks / "label.tif", "--segments", "-1")
    assert_user_error(r, "--segments", "-1")


def test_library_checks_name_the_sources():
    assert check_segments([0, 2**64 - 1]) == [0, 2**64 - 1]
    with pytest.raises(ValueError, match=r"segments: segment ID -1 is not a whole number"):
        check_segments([-1])
    with pytest.raises(ValueError, match=r"label is empty, shape \(0, 4, 4\) from l\.tif"):
        check_shapes({"label": np.zeros((0, 4, 4))}, {"label": "l.tif"})
    with pytest.raises(ValueError, match=r"input shapes differ: em \(1, 2, 2\) from e\.tif, "
                                         r"label \(1, 2, 3\) from l\.tif"):
        check_shapes({"em": np.zeros((1, 2, 2)), "label": np.zeros((1, 2, 3))},
                     {"em": "e.tif", "label": "l.tif"})
    with pytest.raises(ValueError, match=r"segments: segment ID 1\.5"):
        build_viewer(label=np.ones((1, 2, 2), np.uint8), segments=[1.5])
    with pytest.raises(ValueError, match="no layer given"):
        build_viewer()


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_zero_size_volume_is_one_line(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((0, 4, 4), np.uint32), photometric="minisblack")
    main_error(neuroglancer3D.main, ["--label", tmp_path / "z.tif"], capsys,
               "label", "z.tif", "empty", "(0, 4, 4)")


class Recorder:
    """A zarr array that records every region read from it."""

    def __init__(self, array):
        self.array, self.reads = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.size = array.size

    def __getitem__(self, item):
        part = self.array[item]
        self.reads.append(part.size)
        return part


def test_zarr_volumes_are_served_chunk_by_chunk(tmp_path):
    pytest.importorskip("zarr")
    from neuron3d import zarrio

    em, ids = synthetic_volume((8, 96, 96), seed=3)
    zarrio.write_zarr(tmp_path / "em.zarr", em, (4, 32, 32))
    zarrio.write_zarr(tmp_path / "ids.zarr", ids, (4, 32, 32))
    em_z = Recorder(zarrio.open_array(tmp_path / "em.zarr"))
    ids_z = Recorder(zarrio.open_array(tmp_path / "ids.zarr"))
    viewer = build_viewer(em_z, ids_z)
    with viewer.txn() as s:
        assert list(s.layers["label"].segments) == []  # no whole-volume scan for the largest
    assert em_z.reads == [] and ids_z.reads == []  # nothing read before the browser asks
    served = {id(v.data._data): v for v in viewer.volume_manager.volumes.values()}
    em_volume = served[id(em_z)]
    data, _ = em_volume.get_encoded_subvolume("npz", np.zeros(3, int), np.array([2, 16, 16]), "1,1,1")
    assert em_z.reads and max(em_z.reads) <= 2 * 16 * 16
    assert len(data) > 0 and em_z.size == 8 * 96 * 96
    label_volume = next(v for v in served.values() if v is not em_volume)
    label_volume.get_encoded_subvolume("npz", np.zeros(3, int), np.array([2, 16, 16]), "1,1,1")
    assert ids_z.reads and max(ids_z.reads) <= 2 * 16 * 16


@pytest.mark.browser
@pytest.mark.skipif(not _have_browser(), reason="no chromium + chromedriver (apt-get install -y chromium chromium-driver)")
def test_screenshot_of_zarr_stores(tmp_path):
    pytest.importorskip("zarr")
    from PIL import Image

    from neuron3d import zarrio

    em, ids = synthetic_volume((8, 96, 96), seed=3)
    zarrio.write_zarr(tmp_path / "em.zarr", em, (4, 32, 32))
    zarrio.write_zarr(tmp_path / "ids.zarr", ids, (4, 32, 32))
    shot = tmp_path / "shot.png"
    r = run_script("neuroglancer3D.py", "--em", tmp_path / "em.zarr", "--predicted",
                   tmp_path / "ids.zarr", "--screenshot", shot, "--size", "640", "320")
    assert r.returncode == 0, r.stderr
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    saturation = image.max(axis=2) - image.min(axis=2)
    # the cross-section shows the EM under many coloured segments, read from the stores
    assert (saturation[:, :320] > 60).mean() > 0.3
    assert len({tuple(p // 32) for p in image[:, :320][saturation[:, :320] > 60]}) > 10


def _layer_url(viewer, name):
    with viewer.txn() as s:
        url = s.layers[name].source[0].url
        return url if isinstance(url, str) and url.startswith("zarr://") else None


def test_zarr_stores_are_served_as_stored_with_their_pyramid(tmp_path):
    """A zarr store is a zarr:// source the client reads from the store's folder itself,
    pyramid levels included; chosen segments and a dtype the client cannot decode go
    through LocalVolume (level 0)."""
    pytest.importorskip("zarr")
    import json

    from neuron3d import zarrio

    em, ids = synthetic_volume((8, 96, 96), seed=3)
    zarrio.write_zarr(tmp_path / "em.zarr", em, (4, 32, 32))
    zarrio.write_zarr(tmp_path / "ids.zarr", ids, (4, 32, 32))
    zarrio.write_zarr(tmp_path / "f64.zarr", em.astype(np.float64), (4, 32, 32))
    em_z, ids_z = zarrio.open_array(tmp_path / "em.zarr"), zarrio.open_array(tmp_path / "ids.zarr")
    viewer = build_viewer(em_z, ids_z, voxel_size=(4, 4, 40))  # x y z
    em_url, ids_url = _layer_url(viewer, "em"), _layer_url(viewer, "label")
    assert re.match(r"^zarr://http://127\.0\.0\.1:\d+/neuron3d/zarr/\w+/$", em_url), em_url
    assert ids_url.startswith("zarr://http://127.0.0.1:") and ids_url != em_url
    assert not viewer.volume_manager.volumes  # no LocalVolume: the client reads the stores
    base = ids_url[len("zarr://"):]
    with urllib.request.urlopen(base + ".zattrs", timeout=30) as r:
        meta = json.loads(r.read())
    # the metadata served at the viewer's voxel size (the store has none), levels and all
    datasets = meta["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == \
        [[40.0, 4.0, 4.0], [40.0, 8.0, 8.0], [40.0, 16.0, 16.0]]
    assert [a["unit"] for a in meta["multiscales"][0]["axes"]] == ["nanometer"] * 3
    assert "image-label" in meta
    levels = [d["path"] for d in datasets]
    with urllib.request.urlopen(base + "0/.zarray", timeout=30) as r:
        assert json.loads(r.read())["shape"] == [8, 96, 96]  # chunks and arrays as stored
    with urllib.request.urlopen(base + f"{levels[-1]}/.zarray", timeout=30) as r:
        coarse = json.loads(r.read())
    assert coarse["shape"][1] < 96  # a coarse level, served as it is stored
    # chosen segments are meshed by the Python server; float64 is not a client dtype
    viewer = build_viewer(zarrio.open_array(tmp_path / "f64.zarr"), ids_z, segments=[1])
    assert _layer_url(viewer, "em") is None and _layer_url(viewer, "label") is None
    assert len(viewer.volume_manager.volumes) == 2


@pytest.mark.browser
@pytest.mark.skipif(not _have_browser(), reason="no chromium + chromedriver (apt-get install -y chromium chromium-driver)")
def test_zoomed_out_zarr_view_reads_coarse_levels_and_lines_up(tmp_path):
    """Zoomed out, the client fetches the store's coarse pyramid levels (the file server's
    log says which), and a zarr layer with its own voxel size draws where the same labels
    from a TIFF draw."""
    pytest.importorskip("zarr")
    from PIL import Image

    from neuron3d import viewer as ng
    from neuron3d import zarrio

    em, ids = synthetic_volume((8, 384, 384), seed=3)
    zarrio.write_zarr(tmp_path / "ids.zarr", ids, (4, 64, 64), voxel_size=(7, 3, 3))
    from neuroglancer.static_file_server import CorsStaticFileHandler

    requested = []
    serve = CorsStaticFileHandler.get

    def logged(handler, path, *args, **kwargs):
        requested.append(handler.request.path)
        return serve(handler, path, *args, **kwargs)

    shots = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CorsStaticFileHandler, "get", logged)
        ng.start_server()
        for kind, ids_source in (("zarr", zarrio.open_array(tmp_path / "ids.zarr")),
                                 ("tiff", ids)):
            view = ng.build_viewer(em, ids_source)
            with view.txn() as s:
                s.layout = "xy"
                s.cross_section_scale = 2.0  # 2 voxels a screen pixel: zoomed out
            shots[kind] = tmp_path / f"{kind}.png"
            ng.screenshot(view, shots[kind], (320, 240))
    chunk_reads = [p for p in requested if re.search(r"/zarr/\w+/\d+/\d+[./]\d+[./]\d+$", p)]
    levels = {int(re.search(r"/zarr/\w+/(\d+)/", p).group(1)) for p in chunk_reads}
    assert levels and min(levels) >= 1, requested  # coarse levels only, never level 0
    a, b = (np.asarray(Image.open(shots[k]).convert("RGB")).astype(int) for k in ("zarr", "tiff"))
    saturated = (a.max(axis=2) - a.min(axis=2)) > 60
    assert saturated.mean() > 0.3  # segments drawn (the volume covers half the view)
    # the same segment colours in the same places (the coarse level strides the labels)
    assert (np.abs(a - b).max(axis=2) > 60).mean() < 0.2


def test_multiscales_at_restates_every_level_for_the_viewer_voxel():
    from neuron3d.viewer import multiscales_at

    meta = {"multiscales": [{"version": "0.4", "axes": [
        {"name": "z", "type": "space"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [7, 3, 3]}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": [7, 6, 6]},
                {"type": "translation", "translation": [0, 1.5, 1.5]}]}]}]}
    out = multiscales_at(meta, (30.0, 6.0, 4.0))
    datasets = out["multiscales"][0]["datasets"]
    assert datasets[0]["coordinateTransformations"] == [{"type": "scale",
                                                         "scale": [30.0, 6.0, 4.0]}]
    assert datasets[1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [30.0, 12.0, 8.0]},
        {"type": "translation", "translation": [0.0, 3.0, 2.0]}]  # half a level-0 voxel
    assert [a["unit"] for a in out["multiscales"][0]["axes"]] == ["nanometer"] * 3
    assert multiscales_at({"multiscales": [{"axes": ["c", "y", "x"], "datasets": []}]},
                          (1, 1, 1)) is None
    assert multiscales_at({"no": "multiscales"}, (1, 1, 1)) is None

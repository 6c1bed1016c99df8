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

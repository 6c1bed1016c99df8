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

from neuron3d.synthetic import synthetic_volume
from neuron3d.viewer import BROWSERS, segmentation_dtype

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

"""Shared test helpers: the real data beside the checkout, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# Scripts run in subprocesses import this checkout's packages, whatever checkout an editable
# install points to (a clean clone for CI, another working copy).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def shared_file(*parts):
    """Path of a file in ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def snemi_labels():
    return tifffile.imread(shared_file("snemi-mini", "train-labels.tif"))


@pytest.fixture
def gala_labels():
    return tifffile.imread(shared_file("gala-fibsem", "train-labels.tif"))


def run_script(script, *args, cwd=None):
    """Run a top-level script in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )


def assert_user_error(result, *fragments):
    """Exit status 2, exactly one stderr line naming every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_user_error_status(status, capsys, *fragments):
    """In-process form of :func:`assert_user_error`: a CLI's ``main`` returned 2 and wrote one
    stderr line naming every fragment, no traceback.  Returns that line."""
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def random_labels(rng, shape, count):
    """Blocky random labels (piecewise constant patches) for cross-checks."""
    small = rng.integers(0, count, size=(shape[0], -(-shape[1] // 3), -(-shape[2] // 3)))
    big = np.repeat(np.repeat(small, 3, axis=1), 3, axis=2)
    return big[:, : shape[1], : shape[2]].astype(np.uint32)


def combined_images(folder, shape, seed):
    """EM | membrane pairs of a small synthetic volume, made by the combine CLI; returns the folder."""
    from imagetranslation.tools import process as combine_cli
    from neuron3d import io
    from neuron3d.labels import membrane
    from neuron3d.synthetic import synthetic_volume

    em, ids = synthetic_volume(shape, seed=seed)
    io.write_slices(folder / "em", em)
    io.write_slices(folder / "mem", membrane(ids))
    assert combine_cli.main(["--operation", "combine", "--input_dir", str(folder / "em"),
                             "--b_dir", str(folder / "mem"),
                             "--output_dir", str(folder / "combined")]) == 0
    return folder / "combined"


def training_and_held_out(folder):
    """Two sets of EM | membrane pairs: 3 training images of 16 x 16, 2 held-out of 16 x 24."""
    return combined_images(folder / "train", (3, 16, 16), seed=1), \
        combined_images(folder / "held_out", (2, 16, 24), seed=2)


#: A tiny ResNet with the L2 loss and no GAN, without logging or periodic checkpoints.
TINY_SQUARE = ["--ngf", "4", "--n_res_blocks", "1", "--crop_size", "16", "--scale_size", "16",
               "--gan_weight", "0", "--progress_freq", "0", "--save_freq", "0", "--lr", "0.01",
               "--Y_loss", "square"]


def train_tiny(train, out, *extra, seed):
    """``translate.py --mode train`` in process with :data:`TINY_SQUARE`; returns its status."""
    from imagetranslation import translate

    return translate.main(["--mode", "train", "--input_dir", str(train), "--output_dir",
                           str(out), *TINY_SQUARE, "--seed", str(seed), *extra])

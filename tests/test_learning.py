"""The trainer learns: EM -> membrane on synthetic data, scored on held-out slices.

Trains a small ResNet (ngf 16, 4 blocks, 128 crops, 1200 steps; about 3 minutes on
2 CPU cores) on quadrant a of a synthetic volume and predicts quadrant b.  The
membrane F1 of the thresholded output must reach 0.75 (measured: 0.78).
"""

import numpy as np
import pytest

import process3D
from imagetranslation import translate
from imagetranslation.tools import process as combine_cli
from neuron3d import io

pytest.importorskip("tensorflow")


def membrane_f1(predicted, target):
    p, t = predicted >= 127, target >= 127
    return 2 * np.sum(p & t) / (p.sum() + t.sum())


@pytest.mark.slow
def test_em_to_membrane_learns(tmp_path):
    d = tmp_path / "d"
    assert process3D.main(["--operation", "synthetic", "--output_dir", str(d),
                           "--shape", "24", "256", "256", "--seed", "1"]) == 0
    for kind, name in (("em", "train-input.tif"), ("label", "train-labels.tif")):
        assert process3D.main(["--operation", "split", "--input_dir", str(d / name),
                               "--output_dir", str(d), "--split", kind]) == 0
    for q in "ab":
        assert process3D.main(["--operation", "tif_to_png", "--input_dir", str(d / f"em_{q}.tif"),
                               "--output_dir", str(d / f"em_{q}")]) == 0
        assert process3D.main(["--operation", "membrane", "--input_dir", str(d / f"label_{q}.tif"),
                               "--output_dir", str(d / f"membrane_{q}")]) == 0
        assert combine_cli.main(["--operation", "combine", "--input_dir", str(d / f"em_{q}"),
                                 "--b_dir", str(d / f"membrane_{q}"),
                                 "--output_dir", str(d / f"combined_{q}")]) == 0
    assert translate.main(["--mode", "train", "--input_dir", str(d / "combined_a"),
                           "--output_dir", str(tmp_path / "T"), "--Y_loss", "square",
                           "--gan_weight", "0", "--ngf", "16", "--n_res_blocks", "4",
                           "--crop_size", "128", "--scale_size", "128", "--lr", "0.001",
                           "--max_steps", "1200", "--progress_freq", "200"]) == 0
    assert translate.main(["--mode", "test", "--checkpoint", str(tmp_path / "T"),
                           "--input_dir", str(d / "combined_b"), "--output_dir",
                           str(tmp_path / "P")]) == 0
    assert process3D.main(["--operation", "png_to_tif", "--input_dir", str(tmp_path / "P" / "images"),
                           "--output_dir", str(tmp_path), "--name", "predicted"]) == 0
    predicted = io.read_stack(tmp_path / "predicted.tif")
    target = io.read_stack(d / "membrane_b")
    assert predicted.shape == target.shape == (24, 128, 128)
    f1 = membrane_f1(predicted, target)
    print(f"membrane F1 on held-out quadrant b: {f1:.3f}")
    assert f1 >= 0.75

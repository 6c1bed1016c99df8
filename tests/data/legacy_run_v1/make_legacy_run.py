"""Wrote tests/data/legacy_run_v1 (see its README); kept as the record of how.

Run with the old checkout on PYTHONPATH; its tests/ folder gives conftest.combined_images.
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "/tmp/baseline/tests")
from conftest import combined_images  # noqa: E402

from imagetranslation import translate  # noqa: E402

root = Path("/tmp/legacy/work")
shutil.rmtree(root, ignore_errors=True)
root.mkdir()
train = combined_images(root / "train", (3, 32, 32), seed=3)
test = combined_images(root / "test", (2, 32, 40), seed=4)
common = ["--ngf", "4", "--n_res_blocks", "1", "--ndf", "4", "--crop_size", "32", "--scale_size", "32",
          "--gan_weight", "1", "--progress_freq", "0", "--save_freq", "0", "--summary_freq", "0",
          "--lr", "0.01", "--Y_loss", "square", "--ema", "0.9", "--seed", "7", "--threads", "1"]
assert translate.main(["--mode", "train", "--input_dir", str(train), "--output_dir", str(root / "run"),
                       "--max_steps", "4", *common]) == 0
shutil.copytree(root / "run", root / "run_copy")
assert translate.main(["--mode", "test", "--checkpoint", str(root / "run"), "--input_dir", str(test),
                       "--output_dir", str(root / "pred")]) == 0
# resumed to step 6 by the baseline code, and its test output
assert translate.main(["--mode", "train", "--input_dir", str(train), "--output_dir", str(root / "run_copy"),
                       "--checkpoint", str(root / "run_copy"), "--max_steps", "6", *common]) == 0
assert translate.main(["--mode", "test", "--checkpoint", str(root / "run_copy"), "--input_dir", str(test),
                       "--output_dir", str(root / "pred_resumed")]) == 0

"""The one rule that keeps outputs from destroying inputs (neuron3d.io.check_outputs_apart)."""

import os

import pytest

from neuron3d.io import check_outputs_apart


def test_distinct_paths_and_siblings_pass(tmp_path):
    (tmp_path / "train-input.tif").write_bytes(b"x")
    # split writes quadrant files beside its input: allowed
    check_outputs_apart({"--input_dir": tmp_path / "train-input.tif"},
                        {"output": tmp_path / "em_a.tif", "other": None})
    check_outputs_apart({"--input_dir": tmp_path / "a"}, {"--output_dir": tmp_path / "ab"})


@pytest.mark.parametrize("output, how", [
    ("X.zarr", "is"),
    ("X.zarr/", "is"),
    ("sub/../X.zarr", "is"),
    ("X.zarr/mem.zarr", "lies inside"),
    ("X.zarr/0/c", "lies inside"),
    (".", "contains"),
])
def test_collisions_are_refused_naming_both(tmp_path, output, how):
    (tmp_path / "X.zarr").mkdir()
    (tmp_path / "sub").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ValueError, match=rf"^--output_dir {output} {how} --input_dir X.zarr"):
            check_outputs_apart([("--input_dir", "X.zarr")], [("--output_dir", output)])
    finally:
        os.chdir(cwd)


def test_symlinks_and_hard_links_are_followed(tmp_path):
    real = tmp_path / "P.tif"
    real.write_bytes(b"x")
    (tmp_path / "link.tif").symlink_to(real)
    os.link(real, tmp_path / "hard.tif")
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    for out in ("link.tif", "hard.tif", "dirlink/P.tif"):
        with pytest.raises(ValueError, match="is --input_dir"):
            check_outputs_apart({"--input_dir": real}, {"--output_dir": tmp_path / out})

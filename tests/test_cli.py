"""neuron3d.cli: either flag spelling, output names and folders checked before any work."""

import re

import pytest
from conftest import assert_user_error_status

from neuron3d.cli import ArgumentParser, check_name, check_output_dir


def main_error(main, argv, capsys, *fragments):
    """Run a CLI's ``main(argv)`` in-process: exit 2, one stderr line with every fragment."""
    return assert_user_error_status(main([str(a) for a in argv]), capsys, *fragments)


def _parser():
    p = ArgumentParser(prog="t", either_spelling=True)
    p.add_argument("--bind_address", default="x")
    p.add_argument("--max_segments", type=int, default=1)
    p.add_argument("--voxel_size", type=float, nargs=3)
    return p


@pytest.mark.parametrize("argv", [
    ["--bind_address", "h", "--max_segments", "5"],
    ["--bind-address", "h", "--max-segments", "5"],
    ["--bind-address=h", "--max_segments=5"],
    ["--bind-addr", "h", "--max-seg", "5"],          # abbreviations, either spelling
])
def test_either_spelling(argv):
    args = _parser().parse_args(argv)
    assert (args.bind_address, args.max_segments) == ("h", 5)


def test_either_spelling_is_opt_in_and_help_shows_one(capsys):
    plain = ArgumentParser(prog="t")
    plain.add_argument("--max_segments", type=int)
    with pytest.raises(SystemExit):
        plain.parse_args(["--max-segments", "3"])
    capsys.readouterr()
    text = _parser().format_help()
    assert "--bind_address" in text and "--bind-address" not in text
    assert "--some_flag or --some-flag" in text
    # Words after "--" are positional values, never respelled.
    p = _parser()
    p.add_argument("rest", nargs="*")
    args = p.parse_args(["--bind-address", "h", "--", "--bind-address"])
    assert (args.bind_address, args.rest) == ("h", ["--bind-address"])


@pytest.mark.parametrize("name,fragment", [
    ("", "must be a file name, got ''"),
    ("   ", "must be a file name"),
    (".hidden", "must not start with '.'"),
    ("a/b", "without a folder, got 'a/b'"),
    ("..", "must not start with '.'"),
])
def test_check_name(name, fragment):
    with pytest.raises(ValueError, match="--name .*" + re.escape(fragment)):
        check_name(name)
    assert check_name("experiment_8") == "experiment_8"


def test_check_output_dir_creates_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir is an existing file, expected a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"--out lies under an existing file .*f"):
        check_output_dir(tmp_path / "f" / "sub", "--out")

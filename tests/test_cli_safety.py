"""Issue 21 through the CLIs: no output may destroy an input, contradictory flags refused.

Every refusal is exit status 2 with one stderr line naming the flag or file, nothing created
or changed (the whole tree's names and bytes are the same afterwards).
"""

import hashlib
import json

import numpy as np
import pytest
import tifffile
from conftest import assert_user_error_status

import evaluate3D
import neuroglancer3D
import process3D
import reconstruct3D
from neuron3d import io, zarrio
from neuron3d.agglomerate import agglomerate
from neuron3d.labels import membrane, overlap

LABELS = np.array([[[1, 1, 2, 2]] * 4, [[1, 1, 2, 2]] * 4, [[1, 3, 3, 2]] * 4],
                  dtype=np.uint16)


def tree(root):
    """Every path under ``root`` with the SHA-256 of each file's bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A working folder with a label TIFF, a label store, slice folders and a sweep file."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "d"
    io.write_tif(d / "label_q.tif", LABELS)
    io.write_tif(d / "em_b.tif", np.zeros((2, 4, 4), np.uint8))
    zarrio.write_zarr(tmp_path / "X.zarr", LABELS)
    io.write_slices(tmp_path / "em", (LABELS * 60).astype(np.uint8))
    io.write_slices(tmp_path / "cyto", np.full((3, 4, 4), 255, np.uint8))
    io.write_slices(tmp_path / "over", np.full((2, 4, 4), 255, np.uint8))
    (tmp_path / "sweep.json").write_text(json.dumps({"chosen": 0.35}))
    return tmp_path


def refused(main, argv, capsys, root, *fragments):
    before = tree(root)
    line = assert_user_error_status(main([str(a) for a in argv]), capsys, *fragments)
    assert tree(root) == before
    return line


@pytest.mark.parametrize("argv, fragments", [
    (["--operation", "membrane", "--input_dir", "X.zarr", "--output_dir", "X.zarr"],
     ["--output_dir X.zarr is --input_dir X.zarr"]),
    (["--operation", "membrane", "--input_dir", "X.zarr", "--output_dir", "X.zarr",
      "--scheduler", "local:1"], ["--output_dir X.zarr is --input_dir X.zarr"]),
    (["--operation", "membrane", "--input_dir", "X.zarr", "--output_dir", "X.zarr/mem.zarr"],
     ["--output_dir X.zarr/mem.zarr lies inside --input_dir X.zarr"]),
    (["--operation", "cytoplasm", "--input_dir", "X.zarr", "--output_dir", "X.zarr/0/c"],
     ["lies inside --input_dir X.zarr"]),
    (["--operation", "overlap", "--input_dir", "d/label_q.tif", "--output_dir", "d"],
     ["--output_dir d contains --input_dir d/label_q.tif"]),
    (["--operation", "eroskele", "--input_dir", "em", "--output_dir", "em"],
     ["--output_dir em is --input_dir em"]),
    (["--operation", "eroskele", "--input_dir", "em", "--output_dir", "./em/../em"],
     ["is --input_dir em"]),
    (["--operation", "consecutive", "--input_dir", "em", "--output_dir", "em"],
     ["--output_dir em is --input_dir em"]),
    (["--operation", "evaluation", "--input_dir", "d/label_q.tif", "--output_dir", "d",
      "--name", "label_q"], ["--output_dir/--name d/label_q.tif is --input_dir d/label_q.tif"]),
    (["--operation", "tif_to_png", "--input_dir", "d/label_q.tif", "--output_dir", "d"],
     ["contains --input_dir d/label_q.tif"]),
    (["--operation", "png_to_tif", "--input_dir", "em", "--output_dir", "em", "--name", "03"],
     ["--output_dir/--name em/03.tif lies inside --input_dir em"]),
    (["--operation", "tif_to_zarr", "--input_dir", "em", "--output_dir", "em/x.zarr"],
     ["lies inside --input_dir em"]),
    (["--operation", "zarr_to_tif", "--input_dir", "X.zarr", "--output_dir", "X.zarr/x.tif"],
     ["--output_dir X.zarr/x.tif lies inside --input_dir X.zarr"]),
    (["--operation", "split", "--input_dir", "d/em_b.tif", "--output_dir", "d",
      "--split", "em"], ["--output_dir (quadrant b) d/em_b.tif is --input_dir d/em_b.tif"]),
])
def test_process3D_refuses_outputs_on_inputs(data, capsys, argv, fragments):
    refused(process3D.main, argv, capsys, data, *fragments)


def test_split_beside_its_input_still_works(data, capsys):
    # GUIDE §2: split writes datasets/em_a.tif beside datasets/train-input.tif
    big = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6)
    io.write_tif(data / "d" / "train-input.tif", big)
    assert process3D.main(["--operation", "split", "--input_dir", "d/train-input.tif",
                           "--output_dir", "d/", "--split", "em"]) == 0
    np.testing.assert_array_equal(tifffile.imread(data / "d" / "em_a.tif"), big[:, 2:, 3:])


@pytest.mark.parametrize("argv, fragments", [
    (["--input_dir_cytoplasm", "X.zarr", "--input_dir_overlap", "over", "--output_dir", ".",
      "--name", "X.zarr"], ["--output_dir/--name X.zarr is --input_dir_cytoplasm X.zarr"]),
    (["--input_dir_cytoplasm", "cyto", "--input_dir_overlap", "over", "--output_dir", "cyto",
      "--name", "00"], ["--output_dir/--name cyto/00.tif lies inside --input_dir_cytoplasm cyto"]),
    (["--input_dir_cytoplasm", "cyto", "--input_dir_overlap", "over", "--output_dir",
      "cyto/../over", "--name", "r.zarr"],
     ["--output_dir/--name cyto/../over/r.zarr lies inside --input_dir_overlap over"]),
    (["--method", "agglomerate", "--input_dir_membrane", "em", "--input_dir_overlap", "over",
      "--output_dir", "em", "--name", "r"], ["em/r.tif lies inside --input_dir_membrane em"]),
    (["--method", "agglomerate", "--input_dir_membrane", "em", "--input_dir_overlap", "over",
      "--merge_threshold", "0.2", "0.4", "--output_dir", "over", "--name", "r"],
     ["(threshold 0.2) over/r_0.2.tif lies inside --input_dir_overlap over"]),
])
def test_reconstruct3D_refuses_outputs_on_inputs(data, capsys, argv, fragments):
    refused(reconstruct3D.main, argv, capsys, data, *fragments)


def test_evaluate3D_refuses_output_on_input(data, capsys):
    refused(evaluate3D.main, ["--predicted", "em", "--true", "d/label_q.tif", "--output",
                              "em/scores.json"], capsys, data,
            "--output em/scores.json lies inside --predicted em")


def test_neuroglancer3D_refuses_screenshot_on_input(data, capsys):
    refused(neuroglancer3D.main, ["--em", "em", "--screenshot", "em/00.png"], capsys, data,
            "--screenshot em/00.png lies inside --em em")


# ---- --chunks and --voxel_size (issue 21 items 16, 17) ------------------------------------

@pytest.mark.parametrize("argv", [
    ["--operation", "membrane", "--input_dir", "d/label_q.tif", "--output_dir", "m"],
    ["--operation", "evaluation", "--input_dir", "d/label_q.tif", "--output_dir", "e"],
    ["--operation", "zarr_to_tif", "--input_dir", "X.zarr", "--output_dir", "x.tif"],
    ["--operation", "tif_to_png", "--input_dir", "d/label_q.tif", "--output_dir", "p"],
    ["--operation", "synthetic", "--output_dir", "s", "--shape", "2", "8", "8"],
])
def test_chunks_without_a_zarr_output_is_refused(data, capsys, argv):
    refused(process3D.main, argv + ["--chunks", "1", "2", "2"], capsys, data,
            "--chunks applies to .zarr outputs")


def test_chunks_with_a_zarr_output_still_works(data):
    assert process3D.main(["--operation", "membrane", "--input_dir", "d/label_q.tif",
                           "--output_dir", "m.zarr", "--chunks", "1", "2", "2"]) == 0
    assert zarrio.open_array(data / "m.zarr").chunks == (1, 2, 2)
    np.testing.assert_array_equal(zarrio.read_zarr(data / "m.zarr") == 255, membrane(LABELS))


def test_reconstruct3D_and_evaluate3D_chunks_without_zarr(data, capsys):
    refused(reconstruct3D.main, ["--input_dir_cytoplasm", "cyto", "--input_dir_overlap", "over",
                                 "--output_dir", "out", "--name", "r", "--chunks", "1", "2", "2"],
            capsys, data, "--chunks applies to .zarr outputs", "out/r.tif")
    refused(evaluate3D.main, ["--predicted", "d/label_q.tif", "--true", "d/label_q.tif",
                              "--chunks", "1", "2", "2"], capsys, data,
            "--chunks sets the blocks scored with --scheduler")


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_voxel_size_must_be_finite_and_positive(data, capsys, value):
    refused(process3D.main, ["--operation", "tif_to_zarr", "--input_dir", "d/label_q.tif",
                             "--output_dir", "v.zarr", "--voxel_size", value, "6", "6"],
            capsys, data, "--voxel_size is three finite sizes > 0", value)


# ---- reconstruct3D --merge_threshold_from ------------------------------------------------

def test_merge_threshold_from_a_sweep_file(data, capsys):
    mem = membrane(LABELS).astype(np.uint8) * 255
    over = overlap(LABELS).astype(np.uint8) * 255
    io.write_tif(data / "mem.tif", mem)
    io.write_tif(data / "ovp.tif", over)
    argv = ["--method", "agglomerate", "--input_dir_membrane", "mem.tif", "--input_dir_overlap",
            "ovp.tif", "--output_dir", "out", "--name"]
    assert reconstruct3D.main(argv + ["from", "--merge_threshold_from", "sweep.json"]) == 0
    captured = capsys.readouterr()
    assert "threshold 0.35 (chosen in sweep.json)" in captured.out
    assert "thresholds 0.35 (chosen in sweep.json)" in captured.err
    assert reconstruct3D.main(argv + ["given", "--merge_threshold", "0.35"]) == 0
    got = tifffile.imread(data / "out" / "from.tif")
    np.testing.assert_array_equal(got, tifffile.imread(data / "out" / "given.tif"))
    np.testing.assert_array_equal(got, agglomerate(mem, over, [0.35])[0])


def test_merge_threshold_from_a_3d_sweep_cuts_3d_fragments(data, capsys):
    mem = membrane(LABELS).astype(np.uint8) * 255
    over = overlap(LABELS).astype(np.uint8) * 255
    io.write_tif(data / "mem.tif", mem)
    io.write_tif(data / "ovp.tif", over)
    (data / "sweep3d.json").write_text(json.dumps({"chosen": 0.35, "fragments": "3d"}))
    argv = ["--method", "agglomerate", "--input_dir_membrane", "mem.tif", "--input_dir_overlap",
            "ovp.tif", "--output_dir", "out", "--merge_threshold_from", "sweep3d.json", "--name"]
    assert reconstruct3D.main(argv + ["from3d"]) == 0
    assert "(3d fragments" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(data / "out" / "from3d.tif"),
                                  agglomerate(mem, over, [0.35], fragment_mode="3d")[0])
    assert reconstruct3D.main(argv + ["again3d", "--fragments", "3d"]) == 0
    capsys.readouterr()
    # a threshold chosen on 3-D fragments is not applied to per-slice ones, nor the reverse
    refused(reconstruct3D.main, argv + ["r", "--fragments", "2d"], capsys, data,
            "--fragments 2d, but --merge_threshold_from sweep3d.json chose its threshold on 3d "
            "fragments: give --fragments 3d or leave it out")
    refused(reconstruct3D.main, argv[:-3] + ["--merge_threshold_from", "sweep.json", "--name",
                                             "r", "--fragments", "3d"], capsys, data,
            "chose its threshold on 2d fragments")
    (data / "sweepz.json").write_text(json.dumps({"chosen": 0.35, "fragments": "zwatershed"}))
    refused(reconstruct3D.main, argv[:-3] + ["--merge_threshold_from", "sweepz.json", "--name",
                                             "r"], capsys, data,
            "--merge_threshold_from sweepz.json chose its threshold on zwatershed fragments, "
            "which membranes are not cut into (2d or 3d)")


@pytest.mark.parametrize("extra, fragments", [
    (["--merge_threshold_from", "sweep.json", "--merge_threshold", "0.3"],
     ["--merge_threshold and --merge_threshold_from are exclusive"]),
    (["--merge_threshold_from", "missing.json"], ["missing.json"]),
    (["--merge_threshold_from", "bad.json"], ["bad.json"]),
])
def test_merge_threshold_from_refusals(data, capsys, extra, fragments):
    (data / "bad.json").write_text('{"chosen": "x"}')
    refused(reconstruct3D.main, ["--method", "agglomerate", "--input_dir_membrane", "em",
                                 "--input_dir_overlap", "over", "--output_dir", "out",
                                 "--name", "r", *extra], capsys, data, *fragments)


def test_merge_threshold_from_is_for_agglomerate(data, capsys):
    refused(reconstruct3D.main, ["--input_dir_cytoplasm", "cyto", "--input_dir_overlap", "over",
                                 "--output_dir", "out", "--name", "r",
                                 "--merge_threshold_from", "sweep.json"], capsys, data,
            "--merge_threshold_from is for --method agglomerate")


# ---- broken zarr metadata: one line naming the store (issue 21 item 12) --------------------

def _break(store, how):
    if how == "json":
        (store / ".zattrs").write_text('{"multiscales": [\n  {"version": "0.4"\n  "name": 1}]}')
        return
    meta = json.loads((store / "0" / ".zarray").read_text())
    meta.update({"shape": [-1, 4, 4]} if how == "shape" else {"dtype": "|O"})
    (store / "0" / ".zarray").write_text(json.dumps(meta))


@pytest.mark.parametrize("how, fragment", [("json", "X.zarr"), ("shape", "[-1, 4, 4]"),
                                           ("dtype", "'|O'")])
def test_broken_zarr_metadata_is_one_line_in_every_cli(data, capsys, how, fragment):
    _break(data / "X.zarr", how)
    refused(evaluate3D.main, ["--predicted", "X.zarr", "--true", "d/label_q.tif"], capsys, data,
            "--predicted", "X.zarr", fragment)
    refused(reconstruct3D.main, ["--input_dir_cytoplasm", "X.zarr", "--input_dir_overlap",
                                 "over", "--output_dir", "out", "--name", "r"], capsys, data,
            "--input_dir_cytoplasm", "X.zarr", fragment)
    refused(neuroglancer3D.main, ["--predicted", "X.zarr"], capsys, data, "--predicted X.zarr",
            fragment)
    refused(process3D.main, ["--operation", "membrane", "--input_dir", "X.zarr",
                             "--output_dir", "m"], capsys, data, "--input_dir X.zarr", fragment)


@pytest.mark.parametrize("main, argv, flag", [
    (evaluate3D.main, ["--predicted", "d/label_q.tif", "--true", "nope.tif"], "--true"),
    (evaluate3D.main, ["--predicted", "d/label_q.tif", "--true", "d/label_q.tif", "--labels",
                       "nope.zarr"], "--labels"),
    (reconstruct3D.main, ["--input_dir_cytoplasm", "cyto", "--input_dir_overlap", "nope",
                          "--output_dir", "out", "--name", "r"], "--input_dir_overlap"),
    (reconstruct3D.main, ["--method", "agglomerate", "--input_dir_membrane", "nope.tif",
                          "--input_dir_overlap", "over", "--output_dir", "out", "--name", "r"],
     "--input_dir_membrane"),
    (neuroglancer3D.main, ["--em", "nope"], "--em"),
    (process3D.main, ["--operation", "eroskele", "--input_dir", "nope", "--output_dir", "o"],
     "--input_dir"),
])
def test_missing_inputs_are_named_by_their_flag(data, capsys, main, argv, flag):
    refused(main, argv, capsys, data, f"{flag} does not exist: nope")

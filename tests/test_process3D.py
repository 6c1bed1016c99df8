"""process3D.py through its CLI: the thesis commands verbatim, outputs, and bad input."""

import numpy as np
import pytest
import tifffile
from conftest import assert_user_error, run_script
from PIL import Image
from test_cli import main_error
from test_labels import TINY, TINY_CYTOPLASM, TINY_MEMBRANE, TINY_OVERLAP

import process3D
from neuron3d import io
from neuron3d.synthetic import _tracks, synthetic_labels, synthetic_volume


@pytest.fixture
def thesis_datasets(tmp_path, monkeypatch):
    """A tmp working folder with datasets/train-{input,labels}.tif (synthetic, 6 x 64 x 48)."""
    monkeypatch.chdir(tmp_path)
    em, ids = synthetic_volume((6, 64, 48), seed=1)
    (tmp_path / "datasets").mkdir()
    tifffile.imwrite(tmp_path / "datasets" / "train-input.tif", em)
    tifffile.imwrite(tmp_path / "datasets" / "train-labels.tif", ids)
    return tmp_path


def cmd(line):
    return process3D.main(line.split()[2:])  # drop "python process3D.py"


def test_thesis_commands_verbatim(thesis_datasets):
    d = thesis_datasets / "datasets"
    assert cmd("python process3D.py --operation split --input_dir datasets/train-input.tif --output_dir datasets/ --split em") == 0
    assert cmd("python process3D.py --operation split --input_dir datasets/train-labels.tif --output_dir datasets/ --split label") == 0
    em = tifffile.imread(d / "train-input.tif")
    np.testing.assert_array_equal(tifffile.imread(d / "em_a.tif"), em[:, 32:, 24:])
    assert cmd("python process3D.py --operation tif_to_png --input_dir datasets/em_a.tif --output_dir datasets/em_a") == 0
    np.testing.assert_array_equal(io.read_stack(d / "em_a"), em[:, 32:, 24:])
    assert cmd("python process3D.py --operation membrane  --input_dir datasets/label_a.tif --output_dir datasets/membrane_a") == 0
    assert cmd("python process3D.py --operation cytoplasm --input_dir datasets/label_b.tif --output_dir datasets/cytoplasm_b") == 0
    assert cmd("python process3D.py --operation overlap   --input_dir datasets/label_b.tif --output_dir datasets/overlap_b") == 0
    assert len(list((d / "overlap_b").iterdir())) == 5
    label_b = tifffile.imread(d / "label_b.tif")
    from neuron3d import labels as L

    np.testing.assert_array_equal(io.read_stack(d / "cytoplasm_b") == 255, L.cytoplasm(label_b))
    # The trainer's test output layout: images/NN-outputs.png beside inputs and targets.
    images = thesis_datasets / "results" / "P3_em_membrane_b" / "images"
    images.mkdir(parents=True)
    for z in range(6):
        rgb = np.repeat(((label_b[z] % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(rgb).save(images / f"{z:02d}-outputs.png")
        Image.fromarray(255 - rgb).save(images / f"{z:02d}-inputs.png")
    assert cmd("python process3D.py --operation png_to_tif --input_dir results/P3_em_membrane_b/images/ --output_dir datasets/ --name membrane_predicted_b") == 0
    predicted = tifffile.imread(d / "membrane_predicted_b.tif")
    np.testing.assert_array_equal(predicted, ((label_b % 2) * 255).astype(np.uint8))
    assert cmd("python process3D.py --operation consecutive --input_dir datasets/membrane_predicted_b.tif --output_dir datasets/membrane_predicted_cons_b") == 0
    pairs = io.read_stack(d / "membrane_predicted_cons_b")
    assert pairs.shape == (5, 32, 24, 3)
    np.testing.assert_array_equal(pairs[..., 1], predicted[1:])
    (d / "overlap_predicted_c").mkdir()
    io.write_slices(d / "overlap_predicted_c", L.overlap(label_b))
    assert cmd("python process3D.py --operation eroskele --input_dir datasets/overlap_predicted_c/ --output_dir datasets/overlap_predicted_c_eroskele") == 0
    thin = io.read_stack(d / "overlap_predicted_c_eroskele") == 255
    np.testing.assert_array_equal(thin, L.eroskele(L.overlap(label_b), 10))


def test_tiny_images_exact_through_cli(tmp_path):
    tifffile.imwrite(tmp_path / "tiny.tif", TINY)
    for op, expected in (("membrane", TINY_MEMBRANE), ("cytoplasm", TINY_CYTOPLASM),
                         ("overlap", TINY_OVERLAP)):
        assert process3D.main(["--operation", op, "--input_dir", str(tmp_path / "tiny.tif"),
                               "--output_dir", str(tmp_path / op)]) == 0
        written = io.read_stack(tmp_path / op)
        assert set(np.unique(written)) <= {0, 255}
        np.testing.assert_array_equal(written == 255, expected)


def test_evaluation_and_erosions_flag(tmp_path):
    tifffile.imwrite(tmp_path / "label_c.tif", TINY)
    assert process3D.main(["--operation", "evaluation", "--input_dir", str(tmp_path / "label_c.tif"),
                           "--output_dir", str(tmp_path)]) == 0
    evaluation = tifffile.imread(tmp_path / "evaluate_c.tif")
    # ID 1 cytoplasm of slices 0 and 1 joins through the overlap; ID 2's corner stays alone.
    expected = np.zeros(TINY.shape, np.uint16)
    expected[0, :2, :2] = 1
    expected[0, :2, 4] = 2
    expected[1, :2, :] = 1
    np.testing.assert_array_equal(evaluation, expected)
    full = np.full((1, 7, 9), 255, np.uint8)
    io.write_slices(tmp_path / "ov", full)
    assert process3D.main(["--operation", "eroskele", "--input_dir", str(tmp_path / "ov"),
                           "--output_dir", str(tmp_path / "thin"), "--erosions", "3"]) == 0
    assert (io.read_stack(tmp_path / "thin") == 255).sum() == 3


def test_any_shape_and_many_ids(tmp_path):
    # 3000 slices of 64 x 64 with > 65535 IDs in uint64.
    labels = np.arange(3000 * 64 * 64, dtype=np.uint64).reshape(3000, 64, 64) // 16 + 2**33
    tifffile.imwrite(tmp_path / "big.tif", labels)
    assert process3D.main(["--operation", "overlap", "--input_dir", str(tmp_path / "big.tif"),
                           "--output_dir", str(tmp_path / "ov")]) == 0
    assert len(list((tmp_path / "ov").iterdir())) == 2999
    assert (tmp_path / "ov" / "0000.png").exists()
    odd = np.random.default_rng(0).integers(1, 5, (1, 7, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "odd.tif", odd)
    assert process3D.main(["--operation", "membrane", "--input_dir", str(tmp_path / "odd.tif"),
                           "--output_dir", str(tmp_path / "m")]) == 0
    assert io.read_stack(tmp_path / "m").shape == (1, 7, 3)


def test_synthetic_is_deterministic_dense_and_alive(tmp_path):
    for run in ("r1", "r2"):
        assert process3D.main(["--operation", "synthetic", "--output_dir", str(tmp_path / run),
                               "--shape", "12", "96", "80", "--seed", "5"]) == 0
    for name in ("train-input.tif", "train-labels.tif"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes()
    em = tifffile.imread(tmp_path / "r1" / "train-input.tif")
    ids = tifffile.imread(tmp_path / "r1" / "train-labels.tif")
    assert em.dtype == np.uint8 and ids.dtype == np.uint32 and em.shape == ids.shape == (12, 96, 80)
    assert ids.min() >= 1  # every voxel belongs to a neuron
    from neuron3d.labels import membrane

    mem = membrane(ids)
    assert em[mem].mean() < em[~mem].mean() - 40  # dark membranes
    assert 10 < em[~mem].std()  # textured, noisy cytoplasm
    first, last = set(np.unique(ids[0])), set(np.unique(ids[-1]))
    everywhere = set(np.unique(ids))
    assert everywhere - first and everywhere - last  # neurites start and end inside


def test_synthetic_tracks_branch():
    tracks = _tracks(np.random.default_rng(0), (40, 256, 256))
    idents = [t.ident for t in tracks]
    assert len(idents) > len(set(idents))  # some branches share their parent's ID
    assert any(t.z0 > 0 for t in tracks) and any(t.z1 < 40 for t in tracks)


def test_synthetic_branch_geometry():
    """A branch leaves its parent's centre and drifts away: one label, one connected part in
    the slice before the branch, two parts (one around each centre) in its last slice."""
    from scipy import ndimage

    shape = (40, 256, 256)
    tracks = _tracks(np.random.default_rng(0), shape)  # what synthetic_labels(seed=0) draws
    parents = {}
    for t in tracks:
        parents.setdefault(t.ident, t)
    branches = [(parents[t.ident], t) for t in tracks if parents[t.ident] is not t]
    assert len(branches) >= 5
    diverging = 0
    for parent, child in branches:
        assert parent.z0 < child.z0 and child.z1 == parent.z1  # starts inside, ends with it
        gap = np.linalg.norm(child.pos - parent.pos[child.z0 - parent.z0:], axis=1)
        assert gap[0] < 8  # leaves from the parent's centre (2 px spread)
        diverging += gap[-1] > gap[0] + 5
    # then drifts away (0.8-1.6 px per slice; the random walk may undo it for a short one)
    assert diverging >= len(branches) - 1
    ids = synthetic_labels(shape, seed=0)

    def parts(z, centres):
        """The label at the first centre in slice z, its 2-D parts, the part of each centre."""
        where = [tuple(np.clip(np.round(c).astype(int), 0, 255)) for c in centres]
        label = ids[z][where[0]]
        components, count = ndimage.label(ids[z] == label)
        return count, [components[w] if ids[z][w] == label else 0 for w in where]

    splits = 0
    for parent, child in branches:
        before, _ = parts(child.z0 - 1, [parent.pos[child.z0 - 1 - parent.z0]])
        count, (p, c) = parts(child.z1 - 1, [parent.pos[-1], child.pos[-1]])
        splits += before == 1 and count == 2 and p > 0 and c > 0 and p != c
    assert splits >= 2


# ---- bad input: one stderr line, exit 2, nothing written ----------------------------------


def test_bad_inputs(tmp_path):
    out = tmp_path / "out"
    r = run_script("process3D.py", "--operation", "membrane", "--input_dir", tmp_path / "nope.tif", "--output_dir", out)
    assert_user_error(r, "nope.tif", "does not exist")
    (tmp_path / "empty").mkdir()
    r = run_script("process3D.py", "--operation", "membrane", "--input_dir", tmp_path / "empty", "--output_dir", out)
    assert_user_error(r, "empty", "no slice files")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "00.png").write_text("not an image")
    (tmp_path / "text" / "notes.txt").write_text("hello")
    r = run_script("process3D.py", "--operation", "eroskele", "--input_dir", tmp_path / "text", "--output_dir", out)
    assert_user_error(r, "00.png", "cannot read image")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((5, 6), np.uint8))
    r = run_script("process3D.py", "--operation", "overlap", "--input_dir", tmp_path / "flat.tif", "--output_dir", out)
    assert_user_error(r, "flat.tif", "3-D", "(5, 6)")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((2, 4, 4), np.float32), photometric="minisblack")
    r = run_script("process3D.py", "--operation", "cytoplasm", "--input_dir", tmp_path / "float.tif", "--output_dir", out)
    assert_user_error(r, "float.tif", "float32")
    tifffile.imwrite(tmp_path / "neg.tif", np.full((2, 4, 4), -3, np.int16), photometric="minisblack")
    r = run_script("process3D.py", "--operation", "membrane", "--input_dir", tmp_path / "neg.tif", "--output_dir", out)
    assert_user_error(r, "neg.tif", "negative", "-3")
    tifffile.imwrite(tmp_path / "thin.tif", np.zeros((2, 1, 4), np.uint8), photometric="minisblack")
    r = run_script("process3D.py", "--operation", "split", "--input_dir", tmp_path / "thin.tif", "--output_dir", out, "--split", "em")
    assert_user_error(r, "thin.tif", "at least 2", "1 x 4", "(2, 1, 4)")
    (tmp_path / "sizes").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "sizes" / "00.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "sizes" / "01.png")
    r = run_script("process3D.py", "--operation", "eroskele", "--input_dir", tmp_path / "sizes", "--output_dir", out)
    assert_user_error(r, "01.png", "differ in size")
    tifffile.imwrite(tmp_path / "ok.tif", np.ones((2, 4, 4), np.uint8), photometric="minisblack")
    (tmp_path / "afile").write_text("x")
    r = run_script("process3D.py", "--operation", "membrane", "--input_dir", tmp_path / "ok.tif", "--output_dir", tmp_path / "afile")
    assert_user_error(r, "afile", "existing file")
    r = run_script("process3D.py", "--operation", "explode", "--input_dir", tmp_path / "ok.tif", "--output_dir", out)
    assert_user_error(r, "explode", "invalid choice")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_split_odd_sizes_through_cli(tmp_path):
    stack = np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)
    tifffile.imwrite(tmp_path / "odd.tif", stack, photometric="minisblack")
    assert process3D.main(["--operation", "split", "--input_dir", str(tmp_path / "odd.tif"),
                           "--output_dir", str(tmp_path / "q"), "--split", "em"]) == 0
    expected = {"c": stack[:, 0:2, 0:3], "b": stack[:, 0:2, 3:6],
                "d": stack[:, 2:4, 0:3], "a": stack[:, 2:4, 3:6]}
    np.testing.assert_array_equal(expected["a"][0], [[17, 18, 19], [24, 25, 26]])
    for q, part in expected.items():
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "q" / f"em_{q}.tif"), part)


ALL_INPUT_OPERATIONS = ["split", "membrane", "cytoplasm", "overlap", "consecutive", "eroskele",
                        "tif_to_png", "png_to_tif", "evaluation"]


@pytest.mark.filterwarnings("ignore:.*zero-size array")
@pytest.mark.parametrize("shape,what", [((0, 4, 4), "no slices"), ((2, 0, 4), "empty slices"),
                                        ((2, 4, 0), "empty slices")])
def test_zero_size_stacks_fail_for_every_operation(tmp_path, capsys, shape, what):
    tifffile.imwrite(tmp_path / "e.tif", np.zeros(shape, np.uint8), photometric="minisblack")
    for op in ALL_INPUT_OPERATIONS:
        out = tmp_path / f"out_{op}"
        main_error(process3D.main, ["--operation", op, "--input_dir", tmp_path / "e.tif",
                                    "--output_dir", out, "--split", "em", "--name", "x"],
                   capsys, what, "e.tif", str(shape))
        assert not out.exists(), op
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.tif"]


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_zero_size_stack_subprocess_has_no_traceback(tmp_path):
    tifffile.imwrite(tmp_path / "e.tif", np.zeros((0, 4, 4), np.uint8), photometric="minisblack")
    r = run_script("process3D.py", "--operation", "membrane", "--input_dir", tmp_path / "e.tif",
                   "--output_dir", tmp_path / "out")
    assert_user_error(r, "no slices", "e.tif", "(0, 4, 4)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,fragments", [
    (["--operation", "png_to_tif", "--name", ""], ("--name", "''")),
    (["--operation", "png_to_tif", "--name", "sub/x"], ("--name", "'sub/x'", "folder")),
    (["--operation", "evaluation", "--name", ".x"], ("--name", "'.x'", "hidden")),
    (["--operation", "split", "--split", ""], ("--split", "''")),
    (["--operation", "split", "--split", "a/b"], ("--split", "'a/b'")),
    (["--operation", "eroskele", "--erosions", "-1"], ("--erosions", "-1", ">= 0")),
    (["--operation", "synthetic", "--seed", "-1"], ("--seed", "-1", ">= 0")),
    (["--operation", "synthetic", "--shape", "0", "8", "8"], ("--shape", "0 8 8", ">= 1")),
    (["--operation", "synthetic", "--shape", "2", "-8", "8"], ("--shape", "2 -8 8")),
])
def test_options_are_checked_before_anything_is_read_or_written(tmp_path, capsys, argv,
                                                                fragments):
    labels = np.ones((2, 4, 4), np.uint8)
    tifffile.imwrite(tmp_path / "label_c.tif", labels, photometric="minisblack")
    io.write_slices(tmp_path / "slices", labels * 255)
    source = tmp_path / ("slices" if "png_to_tif" in argv or "eroskele" in argv else "label_c.tif")
    out = tmp_path / "new" / "out"
    main_error(process3D.main, argv + ["--input_dir", source, "--output_dir", out], capsys,
               *fragments)
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_one_slice_pairs_are_empty_folders_not_errors(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.full((1, 4, 4), 200, np.uint8),
                     photometric="minisblack")
    for op in ("overlap", "consecutive"):
        assert process3D.main(["--operation", op, "--input_dir", str(tmp_path / "one.tif"),
                               "--output_dir", str(tmp_path / op)]) == 0
        assert (tmp_path / op).is_dir() and not list((tmp_path / op).iterdir())


def test_help_is_self_contained(capsys):
    with pytest.raises(SystemExit):
        process3D.main(["--help"])
    text = capsys.readouterr().out
    assert "GUIDE" not in text and "§" not in text
    assert "h = H // 2" in text and "a = [:, h:2h, w:2w]" in text
    assert "m_z == m_(z+1) and m_z > 0" in text

"""The recipe of experiment_8.sh as data: options, layout, training recipes and the static plan
(moved from test_experiment.py when experiment.py was split into recipe, plan and runner)."""

import pytest

from neuron3d import plan as P
from neuron3d import recipe as R


def options(*argv):
    return R.resolve(R.build_parser().parse_args(list(argv)))


# ---- options and the recipe -------------------------------------------------------------------

def test_read_only_data_folder_puts_derived_files_under_the_run(tmp_path, monkeypatch):
    data = tmp_path / "ro"
    assert R._writable(tmp_path / "new" / "folder")  # the nearest existing parent decides
    (tmp_path / "file").write_text("")
    assert not R._writable(tmp_path / "file" / "sub")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert not R._writable(locked) and not R._writable(locked / "sub")  # even for root
    monkeypatch.setattr(R, "_writable", lambda folder: R.Path(folder) != data)
    o = options("--datasets", str(data), "--results", str(tmp_path / "res"))
    assert o.work == str(tmp_path / "res" / "experiment_8" / "datasets")
    with pytest.raises(ValueError, match="not writable"):
        options("--demo", "--datasets", str(data))


def test_read_only_rule_by_option(tmp_path):
    o = options("--datasets", str(tmp_path / "d"), "--work", str(tmp_path / "w"), "--run", "r")
    layout = R.Layout.of(o)
    assert layout.data == tmp_path / "d" and layout.work == tmp_path / "w"
    assert layout.run_dir == R.Path("results") / "r"
    assert layout.reconstruction("nn4", "nn5") == tmp_path / "w" / "r.tif"
    assert layout.reconstruction("nn1", "nn5") == tmp_path / "w" / "r_nn1_nn5.tif"


def test_plan_names_every_file_once_and_chains_steps():
    o = options("--demo", "--shape", "8", "96", "96", "--paths", "all")
    layout = R.Layout.of(o)
    steps = P.plan(o, layout, o.shape)
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    outputs = [p for s in steps for p in s.outputs]
    assert len(outputs) == len(set(outputs)), "two steps write the same file"
    produced = set()
    for s in steps:  # every input exists before its step: made by an earlier step
        for path in s.inputs:
            assert path in produced, (s.name, path)
        produced.update(s.outputs)
    # The thesis' names, spelled by the layout.
    by_name = {s.name: s for s in steps}
    assert by_name["train_nn3"].outputs == (layout.run_dir / "T3_em_membrane_a",)
    assert by_name["train_nn5"].inputs == (layout.work / "combined" / "membrane_overlap_b",)
    assert by_name["reconstruct_nn4_nn5"].outputs == (layout.work / "demo.tif",)
    assert by_name["reconstruct_nn1_nn2"].outputs == (layout.work / "demo_nn1_nn2.tif",)
    assert by_name["eroskele_nn5_c"].argv[-2:] == ("--erosions", "10")
    assert by_name["train_nn3"].resume[-2:] == ("--checkpoint", str(layout.network("nn3")))
    assert by_name["predict_nn3_b"].shell().startswith("python imagetranslation/translate.py --mode test")


@pytest.mark.parametrize("method", ["agglomerate", "both", "thesis"])
def test_real_calibrated_calibrates_nn3_on_d_before_anything_reads_its_membranes(method):
    o = options("--demo", "--shape", "8", "96", "96", "--recipe", "real_calibrated",
                "--minutes", "1", "--method", method)
    layout = R.Layout.of(o)
    steps = P.plan(o, layout, o.shape)
    names = [s.name for s in steps]
    by_name = {s.name: s for s in steps}
    if method == "thesis":  # d is not predicted: nothing to calibrate on
        assert "calibrate_nn3" not in names
        assert by_name["membrane_predicted_c"].argv[0] == "process3D.py"
        return
    choose = by_name["calibrate_nn3"]
    assert choose.argv[:3] == ("-m", "neuron3d.calibrate", "--choose")
    assert choose.inputs == (layout.prediction("nn3", "d"), layout.images("membrane", "d"))
    assert choose.outputs == (layout.calibration,)
    assert names.index("predict_nn3_d") < names.index("calibrate_nn3") \
        < names.index("predict_nn3_b")
    for q in "bcd":
        apply = by_name[f"membrane_predicted_{q}"]
        assert apply.argv[:5] == ("-m", "neuron3d.calibrate", "--apply", str(layout.calibration),
                                  "--input_dir")
        assert layout.calibration in apply.inputs
        assert apply.outputs == (layout.membrane_predicted(q),)
    for other in ("quick", "real"):
        o = options("--demo", "--shape", "8", "96", "96", "--method", method, "--recipe", other)
        assert "calibrate_nn3" not in {s.name for s in P.plan(o, R.Layout.of(o), o.shape)}


@pytest.mark.parametrize("method", ["both", "thesis", "agglomerate"])
def test_real_validates_every_network_on_d_when_d_is_predicted(method):
    """NN-3, NN-4 and NN-5 validate on d's pairs (and keep their best weights) where the
    agglomeration predicts d; d's membrane | cytoplasm pairs are made before NN-4 trains."""
    o = options("--demo", "--shape", "8", "96", "96", "--recipe", "real", "--minutes", "1",
                "--method", method)
    layout = R.Layout.of(o)
    steps = P.plan(o, layout, o.shape)
    names = [s.name for s in steps]
    by_name = {s.name: s for s in steps}
    for key, pairs in (("nn3", "em_membrane"), ("nn4", "membrane_cytoplasm"),
                       ("nn5", "membrane_overlap")):
        if f"train_{key}" not in by_name:
            assert key == "nn4" and method == "agglomerate"
            continue
        argv = by_name[f"train_{key}"].argv
        if method == "thesis":  # d is not predicted: nothing to validate on
            assert "--validation_dir" not in argv, key
            continue
        held_out = layout.combined(pairs, "d")
        assert argv[argv.index("--validation_dir") + 1] == str(held_out), key
        made = next(s.name for s in steps if held_out in s.outputs)
        assert names.index(made) < names.index(f"train_{key}"), key
    if method == "both":
        assert names.index("membrane_predicted_png_d") < names.index("combine_membrane_cytoplasm_d")
    quick = options("--demo", "--shape", "8", "96", "96", "--method", method)
    assert all("--validation_dir" not in s.argv for s in P.plan(quick, R.Layout.of(quick),
                                                                 quick.shape))


@pytest.mark.parametrize("method", ["thesis", "agglomerate", "both"])
def test_plan_trains_only_what_the_method_reads(method):
    o = options("--demo", "--shape", "8", "96", "96", "--method", method)
    names = {s.name for s in P.plan(o, R.Layout.of(o), o.shape)}
    thesis = {"train_nn4", "eroskele_nn5_c", "reconstruct_nn4_nn5", "evaluate_nn4_nn5",
              "combine_membrane_cytoplasm_c"}
    agglomerate = {"predict_nn3_d", "predict_nn5_d", "sweep_agglomerate_d", "agglomerate_c",
                   "evaluate_agglomerate"}
    assert {"train_nn3", "train_nn5", "predict_nn5_c"} <= names
    assert (thesis <= names) == (method != "agglomerate")
    assert not (thesis & names) or method != "agglomerate"
    assert (agglomerate <= names) == (method != "thesis")
    assert not (agglomerate & names) or method != "thesis"


def test_tta_applies_to_the_test_time_predictions_only():
    o = options("--demo", "--shape", "8", "96", "96", "--tta")
    by_name = {s.name: s for s in P.plan(o, R.Layout.of(o), o.shape)}
    assert "--tta" not in by_name["predict_nn3_b"].argv  # NN-4's and NN-5's training data
    for name in ("predict_nn3_c", "predict_nn3_d", "predict_nn4_c", "predict_nn5_c",
                 "predict_nn5_d"):
        assert by_name[name].argv[-1] == "--tta", name
    plain = options("--demo", "--shape", "8", "96", "96")
    assert all("--tta" not in s.argv for s in P.plan(plain, R.Layout.of(plain), plain.shape))


def test_views_apply_to_every_membrane_prediction_and_nothing_else():
    o = options("--demo", "--shape", "8", "96", "96", "--tta", "--views")
    assert o.views
    steps = P.plan(o, R.Layout.of(o), o.shape)
    with_views = {s.name for s in steps if "--views" in s.argv}
    # b's membranes too: they are NN-4's and NN-5's training inputs, c's and d's their tests
    assert with_views == {"predict_nn3_b", "predict_nn3_c", "predict_nn3_d"}
    by_name = {s.name: s for s in steps}
    assert "--tta" not in by_name["predict_nn3_b"].argv
    plain = options("--demo", "--shape", "8", "96", "96")
    assert not plain.views
    assert all("--views" not in s.argv for s in P.plan(plain, R.Layout.of(plain), plain.shape))


def test_views_do_not_apply_to_nn6():
    with pytest.raises(ValueError, match="--views does not apply to --method affinities"):
        options("--demo", "--method", "affinities", "--views")


@pytest.mark.parametrize("extra, criterion", [((), "voi"), (("--criterion", "rand"), "rand")])
def test_the_sweep_on_d_chooses_by_the_criterion(extra, criterion):
    o = options("--demo", "--shape", "8", "96", "96", *extra)
    assert o.criterion == criterion
    by_name = {s.name: s for s in P.plan(o, R.Layout.of(o), o.shape)}
    argv = by_name["sweep_agglomerate_d"].argv
    assert argv[argv.index("--criterion") + 1] == criterion
    with pytest.raises(SystemExit):
        options("--demo", "--criterion", "f1")


def test_3d_fragments_reach_the_sweep_and_the_agglomeration_only():
    o = options("--demo", "--shape", "8", "96", "96", "--fragments", "3d")
    assert o.fragments == "3d"
    steps = P.plan(o, R.Layout.of(o), o.shape)
    with_3d = {s.name for s in steps if "--fragments" in s.argv}
    assert with_3d == {"sweep_agglomerate_d", "agglomerate_c"}
    for s in steps:
        if s.name in with_3d:
            assert s.argv[s.argv.index("--fragments") + 1] == "3d"
    # the default keeps the commands (and so the keys of earlier runs) as they were
    plain = options("--demo", "--shape", "8", "96", "96")
    assert plain.fragments == "2d"
    assert all("--fragments" not in s.argv for s in P.plan(plain, R.Layout.of(plain),
                                                         plain.shape))
    with pytest.raises(ValueError, match="--fragments is for the agglomeration"):
        options("--demo", "--method", "thesis", "--fragments", "3d")
    # blockwise too (one 3-D watershed per block of --chunks slices), the zarr stores named
    blocks = options("--demo", "--shape", "8", "96", "96", "--fragments", "3d", "--chunks", "8",
                     "48", "48")
    by_name = {s.name: s for s in P.plan(blocks, R.Layout.of(blocks), blocks.shape)}
    for name in ("sweep_agglomerate_d", "agglomerate_c"):
        argv = [str(a) for a in by_name[name].argv]
        assert argv[argv.index("--fragments") + 1] == "3d"
        assert argv[argv.index("--input_dir_membrane") + 1].endswith(".zarr")


def test_training_recipes():
    quick = options("--demo", "--shape", "8", "96", "96")
    args = R.training_args(quick, quick.shape, "nn3")
    assert args[args.index("--crop_size") + 1] == "48" and args[args.index("--max_steps") + 1] == "1500"
    assert R.training_args(quick, quick.shape, "nn5")[args.index("--max_steps") + 1] == "700"
    assert R.quick_crop((100, 1024, 1024)) == 128 and R.quick_crop((5, 250, 250)) == 124
    assert args[:12] == ["--Y_loss", "square", "--model", "pix2pix", "--generator", "resnet",
                         "--ngf", "16", "--n_res_blocks", "4", "--crop_size", "48"]
    real = options("--demo", "--recipe", "real", "--minutes", "3")
    args = R.training_args(real, real.shape, "nn3")
    assert args[args.index("--ngf") + 1] == "32" and "--augment" in args
    assert args[args.index("--max_minutes") + 1] == "3" and "--max_steps" not in args
    assert args[args.index("--pos_weight") + 1] == R.NETWORK_OPTIONS["real"]["nn3"][1]
    assert all("--pos_weight" not in R.training_args(real, real.shape, key)
               for key in ("nn4", "nn5"))
    assert "--pos_weight" not in R.training_args(quick, quick.shape, "nn3")
    # real trains in bfloat16 where the machine has its instructions (translate.py decides)
    assert args[args.index("--mixed_precision") + 1] == "auto"
    assert "--mixed_precision" not in R.training_args(quick, quick.shape, "nn3")
    # real_calibrated: real's networks, NN-3 unweighted (calibrated on d instead, below)
    calibrated = options("--demo", "--recipe", "real_calibrated", "--minutes", "3")
    assert R.training_args(calibrated, calibrated.shape, "nn3") == [
        a for a in args if a not in R.NETWORK_OPTIONS["real"]["nn3"]]
    assert options("--recipe", "quick").recipe == "quick" and options().recipe == "thesis"
    with pytest.raises(ValueError, match="--quick and --recipe real contradict"):
        options("--quick", "--recipe", "real")
    thesis = options("--epochs", "3", "--seed", "7", "--deterministic")
    args = R.training_args(thesis, (10, 64, 64), "nn4")
    assert args[:len(R.THESIS_TRAIN)] == list(R.THESIS_TRAIN)
    assert args[-5:] == ["--max_epochs", "3", "--seed", "7", "--deterministic"]
    budget = options("--demo", "--minutes", "2.5")
    args = R.training_args(budget, budget.shape, "nn3")
    assert "--max_steps" not in args and args[args.index("--max_minutes") + 1] == "2.5"
    both = options("--demo", "--minutes", "2", "--steps", "50")
    args = R.training_args(both, both.shape, "nn5")
    assert args[args.index("--max_steps") + 1] == "50" and "--max_minutes" in args
    assert R.recipe_summary(both, both.shape) == "quick training (--max_steps 50, --max_minutes 2)"
    assert R.recipe_summary(quick, quick.shape) == "quick training (--max_steps 1500 / 700)"


# ---- the static plan --------------------------------------------------------------------------

def test_make_step_derives_inputs_and_outputs_from_the_command(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "P", tmp_path / "w" / "x.tif"
    step = P.make_step("s", ("tool.py", "--in", P.In(a), "--images", P.images_of(b),
                             "--n", 3, *P.into(out)), writes=[tmp_path / "side.tif"],
                       resume=("--checkpoint", out))
    assert step.argv == ("tool.py", "--in", str(a), "--images", f"{b}/images/", "--n", "3",
                         "--output_dir", f"{tmp_path / 'w'}/", "--name", "x")
    assert step.inputs == (a, b)
    assert step.outputs == (out, tmp_path / "side.tif")
    assert step.resume == step.argv + ("--checkpoint", str(out))
    assert P.make_step("t", ("x", P.Out(out, "y"))).resume is None
    assert P.make_step("t", ("x", P.Out(out, "y"))).argv == ("x", "y")


def _named_by_command(step, path):
    """Whether ``step``'s command spells ``path`` (itself, its slice images, or folder + name)."""
    argv = step.argv
    for i, token in enumerate(argv):
        if token in (str(path), f"{path}/images/"):
            return True
        if token == "--name" and argv[i - 2] == "--output_dir" \
                and argv[i - 1] == f"{path.parent}/" and argv[i + 1] in (path.stem, path.name):
            return True
    return False


@pytest.mark.parametrize("extra", [[], ["--paths", "all"], ["--recipe", "real_calibrated",
                                                              "--minutes", "1"],
                                   ["--chunks", "4", "13", "15"]])
def test_every_file_of_a_step_is_in_its_command(extra):
    """Each step names each file once: its inputs and outputs are its command's files (only
    the split's quadrants and the synthetic volume are written by folder)."""
    o = options("--demo", "--shape", "8", "96", "96", *extra)
    layout = R.Layout.of(o)
    for step in P.plan(o, layout, o.shape):
        for path in step.inputs:
            assert _named_by_command(step, path), (step.name, path)
        for path in step.outputs:
            by_folder = step.name in ("synthetic", "split_em", "split_label")
            assert _named_by_command(step, path) != by_folder, (step.name, path)


@pytest.mark.parametrize("method", ["agglomerate", "both"])
def test_the_plan_is_static_the_agglomeration_reads_the_sweep_file(tmp_path, method):
    o = options("--demo", "--shape", "8", "96", "96", "--method", method,
                "--datasets", str(tmp_path / "data"), "--results", str(tmp_path / "res"))
    layout = R.Layout.of(o)
    before = P.plan(o, layout, o.shape)
    by_name = {s.name: s for s in before}
    agglomerate = by_name["agglomerate_c"]
    i = agglomerate.argv.index("--merge_threshold_from")
    assert agglomerate.argv[i + 1] == str(layout.sweep)
    assert "--merge_threshold" not in agglomerate.argv
    assert agglomerate.inputs == (layout.membrane_predicted("c"), layout.prediction("nn5", "c"),
                                  layout.sweep)
    assert by_name["sweep_agglomerate_d"].outputs == (layout.sweep,)
    # a sweep file written (as after the sweep step) changes nothing in the plan
    layout.sweep.parent.mkdir(parents=True)
    layout.sweep.write_text('{"chosen": 0.35, "rows": []}')
    assert P.plan(o, layout, o.shape) == before


def test_demo_is_deterministic_unless_told_otherwise(capsys):
    demo = options("--demo")
    assert demo.deterministic is True
    assert R.training_args(demo, demo.shape, "nn3")[-1] == "--deterministic"
    assert R.options_record(demo, R.Layout.of(demo))["options"]["deterministic"] is True
    fast = options("--demo", "--no_deterministic")
    assert fast.deterministic is False
    assert "--deterministic" not in R.training_args(fast, fast.shape, "nn3")
    # prediction runs deterministically too: NN-4 and NN-5 train on NN-3's predictions, so
    # their threads and kernels must not depend on the machine either
    for o, expected in ((demo, True), (fast, False)):
        predictions = [s for s in P.plan(o, R.Layout.of(o), o.shape)
                       if s.name.startswith("predict_")]
        assert predictions and all(("--deterministic" in s.argv) is expected
                                   for s in predictions)
    assert options("--demo", "--no-deterministic").deterministic is False
    assert options().deterministic is False and options("--deterministic").deterministic is True
    with pytest.raises(SystemExit) as info:
        options("--demo", "--deterministic", "--no_deterministic")
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    text = " ".join(R.build_parser().format_help().split())
    assert "the default with --demo" in text and "--no_deterministic" in text
    assert "deterministically (--deterministic, unless --no_deterministic)" in text


@pytest.mark.parametrize("flag", ["--work", "--results"])
def test_folder_options_checked_before_anything_runs(tmp_path, flag):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"^{flag} {a_file} must be a folder, but it is a file$"):
        options("--demo", "--datasets", str(tmp_path / "d"), flag, str(a_file))
    with pytest.raises(ValueError, match=f"^{flag} {a_file}/sub cannot be a folder "
                                         f"\\({a_file} is a file\\)$"):
        options("--demo", "--datasets", str(tmp_path / "d"), flag, str(a_file / "sub"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ValueError, match=f"^{flag} {locked}/w is not writable"):
        options("--demo", "--datasets", str(tmp_path / "d"), flag, str(locked / "w"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "locked"]
    assert a_file.read_text() == "x"


def test_budget_must_be_finite():
    with pytest.raises(ValueError, match="^--minutes must be > 0, got -inf$"):
        options("--demo", "--minutes=-inf")
    with pytest.raises(ValueError, match="^--minutes must be a finite number of minutes, got inf$"):
        options("--demo", "--minutes", "inf")
    assert options("--demo", "--minutes", "1e3").minutes == 1000.0


def test_rerooted_layout_moves_what_lies_in_the_run_folder(tmp_path):
    old = R.Layout(tmp_path / "data", tmp_path / "res" / "r" / "datasets", tmp_path / "res" / "r",
                   "r")
    new = old.rerooted(tmp_path / "copy")
    assert new.run_dir == tmp_path / "copy" and new.work == tmp_path / "copy" / "datasets"
    assert new.data == tmp_path / "data" and new.run == "r"
    assert new.reconstruction("nn4", "nn5") == tmp_path / "copy" / "datasets" / "r.tif"
    outside = R.Layout(tmp_path / "data", tmp_path / "data", tmp_path / "res" / "r", "r", True)
    moved = outside.rerooted(tmp_path / "elsewhere")
    assert moved.work == tmp_path / "data" and moved.zarr is True
    assert moved.sweep == tmp_path / "elsewhere" / "sweep_agglomerate_d.json"

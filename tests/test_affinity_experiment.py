"""experiment_8.sh --method affinities: NN-6 in the plan, its options, and a tiny run end to end."""

import json

import pytest

from neuron3d import plan as P
from neuron3d import recipe as R


def options(*argv):
    return R.resolve(R.build_parser().parse_args(list(argv)))


def test_the_affinity_plan_trains_nn6_on_a_and_b_and_chooses_on_d():
    o = options("--demo", "--shape", "8", "96", "96", "--method", "affinities", "--minutes", "3")
    layout = R.Layout.of(o)
    steps = P.plan(o, layout, o.shape)
    names = [s.name for s in steps]
    assert names == ["synthetic", "split_em", "split_label", "evaluation_c", "evaluation_d",
                     "train_nn6", "predict_nn6_d", "predict_nn6_c", "sweep_agglomerate_d",
                     "agglomerate_c", "evaluate_agglomerate"]
    produced = set()
    for s in steps:  # every input is made by an earlier step; no file is written twice
        assert all(path in produced for path in s.inputs), s.name
        assert not produced & set(s.outputs), s.name
        produced.update(s.outputs)
    by_name = {s.name: s for s in steps}
    train = by_name["train_nn6"]
    assert set(train.inputs) == {layout.quadrant_tif(k, q) for k in ("em", "label")
                                 for q in "abd"}
    assert train.outputs == (layout.network("nn6"),)
    # twice the per-network budget (it replaces NN-3 and NN-5); 8 slices give crops of 8
    assert " --crop 8 48 48 --minutes 6 --seed 0 --deterministic" in train.shell()
    assert train.resume[-2:] == ("--checkpoint", str(layout.network("nn6")))
    assert by_name["agglomerate_c"].inputs == (layout.affinities_predicted("c"), layout.sweep)
    assert "--input_affinities" in by_name["sweep_agglomerate_d"].argv
    assert R.recipe_summary(o, o.shape) == "NN-6 3D U-Net (--minutes 6)"


@pytest.mark.parametrize("extra, flag", [(["--epochs", "3"], "--epochs"),
                                         (["--paths", "all"], "--paths all"),
                                         (["--tta"], "--tta"),
                                         (["--chunks", "4", "8", "8"], "--chunks")])
def test_what_does_not_apply_to_nn6_is_refused(extra, flag):
    with pytest.raises(ValueError, match=f"{flag} does not apply to --method affinities"):
        options("--demo", "--method", "affinities", *extra)


def test_quadrants_too_thin_for_nn6_are_refused():
    o = options("--demo", "--shape", "2", "96", "96", "--method", "affinities")
    with pytest.raises(ValueError, match="too small for NN-6"):
        P.plan(o, R.Layout.of(o), o.shape)


def test_a_tiny_affinity_run_reports_nn6_and_its_agglomeration(tmp_path):
    from neuron3d.experiment import main

    argv = ["--demo", "--method", "affinities", "--shape", "8", "64", "64", "--steps", "4",
            "--results", str(tmp_path / "results"), "--datasets", str(tmp_path / "data")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "results" / "demo" / "report.json").read_text())
    (row,) = report["results"]
    assert row["key"] == "affinities" and row["method"] == "agglomerate"
    assert 0 <= row["labels_scores"]["adapted_rand_error"] <= 1
    assert row["merge_threshold"] == report["agglomeration_sweep"]["chosen"]
    assert report["agglomeration_sweep"]["fragments"] == "3d"
    nn6 = report["networks"]["nn6"]
    assert nn6["training"]["steps"] == 4 and set(nn6["quality"]) == {"c", "d"}
    assert 0 <= nn6["quality"]["c"]["f1"] <= 1
    assert main(argv) == 0  # a re-run reuses every step
    again = json.loads((tmp_path / "results" / "demo" / "report.json").read_text())
    assert again["steps_run"] == [] and again["results"] == report["results"]

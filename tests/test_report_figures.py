"""report.json and the figures, on tiny hand-made runs."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from neuron3d import figures, report
from neuron3d.experiment import Layout, Step
from neuron3d.io import write_tif
from neuron3d.metrics import evaluate


def tiny_run(tmp_path, layout=None):
    """A finished run's files for the thesis path: evaluation volume, cytoplasm, scores."""
    layout = layout or Layout(tmp_path / "data", tmp_path / "work", tmp_path / "results" / "r",
                              "r")
    truth = np.zeros((2, 4, 4), np.uint16)
    truth[:, :, :2], truth[:, :, 2:] = 1, 2
    cytoplasm = np.zeros((2, 4, 4), np.uint8)
    cytoplasm[0, :, :1] = cytoplasm[1, :, 3:] = 255
    write_tif(layout.evaluation(), truth)
    labels = truth.copy()
    labels[:, 0, :] = 5  # the ground truth has one more object than the evaluation volume
    write_tif(layout.quadrant_tif("label", "c"), labels)
    write_tif(layout.cytoplasm_predicted("nn4"), cytoplasm)
    predicted = truth.copy()
    predicted[1] = 3  # the second slice split off as its own object
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    write_tif(layout.reconstruction("nn4", "nn5"), predicted)
    layout.scores("nn4", "nn5").write_text(json.dumps(
        {**evaluate(truth, predicted), "labels_scores": evaluate(labels, predicted)}))
    return layout, truth, predicted


def test_build_report_exact_rows_and_baselines(tmp_path):
    layout, truth, predicted = tiny_run(tmp_path)
    record = {"options": {"paths": "thesis", "method": "thesis", "erosions": 4},
              "layout": layout.as_dict()}
    steps = [Step("evaluate_nn4_nn5", ("evaluate3D.py", "--x"), (), ())]
    got = report.build_report(layout, record, steps, {"evaluate_nn4_nn5": {"seconds": 1.5}},
                              ["evaluate_nn4_nn5"], total_seconds=2.0)
    row = got["results"][0]
    assert row["key"] == "nn4_nn5" and row["cytoplasm"].startswith("NN-3 -> NN-4")
    assert row["method"] == "thesis"
    assert row["small"] == {"objects": 3, "small_objects": 3, "small_voxel_share": 1.0}
    assert row["adapted_rand_error"] == evaluate(truth, predicted)["adapted_rand_error"]
    assert row["reconstruction"] == str(layout.work / "r.tif")
    one = got["baselines"]["all_one_object"]
    assert one["adjusted_rand_index"] == 0.0 and one["merges"] == 1 and one["splits"] == 0
    # No overlaps: each slice's 2D cytoplasm component is its own object (2 objects).
    assert got["baselines"]["slices_separate"]["predicted_objects"] == 2
    assert got["baselines_labels"]["all_one_object"]["true_objects"] == 3
    assert got["options"] == record["options"] and "agglomeration_sweep" not in got
    assert got["commands"] == {"evaluate_nn4_nn5": "python evaluate3D.py --x"}
    assert got["steps_run"] == ["evaluate_nn4_nn5"] and got["steps_reused"] == []
    assert got["timings_seconds"] == {"evaluate_nn4_nn5": 1.5} and got["steps_seconds"] == 1.5
    assert got["versions"]["numpy"] == np.__version__
    lines = report.summary_line(got).splitlines()
    truth = row["labels_scores"]
    assert lines[1].split() == ["thesis", "nn4_nn5", f"{row['adapted_rand_error']:.4f}",
                                f"{truth['adapted_rand_error']:.4f}",
                                f"{truth['voi_split']:.3f}", "/", f"{truth['voi_merge']:.3f}",
                                str(truth["predicted_objects"]), f"({truth['true_objects']})"]
    assert lines[2].split()[:4] == ["baseline:", "all", "one", "object"]


def test_metrics_table_exact():
    scores = {"adapted_rand_error": 0.25, "adjusted_rand_index": 0.5, "splits": 3, "merges": 1,
              "voi_split": 0.125, "voi_merge": 2.0, "true_objects": 4, "predicted_objects": 6}
    other = {**scores, "adapted_rand_error": 0.0625}
    rep = {"results": [{"method": "thesis", "key": "nn4_nn5", **scores, "labels_scores": other},
                       {"method": "agglomerate", "key": "agglomerate", "merge_threshold": 0.35,
                        **other, "labels_scores": scores}],
           "baselines": {"all_one_object": scores}, "baselines_labels": {"all_one_object": other}}
    lines = figures.metrics_table(rep).splitlines()
    assert lines[2] == ("| thesis: cytoplasm NN-4 / overlap NN-5 | evaluation volume | 0.2500 | "
                        "0.5000 | 3 | 1 | 0.125 | 2.000 | 4 / 6 |")
    assert lines[3].startswith("| agglomerate, threshold 0.35 (chosen on d) | evaluation volume "
                               "| 0.0625 |")
    assert lines[4].startswith("| baseline: all one object | evaluation volume | 0.2500 |")
    assert lines[5].startswith("| thesis: cytoplasm NN-4 / overlap NN-5 | ground truth | 0.0625 |")
    assert lines[6].startswith("| agglomerate, threshold 0.35 (chosen on d) | ground truth | 0.2500 |")
    assert lines[7].startswith("| baseline: all one object | ground truth | 0.0625 |")
    assert len(lines) == 8


def test_quality_table_exact(tmp_path):
    rep = {"run": "r", "networks": {"nn3": {"title": "NN-3", "quality": {
        "c": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3,
              "boundary_1px": {"f1": 0.9}, "boundary_2px": {"f1": 0.95}}}},
        "nn4": {"title": "NN-4", "quality": {"c": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}}}}}
    lines = figures.quality_table(rep).splitlines()
    assert lines[2:] == ["| NN-3 | c | 0.500 | 0.250 | 0.333 | 0.900 | 0.950 |",
                         "| NN-4 | c | 1.000 | 0.500 | 0.667 |  |  |"]
    figures.quality_chart(rep, tmp_path / "q.png")
    with Image.open(tmp_path / "q.png") as image:
        assert image.format == "PNG"


def test_metrics_chart_writes_a_png(tmp_path):
    scores = {"adapted_rand_error": 0.25, "adjusted_rand_index": 0.5, "voi_split": 0.1,
              "voi_merge": 0.2}
    rep = {"run": "r", "results": [{"key": "nn4_nn5", **scores, "labels_scores": scores}],
           "baselines": {"all_one_object": scores}, "baselines_labels": {"all_one_object": scores}}
    figures.metrics_chart(rep, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as image:
        assert image.format == "PNG" and image.size[0] > 400
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left


def chart_report():
    ev = {"adapted_rand_error": 0.25, "adjusted_rand_index": 0.5, "voi_split": 0.125,
          "voi_merge": 2.0}
    gt = {"adapted_rand_error": 0.0625, "adjusted_rand_index": 0.75, "voi_split": 0.5,
          "voi_merge": 1.5}
    base_ev = {"adapted_rand_error": 0.875, "adjusted_rand_index": 0.0, "voi_split": 0.0,
               "voi_merge": 3.0}
    base_gt = {**base_ev, "voi_merge": 4.0}
    return {"run": "r", "results": [
        {"method": "thesis", "key": "nn4_nn5", **ev, "labels_scores": gt},
        {"method": "agglomerate", "key": "agglomerate", "merge_threshold": 0.35, **gt,
         "labels_scores": ev}],
        "baselines": {"all_one_object": base_ev}, "baselines_labels": {"all_one_object": base_gt}}


def test_metrics_chart_draws_the_reports_numbers(tmp_path):
    """The chart's content: one panel per metric, one bar per reconstruction and baseline and
    reference, each as long as the report's value, labelled with it."""
    rep = chart_report()
    names = ["thesis: cytoplasm NN-4 / overlap NN-5", "agglomerate, threshold 0.35 (chosen on d)",
             "baseline: all one object"]
    data = figures.metrics_chart(rep, tmp_path / "m.png")
    assert data["names"] == names
    assert [(ref, color) for ref, color, _ in data["series"]] == [
        ("evaluation volume", "tab:blue"), ("ground truth", "tab:orange")]
    assert data["series"][0][2]["adapted_rand_error"] == [0.25, 0.0625, 0.875]
    assert data["series"][1][2]["adapted_rand_error"] == [0.0625, 0.25, 0.875]
    assert data["series"][1][2]["voi_merge"] == [1.5, 2.0, 4.0]
    fig, plt = figures.metrics_figure(rep)
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == [label for _, label in figures.METRICS]
        assert [t.get_text() for t in axes[0].get_yticklabels()] == names
        for ax, (key, _) in zip(axes, figures.METRICS):
            bars = ax.patches
            assert len(bars) == 6  # 3 names x 2 references
            want = data["series"][0][2][key] + data["series"][1][2][key]
            assert [b.get_width() for b in bars] == want, key
            assert [t.get_text() for t in ax.texts] == [f" {v:.3f}" for v in want]
            blue, orange = (np.array(plt.matplotlib.colors.to_rgba(c))
                            for c in ("tab:blue", "tab:orange"))
            assert all(np.allclose(b.get_facecolor(), blue) for b in bars[:3])
            assert all(np.allclose(b.get_facecolor(), orange) for b in bars[3:])
        assert axes[0].patches[0].get_y() < axes[0].patches[3].get_y()  # side by side
    finally:
        plt.close(fig)
    # the PNG holds both colours' bars; without ground-truth scores only the first
    with Image.open(tmp_path / "m.png") as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colors = {tuple(c) for c in pixels}
    assert (31, 119, 180) in colors and (255, 127, 14) in colors
    del rep["results"][0]["labels_scores"]
    data = figures.metrics_chart(rep, tmp_path / "m1.png")
    assert [ref for ref, _, _ in data["series"]] == ["evaluation volume"]
    with Image.open(tmp_path / "m1.png") as image:
        colors = {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}
    assert (31, 119, 180) in colors and (255, 127, 14) not in colors


# ---- python -m neuron3d.report DIR: the report of the folder it is given ----------------------

def recorded_run(tmp_path, *extra):
    """A finished thesis-path run with its options.json (as experiment_8.sh writes it)."""
    from neuron3d import recipe

    options = recipe.resolve(recipe.build_parser().parse_args([
        "--demo", "--shape", "2", "8", "8", "--method", "thesis", "--datasets",
        str(tmp_path / "data"), "--results", str(tmp_path / "results"), "--run", "r", *extra]))
    layout = Layout.of(options)
    tiny_run(tmp_path, layout)
    layout.options_file.write_text(json.dumps(recipe.options_record(options, layout)))
    return layout


@pytest.mark.parametrize("inside", [False, True])
def test_report_rebuilds_the_folder_it_is_given(tmp_path, capsys, inside):
    """A copied run's report is rebuilt from the copy and written into it, the original left
    alone; a moved run is read where it is (derived files under the run move with it)."""
    import shutil

    extra = ("--work", str(tmp_path / "results" / "r" / "datasets")) if inside else ()
    layout = recorded_run(tmp_path, *extra)
    assert report.main([str(layout.run_dir)]) == 0
    original = (layout.run_dir / "report.json").read_bytes()
    copy = tmp_path / "elsewhere" / "r"
    shutil.copytree(layout.run_dir, copy)
    scores = json.loads((copy / "scores_nn4_nn5.json").read_text())
    scores["adapted_rand_error"] = 0.5  # the copy's own numbers
    (copy / "scores_nn4_nn5.json").write_text(json.dumps(scores))
    capsys.readouterr()
    assert report.main([str(copy)]) == 0
    assert f"wrote {copy / 'report.json'}" in capsys.readouterr().out
    assert (layout.run_dir / "report.json").read_bytes() == original
    rebuilt = json.loads((copy / "report.json").read_text())
    assert rebuilt["results"][0]["adapted_rand_error"] == 0.5
    assert rebuilt["layout"]["run_dir"] == str(copy.absolute())
    work = copy / "datasets" if inside else tmp_path / "data"
    assert rebuilt["layout"]["work"] == str(work)
    assert rebuilt["results"][0]["reconstruction"] == str(work / "r.tif")
    # moved: the old place is gone
    moved = tmp_path / "moved" / "r"
    shutil.move(layout.run_dir, moved)
    if inside:
        shutil.rmtree(tmp_path / "results")
    assert report.main([str(moved)]) == 0
    assert json.loads((moved / "report.json").read_text())["layout"]["run_dir"] == str(moved)
    # and the figures read a copied run where it is
    _, found = figures.read_report(copy)
    assert found.run_dir == copy.absolute() and found.work == work


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from conftest import assert_user_error_status

    layout = recorded_run(tmp_path)
    network = layout.run_dir / "T3_em_membrane_a"
    network.mkdir()
    (network / "options.json").write_text(json.dumps({"mode": "train", "max_steps": 3}))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert_user_error_status(report.main([str(network)]), capsys,
                             f"{network / 'options.json'} is not an experiment_8.sh options "
                             "record", f"{network} is not a run folder")
    assert_user_error_status(report.main([str(tmp_path / "nothing")]), capsys,
                             f"{tmp_path / 'nothing'} is not an experiment_8.sh run folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error_status(report.main([str(empty)]), capsys,
                             f"{empty} is not an experiment_8.sh run folder: cannot read "
                             f"{empty / 'options.json'}")
    assert sorted(p for p in tmp_path.rglob("*")) == sorted(before + [empty])


@pytest.mark.parametrize("module, args, fragment", [
    ("neuron3d.report", ["{tmp}/nothing"], "cannot read {tmp}/nothing/options.json"),
    ("neuron3d.figures", ["run", "{tmp}/nothing"], "no report.json in {tmp}/nothing"),
    ("neuron3d.figures", ["run", "{tmp}"], "is not an experiment_8.sh report"),
])
def test_bad_input_one_line_exit_2(tmp_path, module, args, fragment):
    (tmp_path / "report.json").write_text("{not json")
    args = [a.format(tmp=tmp_path) for a in args]
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert fragment.format(tmp=tmp_path) in lines[0]

"""report.json of an experiment_8.sh run: every score, baselines, steps, versions, options.

``experiment_8.sh`` writes it at the end of every run.  To rebuild it from a finished run's
files (e.g. after editing this module)::

    python -m neuron3d.report results/demo

The options and the commands in it are those the numbers came from: each step's record
(``results/<run>/.steps/<step>.json``) holds the command that produced its outputs, and a step
is only reused when that command equals the current one (see :mod:`neuron3d.experiment`).
A run folder copied or moved elsewhere is read where it is: the paths its records name inside
the run folder are re-rooted there (:meth:`neuron3d.recipe.Layout.rerooted`).

This module reads the run's data (:mod:`neuron3d.recipe`, :mod:`neuron3d.plan`), never the
runner, so that nothing imports back into :mod:`neuron3d.experiment`.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .cli import ArgumentParser, run_cli
from .io import read_binary, read_labels, write_file
from .metrics import evaluate
from .plan import plan, step_records, volume_shape
from .recipe import COMBOS, NETWORKS, TEST_QUADRANT, Layout, Options, agglomerates, runs
from .reconstruct import reconstruct

PACKAGES = ("numpy", "scipy", "scikit-image", "tifffile", "connected-components-3d", "fastremap",
            "waterz", "tensorflow", "keras", "neuroglancer")


def versions():
    """Python and the versions of the packages that compute the numbers."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def baselines(references, cytoplasm):
    """Scores of trivial segmentations of the same volume, for scale, against each reference.

    * ``all_one_object``: every voxel in one object.
    * ``slices_separate``: each 2D connected component of the predicted cytoplasm in each
      slice a separate object (what the reconstruction is without any overlap); only when
      ``cytoplasm`` (NN-4's prediction) is given, i.e. the run made the thesis' reconstruction.

    ``references`` is ``{name: truth volume}``; returns ``{name: {baseline: scores}}``.
    """
    shape = next(iter(references.values())).shape
    trivial = {"all_one_object": np.ones(shape, dtype=np.uint8)}
    if cytoplasm is not None:
        trivial["slices_separate"] = reconstruct(cytoplasm, np.zeros(
            (len(cytoplasm) - 1,) + cytoplasm.shape[1:], bool))
    return {name: {key: evaluate(truth, segmentation) for key, segmentation in trivial.items()}
            for name, truth in references.items()}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _row(method, key, sources, reconstruction, scores_file):
    """A result row: the scores against the evaluation volume at the top level (as the thesis
    reports them), against the ground-truth labels under ``labels_scores``, small objects."""
    from .agglomerate import small_objects

    scores = _read_json(scores_file)
    return {"method": method, "key": key, **sources, "reconstruction": str(reconstruction),
            **scores, "small": small_objects(read_labels(reconstruction))}


def results(layout, options, sweep=None):
    """One row per scored reconstruction of c: the thesis' path first, then agglomeration
    (``sweep``: the threshold sweep on d, whose choice it used)."""
    rows = []
    if runs(options["method"], "thesis"):
        for cyto, over in COMBOS[options["paths"]]:
            rows.append(_row("thesis", f"{cyto}_{over}",
                             {"cytoplasm": NETWORKS[cyto].title, "overlap": NETWORKS[over].title},
                             layout.reconstruction(cyto, over), layout.scores(cyto, over)))
    if runs(options["method"], "affinities"):
        rows.append({**_row("agglomerate", "affinities", {"affinities": NETWORKS["nn6"].title},
                            layout.agglomerated, layout.agglomerated_scores),
                     "merge_threshold": sweep["chosen"]})
    if runs(options["method"], "agglomerate"):
        rows.append({**_row("agglomerate", "agglomerate",
                            {"membrane": NETWORKS["nn3"].title, "overlap": NETWORKS["nn5"].title},
                            layout.agglomerated, layout.agglomerated_scores),
                     "merge_threshold": sweep["chosen"]})
    return rows


#: Predicted images are foreground where their value is at least half of 255.
HALF = 128
#: Tolerances (pixels) of the membranes' boundary F1.
BOUNDARY_TOLERANCES = (1, 2)


def prediction_quality(predicted, true, membrane=False):
    """Pixel precision/recall/F1 of a predicted image stack at 0.5 against the ground truth's
    0/255 images; for membranes also the boundary scores with 1 and 2 pixels of tolerance.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        (z, y, x) uint8 images (0..255); ``true`` is 0/255.
    membrane : bool
        Add ``boundary_<t>px`` entries (:func:`neuron3d.metrics.boundary_scores`).
    """
    from .metrics import boundary_scores, pixel_scores

    predicted, true = np.asarray(predicted) >= HALF, np.asarray(true) >= HALF
    quality = pixel_scores(predicted, true)
    if membrane:
        for tolerance in BOUNDARY_TOLERANCES:
            quality[f"boundary_{tolerance}px"] = boundary_scores(predicted, true, tolerance)
    return quality


def networks(layout, steps):
    """For each trained network: its trainer options (threads, determinism...) and the quality
    of its predictions on every quadrant it predicted, against that quadrant's ground-truth
    images."""
    from .io import read_stack

    found = {}
    for step in steps:
        if step.name.startswith("train_"):
            key = step.name.removeprefix("train_")
            options_file = layout.network(key) / "options.json"
            if options_file.exists():
                training = layout.network(key) / "training.json"
                found[key] = {"title": NETWORKS[key].title, "folder": str(layout.network(key)),
                              "trainer_options": _read_json(options_file),
                              "training": _read_json(training) if training.exists() else None,
                              "quality": {}}
        elif step.name.startswith("predict_nn6_"):
            q = step.name.removeprefix("predict_nn6_")
            if "nn6" in found and layout.affinities_predicted(q).exists():
                from .affinity import affinity_quality, read_affinities

                found["nn6"]["quality"][q] = affinity_quality(
                    read_affinities(layout.affinities_predicted(q)),
                    read_labels(layout.quadrant_tif("label", q)))
        elif step.name.startswith("predict_"):
            key, q = step.name.removeprefix("predict_").rsplit("_", 1)
            images = layout.prediction(key, q) / "images"
            if key in found and images.is_dir():
                target = NETWORKS[key].target
                found[key]["quality"][q] = prediction_quality(
                    read_stack(images, channel=0), read_stack(layout.images(target, q), channel=0),
                    membrane=target == "membrane")
    if "calibrate_nn3" in {s.name for s in steps} and "nn3" in found \
            and layout.calibration.exists():
        # NN-3 calibrated on d: the quality of the membranes everything downstream reads
        calibration = _read_json(layout.calibration)
        found["nn3"]["calibration"] = {
            k: calibration.get(k) for k in ("level", "threshold", "criterion", "f1",
                                            "f1_at_half", "input_dir", "truth")}
        found["nn3"]["quality_calibrated"] = {
            q: prediction_quality(read_stack(layout.membrane_predicted(q)),
                                  read_stack(layout.images("membrane", q), channel=0),
                                  membrane=True)
            for q in found["nn3"]["quality"] if layout.membrane_predicted(q).exists()}
    return found


def build_report(layout, record, steps, records, ran, total_seconds=None):
    """The report of a finished run.

    Parameters
    ----------
    layout : neuron3d.recipe.Layout
    record : dict
        ``{"options": ..., "layout": ...}`` as :func:`neuron3d.recipe.options_record`.
    steps : list of neuron3d.plan.Step
        The run's plan.
    records : dict
        {step name: its record} (command, input and output hashes, seconds).
    ran : list of str
        The steps run by the latest invocation (the others were reused).
    total_seconds : float or None
        Wall time of the latest invocation.
    """
    options = record["options"]
    sweep = _read_json(layout.sweep) if agglomerates(options["method"]) else None
    rows = results(layout, options, sweep)
    base = baselines({"evaluation": read_labels(layout.evaluation()),
                      "labels": read_labels(layout.quadrant_tif("label", TEST_QUADRANT))},
                     read_binary(layout.cytoplasm_predicted("nn4"))
                     if runs(options["method"], "thesis") else None)
    timings = {name: r.get("seconds") for name, r in records.items()}
    report = {
        "run": layout.run,
        "results": rows,
        "baselines": base["evaluation"],
        "baselines_labels": base["labels"],
        "options": options,
        "layout": record["layout"],
        "commands": {s.name: s.shell() for s in steps},
        "steps_run": list(ran),
        "steps_reused": [s.name for s in steps if s.name not in ran],
        "networks": networks(layout, steps),
        "timings_seconds": timings,
        "steps_seconds": round(sum(t for t in timings.values() if t), 1),
        "total_seconds": total_seconds,
        "versions": versions(),
    }
    if sweep is not None:
        report["agglomeration_sweep"] = sweep
    return report


def summary_line(report):
    """A few lines: each method's adapted Rand error against both references, and against the
    ground truth its VOI split / merge (bits) and object count (of the truth's); baselines."""
    lines = [f"{'adapted Rand error on c':<46} vs evaluation volume   vs ground truth   "
             "VOI split / merge   objects (true)"]
    sweep = report.get("agglomeration_sweep") or {}
    how = {"voi": ", by VOI", "rand": ", by Rand"}.get(sweep.get("criterion_name"), "")

    def voi_and_objects(truth):
        return (f"{truth['voi_split']:>9.3f} / {truth['voi_merge']:<6.3f} "
                f"{truth['predicted_objects']:>8} ({truth['true_objects']})")

    for row in report["results"]:
        name = (f"{'NN-6 affinities' if row['key'] == 'affinities' else 'agglomerate'} "
                f"(threshold {row['merge_threshold']:g}, chosen on d{how})"
                if row["method"] == "agglomerate" else f"thesis {row['key']}")
        lines.append(f"  {name:<44} {row['adapted_rand_error']:>20.4f}   "
                     f"{row['labels_scores']['adapted_rand_error']:>15.4f}   "
                     f"{voi_and_objects(row['labels_scores'])}")
    for key in report["baselines"]:
        lines.append(f"  {'baseline: ' + key.replace('_', ' '):<44} "
                     f"{report['baselines'][key]['adapted_rand_error']:>20.4f}   "
                     f"{report['baselines_labels'][key]['adapted_rand_error']:>15.4f}")
    return "\n".join(lines)


def read_run(run_dir):
    """(options record, Options, Layout) of the experiment_8.sh run folder ``run_dir``, its
    layout re-rooted at ``run_dir`` (a copied or moved run is read where it is).

    Raises
    ------
    FileNotFoundError, ValueError
        Naming ``run_dir``, when it is not a run folder: no ``options.json``, or one that is
        not an experiment_8.sh options record (a network's ``options.json``, say).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not an experiment_8.sh run folder (no such "
                                f"folder): cannot read {run_dir / 'options.json'}")
    try:
        record = _read_json(run_dir / "options.json")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{run_dir} is not an experiment_8.sh run folder: {exc}"
                                ) from None
    try:
        layout = Layout.from_dict(record["layout"]).rerooted(run_dir)
        # a run from before --criterion chose by the adapted Rand error
        options = Options(**{"criterion": "rand", **record["options"],
                             "shape": tuple(record["options"]["shape"])
                             if record["options"]["shape"] else None})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{run_dir / 'options.json'} is not an experiment_8.sh options "
                         f"record ({exc}): {run_dir} is not a run folder") from None
    return {**record, "layout": layout.as_dict()}, options, layout


def rebuild(run_dir):
    """Rebuild ``report.json`` of the finished run in ``run_dir`` from its files; returns
    (report, path).  The report is that folder's, written there, wherever the run was made."""
    record, options, layout = read_run(run_dir)
    steps = plan(options, layout, volume_shape(options, layout))
    records = step_records(layout, steps)
    old = _read_json(layout.report) if layout.report.exists() else {}
    report = build_report(layout, record, steps, records, old.get("steps_run", []),
                          old.get("total_seconds"))
    return report, write_file(layout.report, json.dumps(report, indent=2) + "\n")


def build_parser():
    p = ArgumentParser(prog="python -m neuron3d.report",
                       description="Rebuild report.json of a finished experiment_8.sh run.")
    p.add_argument("run_dir", help="results/<run> of experiment_8.sh")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        report, path = rebuild(args.run_dir)
        print(summary_line(report))
        print(f"wrote {path}")

    return run_cli("neuron3d.report", body)


if __name__ == "__main__":
    raise SystemExit(main())

"""report.json for an experiment_8.sh run: every metric, baselines, timings, versions, options.

    python -m neuron3d.report --run_dir results/demo --datasets datasets/demo --run demo
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .io import read_binary, read_labels, write_file
from .metrics import evaluate
from .reconstruct import reconstruct

SOURCES = {"nn1": "NN-1 (EM -> cytoplasm)", "nn4": "NN-3 -> NN-4 (membrane -> cytoplasm)",
           "nn2": "NN-2 (EM pair -> overlap)", "nn5": "NN-3 -> NN-5 (membrane pair -> overlap)"}
PACKAGES = ("numpy", "scipy", "scikit-image", "tifffile", "connected-components-3d", "fastremap",
            "tensorflow", "keras", "neuroglancer")


def versions():
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def baselines(truth, cytoplasm):
    """Scores of trivial segmentations of the same volume, for scale.

    * ``all_one_object``: every voxel in one object.
    * ``slices_separate``: each 2D connected component of the predicted cytoplasm in each
      slice a separate object (what the reconstruction is without any overlap).
    """
    one = np.ones(truth.shape, dtype=np.uint8)
    flat = reconstruct(cytoplasm, np.zeros((len(cytoplasm) - 1,) + cytoplasm.shape[1:], bool))
    return {"all_one_object": evaluate(truth, one), "slices_separate": evaluate(truth, flat)}


def read_timings(path):
    timings = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, seconds = line.partition("\t")
            if name:
                timings[name] = int(seconds)  # the latest run of a step wins
    return timings


def build_report(run_dir, datasets, run, options="", total_seconds=None):
    run_dir, datasets = Path(run_dir), Path(datasets)
    rows = []
    for scores_file in sorted(run_dir.glob("scores_*_*.json")):
        cyto, over = scores_file.stem.split("_")[1:3]
        scores = json.loads(scores_file.read_text())
        rows.append({"cytoplasm": SOURCES.get(cyto, cyto), "overlap": SOURCES.get(over, over),
                     "key": f"{cyto}_{over}", **scores})
    rows.sort(key=lambda r: r["key"] != "nn4_nn5")  # the thesis path first
    truth = read_labels(datasets / "evaluate_c.tif")
    cytoplasm = read_binary(datasets / "cytoplasm_predicted_c.tif")
    parsed = dict(item.split("=", 1) for item in options.split() if "=" in item)
    parsed["raw"] = options
    timings = read_timings(run_dir / "timings.tsv")
    return {
        "run": run,
        "results": rows,
        "baselines": baselines(truth, cytoplasm),
        "timings_seconds": timings,
        "steps_seconds": sum(timings.values()),  # over all (resumed) invocations
        "total_seconds": total_seconds,  # wall time of the latest invocation
        "versions": versions(),
        "options": parsed,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write report.json for an experiment_8.sh run.")
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--options", default="")
    parser.add_argument("--total_seconds", type=int)
    args = parser.parse_args(argv)
    report = build_report(args.run_dir, args.datasets, args.run, args.options, args.total_seconds)
    path = write_file(Path(args.run_dir) / "report.json", json.dumps(report, indent=2) + "\n")
    main_row = report["results"][0] if report["results"] else {}
    base = report["baselines"]
    print(f"report: adapted Rand error {main_row.get('adapted_rand_error', float('nan')):.4f} "
          f"(baselines: all one object {base['all_one_object']['adapted_rand_error']:.4f}, "
          f"slices separate {base['slices_separate']['adapted_rand_error']:.4f}); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""evaluate3D.py: score a reconstruction against the ground truth.

Prints the thesis' block (splits, merges, adjusted Rand index, foreground recall
and precision), then the field's standard scores: SNEMI3D adapted Rand error with
its precision and recall, variation of information (bits) and object counts.
"""

from __future__ import annotations

import csv
import json
import sys
from io import StringIO
from pathlib import Path

from neuron3d import io
from neuron3d.cli import ArgumentParser, run_cli
from neuron3d.metrics import evaluate


def build_parser():
    parser = ArgumentParser(prog="evaluate3D.py", description=__doc__.splitlines()[0])
    parser.add_argument("--predicted", required=True, help="predicted label stack (.tif or folder)")
    parser.add_argument("--true", required=True, help="ground-truth label stack (.tif or folder)")
    parser.add_argument("--output", help="also write every number to FILE.json or FILE.csv")
    parser.add_argument("--min_overlap", type=int, default=10,
                        help="ignore contingency entries of this many voxels or fewer for "
                             "splits/merges (default 10, the thesis' constant)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="accepted for compatibility with the thesis' script, which parsed "
                             "and never used it; it is ignored and changes no result")
    return parser


def format_report(scores):
    """The thesis' block followed by the standard scores, as printed text."""
    return "\n".join([
        "Evaluation results:",
        "",
        f"Splits                   = {scores['splits']}",
        f"Merges                   = {scores['merges']}",
        f"Adjusted Rand Index      = {scores['adjusted_rand_index']:.5f}",
        f"Recall                   = {scores['recall']:.5f}",
        f"Precision                = {scores['precision']:.5f}",
        "",
        "Standard scores:",
        "",
        f"Adapted Rand error       = {scores['adapted_rand_error']:.5f}"
        "   (SNEMI3D; lower is better)",
        f"  Rand precision         = {scores['adapted_rand_precision']:.5f}",
        f"  Rand recall            = {scores['adapted_rand_recall']:.5f}",
        f"VOI split                = {scores['voi_split']:.5f} bits",
        f"VOI merge                = {scores['voi_merge']:.5f} bits",
        f"True objects             = {scores['true_objects']}",
        f"Predicted objects        = {scores['predicted_objects']}",
    ])


def write_scores(path, record):
    """Write ``record`` to .json or .csv atomically."""
    if Path(path).suffix.lower() == ".json":
        text = json.dumps(record, indent=2) + "\n"
    else:
        buffer = StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["key", "value"])
        for key, value in record.items():
            writer.writerow([key, json.dumps(value) if isinstance(value, list) else value])
        text = buffer.getvalue()
    io.write_file(path, text)


def check_output_path(output):
    path = Path(output)
    if path.suffix.lower() not in (".json", ".csv"):
        raise ValueError(f"--output must end in .json or .csv, got {output}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder for --output does not exist: {path.parent}")
    if path.is_dir():
        raise ValueError(f"--output is an existing folder: {output}")


def run(args):
    if args.output:
        check_output_path(args.output)
    if args.min_overlap < 0:
        raise ValueError(f"--min_overlap must be >= 0, got {args.min_overlap}")
    if args.threshold is not None:
        print("evaluate3D.py: --threshold is ignored (the thesis' script never used it)",
              file=sys.stderr)
    pred = io.read_labels(args.predicted, allow_integral_float=True)
    true = io.read_labels(args.true, allow_integral_float=True)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: predicted {args.predicted} is {pred.shape}, "
                         f"true {args.true} is {true.shape}")
    scores = evaluate(true, pred, args.min_overlap)
    print(format_report(scores))
    if args.output:
        record = {"predicted": str(args.predicted), "true": str(args.true),
                  "shape": list(pred.shape), "min_overlap": args.min_overlap, **scores}
        write_scores(args.output, record)
        print(f"\nwrote {args.output}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("evaluate3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

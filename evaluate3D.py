"""evaluate3D.py: score a reconstruction against the ground truth.

Prints the thesis' block (splits, merges, adjusted Rand index, foreground recall
and precision), then the field's standard scores: SNEMI3D adapted Rand error with
its precision and recall, variation of information (bits) and object counts.

The thesis scores against the evaluation volume (--true evaluate_c.tif: membranes
are background 0); the field scores against the ground-truth labels.  With
--labels label_c.tif both are computed and printed, one block each; --output then
holds the --true scores at the top level (as without --labels) and the --labels
scores under "labels_scores".
"""

from __future__ import annotations

import csv
import json
import sys
from io import StringIO
from pathlib import Path

from neuron3d import blockwise, io
from neuron3d.cli import ArgumentParser, run_cli
from neuron3d.metrics import check_min_overlap, evaluate_references, scores_from_table


def build_parser():
    parser = ArgumentParser(prog="evaluate3D.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 2)[2], either_spelling=True)
    parser.add_argument("--predicted", required=True, help="predicted label stack (.tif or folder)")
    parser.add_argument("--true", required=True,
                        help="reference label stack (.tif or folder); the thesis used the "
                             "evaluation volume, e.g. datasets/evaluate_c.tif")
    parser.add_argument("--labels", metavar="LABELS",
                        help="optional second reference: the ground-truth labels, e.g. "
                             "datasets/label_c.tif; scored and printed after --true, written "
                             "under \"labels_scores\" in --output")
    parser.add_argument("--output", help="also write every number to FILE.json or FILE.csv")
    parser.add_argument("--min_overlap", type=int, default=10,
                        help="ignore contingency entries of this many voxels or fewer for "
                             "splits/merges, >= 0 (default 10, the thesis' constant)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="accepted for compatibility with the thesis' script, which parsed "
                             "and never used it; it is ignored and changes no result")
    group = blockwise.add_arguments(parser, chunks=False)
    group.add_argument("--chunks", type=int, nargs=3, metavar=("Z", "Y", "X"),
                       help="with --scheduler: the blocks scored (default: --true's chunks)")
    return parser


def format_report(scores, title="Evaluation results:"):
    """The thesis' block followed by the standard scores, as printed text."""
    return "\n".join([
        title,
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


def score(predicted, true, labels=None, min_overlap=10):
    """Read the volumes, score ``predicted`` against ``true`` (and ``labels``).

    Parameters
    ----------
    predicted, true : str or Path
        Label stacks (.tif or folder of slice files) of equal shape.
    labels : str or Path, optional
        A second reference (the ground-truth labels) of the same shape.
    min_overlap : int
        Passed to :func:`neuron3d.metrics.evaluate`.

    Returns
    -------
    dict
        The record written by ``--output``: ``predicted``, ``true``, ``shape``,
        ``min_overlap`` and the scores against ``true`` at the top level; with
        ``labels``, also ``labels`` (the path) and ``labels_scores`` (a dict of
        the same score keys against it).

    Raises
    ------
    ValueError, FileNotFoundError
        On unreadable or invalid stacks, different shapes or empty volumes,
        naming the file.
    """
    pred = io.read_labels(predicted, allow_integral_float=True, what="--predicted")
    references = {"true": (io.read_labels(true, allow_integral_float=True, what="--true"), true)}
    if labels is not None:
        references["labels"] = (io.read_labels(labels, allow_integral_float=True,
                                               what="--labels"), labels)
    scores = evaluate_references(pred, references, min_overlap, predicted)
    return _record(predicted, true, labels, pred.shape, min_overlap, scores)


def score_blockwise(client, predicted, true, labels=None, min_overlap=10, chunks=None):
    """:func:`score` of .zarr stores on dask: contingency tables per block, summed; the same
    record, every number equal to the in-memory one."""
    references = {"true": true} if labels is None else {"true": true, "labels": labels}
    scores = {key: scores_from_table(blockwise.contingency_table(client, path, predicted, chunks),
                                     min_overlap) for key, path in references.items()}
    from neuron3d.zarrio import open_array

    return _record(predicted, true, labels, open_array(predicted).shape, min_overlap, scores)


def _record(predicted, true, labels, shape, min_overlap, scores):
    record = {"predicted": str(predicted), "true": str(true), "shape": list(shape),
              "min_overlap": min_overlap, **scores["true"]}
    if labels is not None:
        record["labels"] = str(labels)
        record["labels_scores"] = scores["labels"]
    return record


def _flat(record, prefix=""):
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def write_scores(path, record):
    """Write ``record`` to .json or .csv atomically (nested keys as ``outer.inner`` in CSV)."""
    if Path(path).suffix.lower() == ".json":
        text = json.dumps(record, indent=2) + "\n"
    else:
        buffer = StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["key", "value"])
        for key, value in _flat(record):
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
    io.check_outputs_apart({"--predicted": args.predicted, "--true": args.true,
                            "--labels": args.labels}, {"--output": args.output})
    check_min_overlap(args.min_overlap, "--min_overlap")
    if args.chunks is not None and args.scheduler is None:
        raise ValueError("--chunks sets the blocks scored with --scheduler; without it the "
                         "volumes are scored whole (drop --chunks)")
    if args.threshold is not None:
        print("evaluate3D.py: --threshold is ignored (the thesis' script never used it)",
              file=sys.stderr)
    blockwise.check_arguments(args, {"--predicted": args.predicted, "--true": args.true,
                                     "--labels": args.labels}, {})
    if args.scheduler is None:
        record = score(args.predicted, args.true, args.labels, args.min_overlap)
    else:
        blockwise.check_same_shape(args.predicted, {"--true": args.true, "--labels": args.labels}
                                   if args.labels else {"--true": args.true})
        with blockwise.engine(args.scheduler, args.memory_limit) as client:
            record = score_blockwise(client, args.predicted, args.true, args.labels,
                                     args.min_overlap, args.chunks)
    if args.labels is None:
        print(format_report(record))
    else:
        print(format_report(record, f"Evaluation results against --true {args.true}:"))
        print()
        print(format_report(record["labels_scores"],
                            f"Evaluation results against --labels {args.labels}:"))
    if args.output:
        write_scores(args.output, record)
        print(f"\nwrote {args.output}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("evaluate3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

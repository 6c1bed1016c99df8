"""Calibrate a membrane network on a held-out quadrant: the threshold of its best pixel F1 there
becomes its output's 0.5.

Everything downstream of NN-3 reads its membranes at 0.5: the per-network quality, NN-4's and
NN-5's inputs, the agglomeration's fragments.  An L2-trained network outputs a posterior mean,
which a thin, uncertain membrane keeps below 0.5, so its F1 peaks at a lower threshold.  The
threshold is a parameter, so it is chosen where nothing is scored: ``experiment_8.sh
--recipe real`` predicts quadrant d, finds the 8-bit level ``T`` whose binarisation (value >=
``T``) has d's best F1 against d's ground-truth membranes, and maps every predicted membrane
image (b, c and d alike) monotonically so that ``T`` lands on 128 (0.5)::

    python -m neuron3d.calibrate --choose --input_dir results/run/P3_em_membrane_d/images/ \\
        --truth datasets/membrane_d --output results/run/calibration_nn3.json
    python -m neuron3d.calibrate --apply results/run/calibration_nn3.json \\
        --input_dir results/run/P3_em_membrane_c/images/ \\
        --output_dir datasets/membrane_predicted_c.tif

The map is piecewise linear, [0, T) onto [0, 128) and [T, 255] onto [128, 255], so the
output stays graded and keeps its order (the agglomeration orders merges by it); T = 128 is the
identity.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from .cli import ArgumentParser, check_output_file, run_cli

#: The 8-bit level of 0.5: a pixel is membrane when its value is >= HALF.
HALF = 128


def f1_by_level(predicted, true):
    """Pixel precision, recall and F1 of ``predicted >= T`` against ``true`` for every level T.

    Parameters
    ----------
    predicted : numpy.ndarray
        uint8 values (any shape).
    true : numpy.ndarray
        Boolean (or 0/255) ground truth of the same shape.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``: float arrays of 256 entries, entry T for the mask
        ``predicted >= T`` (T = 0 marks everything), with :func:`neuron3d.metrics.pixel_scores`'
        conventions for empty masks.
    """
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.shape != true.shape:
        raise ValueError(f"prediction has shape {predicted.shape}, ground truth {true.shape}")
    if predicted.dtype != np.uint8:
        raise ValueError(f"prediction must be 8-bit (uint8), got {predicted.dtype}")
    truth = true.astype(bool) if true.dtype == bool else true >= HALF
    hits_at = np.bincount(predicted[truth], minlength=256)
    all_at = np.bincount(predicted.ravel(), minlength=256)
    # counts of values >= T, for T = 0..255
    hits = np.cumsum(hits_at[::-1])[::-1].astype(np.float64)
    marked = np.cumsum(all_at[::-1])[::-1].astype(np.float64)
    positives = float(np.count_nonzero(truth))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(marked > 0, hits / marked, float(positives == 0))
        recall = hits / positives if positives else (marked == 0).astype(np.float64)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def choose_level(predicted, true):
    """The level T in 1..255 with the best F1 of ``predicted >= T`` (the one nearest
    :data:`HALF` on ties), and the scores by level (see :func:`f1_by_level`)."""
    scores = f1_by_level(predicted, true)
    levels = np.arange(1, 256)
    best = scores["f1"][1:].max()
    candidates = levels[scores["f1"][1:] == best]
    level = int(candidates[np.argmin(np.abs(candidates - HALF))])
    return level, scores


def lookup_table(level):
    """The 256-entry uint8 map of :func:`remap`: [0, level) onto [0, 128), [level, 255] onto
    [128, 255], each linearly (rounded down); non-decreasing, identity at ``level`` = 128."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) \
            or not 1 <= level <= 255:
        raise ValueError(f"the calibration level must be an integer in 1..255, got {level!r}")
    v = np.arange(256, dtype=np.int64)
    low = v * HALF // level
    high = HALF + (v - level) * (255 - HALF) // max(255 - level, 1)
    return np.where(v < level, low, np.minimum(high, 255)).astype(np.uint8)


def remap(predicted, level):
    """``predicted`` (uint8) mapped so that ``value >= level`` iff ``result >= 128``."""
    predicted = np.asarray(predicted)
    if predicted.dtype != np.uint8:
        raise ValueError(f"prediction must be 8-bit (uint8), got {predicted.dtype}")
    return lookup_table(level)[predicted]


def read_calibration(path):
    """The level of a calibration file written by ``--choose``."""
    from pathlib import Path

    try:
        record = json.loads(Path(path).read_text())
        level = record["level"]
    except FileNotFoundError:
        raise FileNotFoundError(f"--apply: no calibration file {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--apply: {path} is not a calibration file written by --choose "
                         f"({type(exc).__name__}: {exc})") from None
    try:
        lookup_table(level)
    except ValueError:
        raise ValueError(f"--apply: {path} has level {level!r}, expected an integer in "
                         "1..255") from None
    return level


def check_truth(truth, source="--truth"):
    """The ground-truth membrane images, refused unless they can be calibrated against.

    Parameters
    ----------
    truth : numpy.ndarray
        Boolean, or 0/255 images (a pixel is membrane where its value is >= :data:`HALF`).
    source : str
        Where they came from (the file), for the message.

    Raises
    ------
    ValueError
        Naming ``source``: values that are not finite numbers (NaN, inf), or no membrane
        pixel at all (every level would tie: nothing to choose by).
    """
    truth = np.asarray(truth)
    if not (truth.dtype == bool or np.issubdtype(truth.dtype, np.number)):
        raise ValueError(f"--truth {source} must be membrane images (0/255), got dtype "
                         f"{truth.dtype}")
    if np.issubdtype(truth.dtype, np.floating) and not np.isfinite(truth).all():
        bad = int(np.count_nonzero(~np.isfinite(truth)))
        raise ValueError(f"--truth {source} has {bad} of {truth.size} values that are not "
                         "finite numbers (NaN or inf); expected membrane images (0/255)")
    marked = truth if truth.dtype == bool else truth >= HALF
    if not marked.any():
        raise ValueError(f"--truth {source} has no membrane pixel (no value >= {HALF}); "
                         "expected membrane images (0/255)")
    return truth


def build_parser():
    p = ArgumentParser(prog="python -m neuron3d.calibrate", description=__doc__.splitlines()[0],
                       either_spelling=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--choose", action="store_true",
                      help="choose the level on --input_dir against --truth; write --output")
    what.add_argument("--apply", metavar="CALIBRATION.json",
                      help="map --input_dir with the level of this file; write --output_dir")
    p.add_argument("--input_dir", required=True,
                   help="predicted membranes (folder of slices or .tif; the first channel)")
    p.add_argument("--truth", help="--choose: the ground-truth membrane images (0/255)")
    p.add_argument("--output", help="--choose: the JSON file for the level and its scores")
    p.add_argument("--output_dir", help="--apply: the calibrated stack (.tif)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        from .io import check_outputs_apart, read_stack, write_file, write_tif

        mode = "--choose" if args.choose else "--apply"
        needed = ("truth", "output") if args.choose else ("output_dir",)
        for flag in needed:
            if not getattr(args, flag):
                raise ValueError(f"{mode} needs --{flag}")
        other, does = (("--apply", "reads --truth, writes --output") if args.choose
                       else ("--choose", "writes --output_dir"))
        for flag in ("output_dir",) if args.choose else ("truth", "output"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} goes with {other}, not {mode} ({mode} {does})")
        output = ("--output", args.output) if args.choose else ("--output_dir", args.output_dir)
        check_outputs_apart({"--input_dir": args.input_dir, "--truth": args.truth,
                             "--apply": args.apply}, dict([output]))
        if args.apply and not str(args.output_dir).lower().endswith((".tif", ".tiff")):
            raise ValueError(f"--output_dir must be a .tif file, got {args.output_dir}")
        check_output_file(output[1], output[0], "a JSON file" if args.choose else "a .tif file")
        level = read_calibration(args.apply) if args.apply else None
        predicted = read_stack(args.input_dir, channel=0)
        if predicted.dtype != np.uint8:
            raise ValueError(f"{args.input_dir}: predictions must be 8-bit, got "
                             f"{predicted.dtype}")
        if args.choose:
            truth = check_truth(read_stack(args.truth, channel=0), args.truth)
            if truth.shape != predicted.shape:
                raise ValueError(f"--truth {args.truth} has shape {truth.shape}, --input_dir "
                                 f"{args.input_dir} {predicted.shape}")
            level, scores = choose_level(predicted, truth)
            record = {"level": level, "threshold": level / 255,
                      "criterion": "best pixel F1 of value >= level against --truth "
                                   "(the level nearest 128 on ties)",
                      "f1": float(scores["f1"][level]),
                      "f1_at_half": float(scores["f1"][HALF]),
                      "precision": float(scores["precision"][level]),
                      "recall": float(scores["recall"][level]),
                      "input_dir": str(args.input_dir), "truth": str(args.truth),
                      "f1_by_level": [round(float(f), 6) for f in scores["f1"]]}
            write_file(args.output, json.dumps(record, indent=1) + "\n")
            print(f"calibrate: level {level} (threshold {level / 255:.3f}): F1 "
                  f"{record['f1']:.4f} against {record['f1_at_half']:.4f} at 0.5; wrote "
                  f"{args.output}")
            return 0
        write_tif(args.output_dir, remap(predicted, level))
        print(f"calibrate: {args.input_dir} mapped with level {level} to {args.output_dir}",
              file=sys.stderr)
        return 0

    return run_cli("neuron3d.calibrate", body)


if __name__ == "__main__":
    raise SystemExit(main())

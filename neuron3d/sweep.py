"""Choose the agglomeration's merge threshold on a held-out quadrant.

The threshold of ``reconstruct3D.py --method agglomerate`` is a parameter of the method, and a
parameter chosen by looking at the test quadrant is not a result.  ``experiment_8.sh`` predicts
membranes and overlaps on quadrant d, which no network trains on and nothing is scored on,
agglomerates it at every threshold of a grid, scores each result against d's ground-truth labels
(and, for the thesis' view, d's evaluation volume), and keeps the threshold with the lowest
adapted Rand error against the ground truth (the lower threshold on a tie).  Only that number
is then applied to quadrant c::

    python -m neuron3d.sweep --input_dir_membrane datasets/membrane_predicted_d.tif \\
        --input_dir_overlap results/demo/P5_membrane_overlap_d/images/ \\
        --labels datasets/label_d.tif --evaluation datasets/evaluate_d.tif \\
        --output results/demo/sweep_agglomerate_d.json

``--input_affinities`` sweeps the agglomeration of NN-6's predicted affinities instead
(:func:`sweep_affinities`; ``experiment_8.sh --method affinities``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .affinity import FRAGMENTS
from .agglomerate import SCORINGS
from .cli import ArgumentParser, check_output_file, run_cli
from .thresholds import CRITERIA, DEFAULT_CRITERION, THRESHOLDS, check_criterion, choose


def _read_sweep(path):
    """A sweep file's JSON object.

    Raises
    ------
    ValueError
        Naming the file, when it is missing or unreadable, not JSON or not an object.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the sweep file {path}: {exc.strerror or exc}") from None
    try:
        sweep = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not a sweep file of python -m neuron3d.sweep ({exc})"
                         ) from None
    if not isinstance(sweep, dict):
        raise ValueError(f"{path} is not a sweep file of python -m neuron3d.sweep (not a JSON "
                         "object)")
    return sweep


def chosen_threshold(path):
    """The merge threshold a sweep file chose, as ``experiment_8.sh`` applies it to c.

    Parameters
    ----------
    path : str or os.PathLike
        A JSON file written by ``python -m neuron3d.sweep --output``.

    Returns
    -------
    float
        Its ``chosen`` threshold, rounded as ``format(chosen, "g")`` writes it (six significant
        digits: the text the run's agglomeration step passed as ``--merge_threshold`` before
        ``--merge_threshold_from`` existed), in [0, 1].

    Raises
    ------
    ValueError
        Naming the file, when it is missing or unreadable, not JSON, has no numeric
        ``chosen`` entry, or that entry is not in [0, 1].
    """
    sweep = _read_sweep(path)
    try:
        chosen = sweep["chosen"]
        if isinstance(chosen, bool) or not isinstance(chosen, (int, float)):
            raise TypeError(f"'chosen' is {chosen!r}, not a number")
        value = float(f"{chosen:g}")
    except (ValueError, KeyError, TypeError) as exc:
        why = "it has no 'chosen' threshold" if isinstance(exc, KeyError) else exc
        raise ValueError(f"{path} is not a sweep file of python -m neuron3d.sweep ({why})"
                         ) from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{path}: the chosen threshold must be in [0, 1], got {value:g}")
    return value


def swept_fragments(path):
    """The fragments a sweep file's threshold was chosen on: its ``fragments`` (``2d`` when
    it records none, as per-slice sweeps of membranes do).

    Raises
    ------
    ValueError
        Naming the file: see :func:`chosen_threshold`, or ``fragments`` is not a name.
    """
    fragments = _read_sweep(path).get("fragments", "2d")
    if not isinstance(fragments, str):
        raise ValueError(f"{path}: 'fragments' is {fragments!r}, not a name of fragments")
    return fragments


def agglomeration_fragments(value, sweep_file):
    """The fragments of an agglomeration of membranes (``reconstruct3D.py``) whose threshold
    may come from a sweep file: ``--fragments``, or, not given, those the sweep chose on, so
    that the threshold is applied to the fragments it was chosen for.

    Raises
    ------
    ValueError
        If ``--fragments`` names other fragments than the sweep file's, or fragments of the
        affinities only.
    """
    mode = fragments_option(value, affinities=False)
    if sweep_file is None:
        return mode
    swept = swept_fragments(sweep_file)
    from .agglomerate import FRAGMENT_MODES

    if swept not in FRAGMENT_MODES:  # a sweep of affinities (zwatershed)
        raise ValueError(f"--merge_threshold_from {sweep_file} chose its threshold on {swept} "
                         "fragments, which membranes are not cut into "
                         f"({' or '.join(FRAGMENT_MODES)})")
    if value is None:
        return swept
    if swept != mode:
        raise ValueError(f"--fragments {mode}, but --merge_threshold_from {sweep_file} chose "
                         f"its threshold on {swept} fragments: give --fragments {swept} or "
                         "leave it out")
    return mode


def fragments_option(value, affinities):
    """The fragments a ``--fragments`` flag asks for (reconstruct3D.py, python -m
    neuron3d.sweep): not given, ``3d`` for affinities and ``2d`` for membranes.  Blockwise,
    ``3d`` is one 3-D watershed per block of ``--chunks`` slices
    (:func:`neuron3d.blockwise.agglomerate.block_fragments`).

    Raises
    ------
    ValueError
        For membranes: a mode of the affinities only (zwatershed).
    """
    if affinities:
        return "3d" if value is None else value
    if value is None:
        return "2d"
    from .agglomerate import FRAGMENT_MODES

    if value not in FRAGMENT_MODES:
        raise ValueError(f"--fragments {value} is for --input_affinities; membranes are cut "
                         f"{' or '.join(FRAGMENT_MODES)}")
    return value


def sweep(membrane, overlap, labels, evaluation=None, thresholds=THRESHOLDS, scoring="median",
          sources=("membrane", "overlap", "labels", "evaluation"), criterion=DEFAULT_CRITERION,
          fragments="2d"):
    """Agglomerate at every threshold and score each result.

    Parameters
    ----------
    membrane, overlap : numpy.ndarray
        As :func:`neuron3d.agglomerate.agglomerate` takes them.
    labels : numpy.ndarray
        (z, y, x) ground-truth labels of the same quadrant.
    evaluation : numpy.ndarray or None
        Its evaluation volume (the thesis' reference), scored too when given.
    thresholds : sequence of float
        The grid, each in [0, 1].
    scoring : str
        The boundary statistic (see :data:`neuron3d.agglomerate.SCORINGS`).
    sources : tuple of str
        File names of the four inputs, for messages.
    criterion : str
        How the threshold is chosen (:data:`neuron3d.thresholds.CRITERIA`).
    fragments : {"2d", "3d"}
        How the membrane is cut (:data:`neuron3d.agglomerate.FRAGMENT_MODES`).

    Raises
    ------
    ValueError
        Before any agglomeration, naming the files: when ``labels`` or ``evaluation`` has
        another shape than ``membrane``, or the inputs are not what
        :func:`neuron3d.agglomerate.agglomerate` takes.

    Returns
    -------
    dict
        ``rows`` (per threshold: ``threshold``, ``labels`` scores, ``evaluation`` scores or
        None, ``small`` objects), ``chosen`` threshold, ``criterion``, ``scoring``; with 3-D
        fragments ``fragments`` too.
    """
    from .agglomerate import agglomerate

    check_criterion(criterion)
    _check_shapes(np.shape(membrane), labels, evaluation, sources[2:], sources[0], "membranes")
    volumes = agglomerate(membrane, overlap, list(thresholds), scoring=scoring,
                          sources=tuple(sources[:2]), fragment_mode=fragments)
    result = _scored(volumes, thresholds, labels, evaluation, sources[0], sources[2:], scoring,
                     criterion)
    return result if fragments == "2d" else {**result, "fragments": fragments}


def sweep_affinities(affs, labels, evaluation=None, thresholds=THRESHOLDS, scoring="median",
                     fragments="3d", sources=("affinities", "labels", "evaluation"),
                     criterion=DEFAULT_CRITERION):
    """:func:`sweep` of the agglomeration of predicted affinities
    (:func:`neuron3d.affinity.agglomerate_affinities`).

    Parameters
    ----------
    affs : numpy.ndarray
        (3, z, y, x) affinities (see :func:`neuron3d.affinity.read_affinities`).
    fragments : str
        How fragments are cut (:data:`neuron3d.affinity.FRAGMENTS`).
    labels, evaluation, thresholds, scoring, criterion :
        As in :func:`sweep`; ``sources`` names the affinities, labels and evaluation volume.

    Returns
    -------
    dict
        As :func:`sweep`, with ``fragments``.
    """
    from .affinity import agglomerate_affinities

    check_criterion(criterion)
    _check_shapes(np.shape(affs)[1:], labels, evaluation, sources[1:], sources[0], "affinities")
    volumes = agglomerate_affinities(affs, list(thresholds), scoring, fragments,
                                     source=sources[0])
    result = _scored(volumes, thresholds, labels, evaluation, sources[0], sources[1:],
                     scoring, criterion)
    return {**result, "fragments": fragments}


def _check_shapes(shape, labels, evaluation, sources, source, what):
    for kind, volume, name in (("labels", labels, sources[0]),
                               ("evaluation volume", evaluation, sources[1])):
        if volume is not None and np.shape(volume) != tuple(shape):
            raise ValueError(f"shapes differ: the {kind} {name} is {np.shape(volume)}, the "
                             f"{what} {source} are {tuple(shape)}")


def _scored(volumes, thresholds, labels, evaluation, source, truth_sources, scoring, criterion):
    """The rows and the choice of :func:`sweep` from one volume per threshold (``source``: what
    was agglomerated, ``truth_sources``: the labels and the evaluation volume, for messages)."""
    from .agglomerate import small_objects
    from .metrics import evaluate

    rows = []
    for threshold, volume in zip(thresholds, volumes):
        made = f"(the agglomeration of {source} at {float(threshold):g})"
        rows.append({
            "threshold": float(threshold),
            "labels": evaluate(labels, volume, true_source=truth_sources[0],
                             pred_source=made),
            "evaluation": None if evaluation is None
            else evaluate(evaluation, volume, true_source=truth_sources[1], pred_source=made),
            "small": small_objects(volume),
        })
    return {"rows": rows, "chosen": choose(rows, criterion), "scoring": scoring,
            "criterion": CRITERIA[criterion], "criterion_name": criterion}


def build_parser():
    p = ArgumentParser(prog="python -m neuron3d.sweep", description=__doc__.splitlines()[0],
                       either_spelling=True)
    p.add_argument("--input_dir_membrane",
                   help="membrane probabilities of the held-out quadrant (folder or .tif)")
    p.add_argument("--input_dir_overlap",
                   help="overlap probabilities of the held-out quadrant, not thinned")
    p.add_argument("--input_affinities", metavar="STACK",
                   help="instead of membranes and overlaps: its predicted affinities, a "
                        "(z, y, x, 3) stack (python -m imagetranslation.affinity --mode test)")
    p.add_argument("--fragments", choices=FRAGMENTS,
                   help="how fragments are cut: of membranes 2d (a watershed per slice, the "
                        "default) or 3d (one of the volume, for isotropic data; blockwise "
                        "one per block of --chunks Z slices, at least 64 advised); of "
                        "--input_affinities also zwatershed (default 3d)")
    p.add_argument("--labels", required=True, help="its ground-truth labels (.tif)")
    p.add_argument("--evaluation", help="its evaluation volume (.tif), also scored")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                   help="the grid (default 0.05, 0.10, ..., 0.95)")
    p.add_argument("--scoring", default="median", help="boundary statistic (default median)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default=DEFAULT_CRITERION,
                   help="how the threshold is chosen: voi = lowest VOI split + merge against "
                   "the labels (ties: adapted Rand error), rand = lowest adapted Rand error "
                   "(default %(default)s; neuron3d/thresholds.py)")
    p.add_argument("--output", required=True, help="JSON file for the table and the choice")
    from . import blockwise

    blockwise.add_arguments(p)
    return p


def _blockwise(args, inputs):
    """Whether the sweep runs blockwise: with --scheduler, or when every input is a .zarr
    store (then on the serial executor)."""
    from . import zarrio

    if args.scheduler is not None:
        return True
    return all(zarrio.is_zarr(p) for p in inputs.values() if p is not None)


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        from .agglomerate import check_thresholds
        from .io import check_outputs_apart, read_labels, read_stack, write_file

        inputs = {flag: getattr(args, flag.removeprefix("--")) for flag in (
            "--input_dir_membrane", "--input_dir_overlap", "--input_affinities", "--labels",
            "--evaluation")}
        pair = args.input_dir_membrane is not None and args.input_dir_overlap is not None
        if args.input_affinities is not None and (args.input_dir_membrane or
                                                  args.input_dir_overlap):
            raise ValueError("--input_affinities and --input_dir_membrane/--input_dir_overlap "
                             "are exclusive")
        if args.input_affinities is None and not pair:
            raise ValueError("give --input_dir_membrane and --input_dir_overlap, or "
                             "--input_affinities")
        check_outputs_apart(inputs, {"--output": args.output})
        check_output_file(args.output, "--output", "a JSON file")
        thresholds = check_thresholds(args.thresholds, "--thresholds")
        if args.scoring not in SCORINGS:
            raise ValueError(f"--scoring must be one of {', '.join(SCORINGS)}, got {args.scoring}")
        from . import blockwise

        blockwise.check_arguments(args, inputs, {})
        in_blocks = _blockwise(args, inputs)
        fragments = fragments_option(args.fragments, args.input_affinities is not None)
        if args.chunks is not None and args.scheduler is None and not in_blocks:
            raise ValueError("--chunks sets the blocks of a blockwise sweep (--scheduler, or "
                             ".zarr inputs)")
        if args.input_affinities is not None:
            if args.scheduler is not None or args.chunks is not None:
                raise ValueError("--input_affinities sweeps in memory (no --scheduler / "
                                 "--chunks yet)")
            from .affinity import read_affinities

            affs = read_affinities(args.input_affinities, "--input_affinities")
            labels = read_labels(args.labels)
            evaluation = read_labels(args.evaluation) if args.evaluation else None
            result = sweep_affinities(affs, labels, evaluation, thresholds, args.scoring,
                                      fragments, (args.input_affinities, args.labels,
                                                  args.evaluation), args.criterion)
        elif in_blocks:
            from .blockwise.sweep import check_sweep_inputs

            check_sweep_inputs(args.input_dir_membrane, args.input_dir_overlap, args.labels,
                               args.evaluation)
            with blockwise.engine(args.scheduler, args.memory_limit) as client:
                result = blockwise.sweep_stores(
                    client, args.input_dir_membrane, args.input_dir_overlap, args.labels,
                    args.evaluation, thresholds, args.chunks, args.scoring, args.output,
                    criterion=args.criterion, fragments=fragments)
        else:
            membrane = read_stack(args.input_dir_membrane, channel=0)
            overlap = read_stack(args.input_dir_overlap, channel=0)
            labels = read_labels(args.labels)
            evaluation = read_labels(args.evaluation) if args.evaluation else None
            result = sweep(membrane, overlap, labels, evaluation, thresholds, args.scoring,
                           (args.input_dir_membrane, args.input_dir_overlap, args.labels,
                            args.evaluation), args.criterion, fragments)
        result["inputs"] = {k: getattr(args, k) for k in
                            ("input_dir_membrane", "input_dir_overlap", "labels", "evaluation")}
        if args.input_affinities is not None:
            result["inputs"]["input_affinities"] = args.input_affinities
        for row in result["rows"]:
            ev = row["evaluation"]
            scores = row["labels"]
            print(f"threshold {row['threshold']:.2f}: adapted Rand error "
                  f"{scores['adapted_rand_error']:.4f} (labels)"
                  + (f", {ev['adapted_rand_error']:.4f} (evaluation volume)" if ev else "")
                  + f", VOI {scores['voi_split']:.3f} / {scores['voi_merge']:.3f}, "
                  f"{row['small']['objects']} objects", file=sys.stderr)
        write_file(args.output, json.dumps(result, indent=1) + "\n")
        print(f"sweep: chose merge threshold {result['chosen']:g} "
              f"({result['criterion']}); wrote {args.output}")

    return run_cli("neuron3d.sweep", body)


if __name__ == "__main__":
    raise SystemExit(main())

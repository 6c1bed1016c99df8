"""Train and apply the learned agglomeration.

Train on a volume with ground truth that the test never sees (the held-out quadrant d), apply
to the test quadrant::

    python -m neuron3d.learned train --membrane datasets/membrane_predicted_d.tif \\
        --overlap results/demo/P5_membrane_overlap_d/images/ --labels datasets/label_d.tif \\
        --output results/demo/learned_d.json
    python -m neuron3d.learned apply --model results/demo/learned_d.json \\
        --membrane datasets/membrane_predicted_c.tif \\
        --overlap results/demo/P5_membrane_overlap_c/images/ --output datasets/learned_c.tif

``train`` writes the model as JSON (the feature set, the trees, the merge threshold chosen on
the training volume by cross-validation, the sweep behind it); ``apply`` merges at that
threshold unless ``--threshold`` says otherwise.  Outputs that are, contain or lie inside an
input are refused before anything is read; bad input is one line on stderr, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..agglomerate import FRAGMENT_MODES
from ..cli import ArgumentParser, check_output_dir, check_output_file, run_cli

PROG = "python -m neuron3d.learned"


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], either_spelling=True)
    commands = p.add_subparsers(dest="command", required=True, metavar="{train,apply}")

    def inputs(sub):
        sub.add_argument("--membrane", required=True,
                         help="membrane probabilities (.tif, folder of slice files or .zarr)")
        sub.add_argument("--overlap", required=True,
                         help="overlap probabilities between consecutive slices, not thinned "
                              "(N - 1 slices, or N with the last ignored)")
        sub.add_argument("--em", help="EM of the same volume: adds EM intensity features")
        sub.add_argument("--workers", type=int, help="threads for the fragments (default: all)")

    train = commands.add_parser("train", either_spelling=True, prog=f"{PROG} train",
                                help="fit the edge classifier on a volume with ground truth")
    inputs(train)
    train.add_argument("--labels", required=True, help="ground-truth labels of that volume")
    train.add_argument("--output", required=True, help="the model file to write (.json)")
    train.add_argument("--seed", type=int, default=0, help="the classifier's seed (default 0)")
    train.add_argument("--initial_threshold", type=float, default=None,
                       help="waterz threshold of the initial segments (default 0.2)")
    train.add_argument("--fragments", choices=FRAGMENT_MODES, default="2d",
                       help="the initial segments' watershed fragments: per slice (2d, the "
                            "default) or one 3-D watershed of the volume (3d); the model "
                            "records them and apply cuts the same")
    train.add_argument("--thresholds", type=float, nargs="+", default=None,
                       help="merge-probability grid to choose from (default 0.05 ... 0.95)")
    apply = commands.add_parser("apply", either_spelling=True, prog=f"{PROG} apply",
                                help="segment a volume with a trained model")
    apply.add_argument("--model", required=True, help="a model written by train (.json)")
    inputs(apply)
    apply.add_argument("--output", required=True, help="the label stack to write (.tif or .zarr)")
    apply.add_argument("--threshold", type=float, default=None,
                       help="merge-probability threshold (default: the model's, chosen on its "
                            "training volume)")
    return p


def _check_output_file(path, flag, suffixes):
    """Refuse an output that cannot be written as a file of one of ``suffixes``."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} must end in {' or '.join(suffixes)}, got {path}")
    if path.suffix.lower() == ".zarr":  # a store is a folder
        check_output_dir(path, flag)
    else:
        check_output_file(path, flag)


def _read(args, with_labels):
    """The inputs, shapes checked against the membrane stack (files named in messages)."""
    import numpy as np

    from ..agglomerate import check_inputs
    from ..io import read_labels, read_stack

    membrane = read_stack(args.membrane, channel=0, what="--membrane")
    overlap = read_stack(args.overlap, channel=0, what="--overlap")
    membrane, overlap = check_inputs(membrane, overlap, (args.membrane, args.overlap))
    em = None
    if args.em is not None:
        em = read_stack(args.em, channel=0, what="--em")
        if em.shape != membrane.shape:
            raise ValueError(f"shapes differ: --em {args.em} is {em.shape}, --membrane "
                             f"{args.membrane} is {membrane.shape}")
        if not (np.issubdtype(em.dtype, np.number) or em.dtype == bool):
            raise ValueError(f"--em {args.em} must be numeric, got dtype {em.dtype}")
    labels = None
    if with_labels:
        labels = read_labels(args.labels, what="--labels")
        if labels.shape != membrane.shape:
            raise ValueError(f"shapes differ: --labels {args.labels} is {labels.shape}, "
                             f"--membrane {args.membrane} is {membrane.shape}")
    return membrane, overlap, em, labels


def _train(args):
    from ..agglomerate import check_thresholds
    from ..io import check_outputs_apart
    from . import agglomerate as A
    from .classifier import save

    check_outputs_apart({"--membrane": args.membrane, "--overlap": args.overlap,
                         "--em": args.em, "--labels": args.labels}, {"--output": args.output})
    _check_output_file(args.output, "--output", (".json",))
    thresholds = check_thresholds(args.thresholds if args.thresholds is not None
                                  else A.THRESHOLDS, "--thresholds")
    initial = A.INITIAL_THRESHOLD if args.initial_threshold is None else args.initial_threshold
    check_thresholds([initial], "--initial_threshold")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    membrane, overlap, em, labels = _read(args, with_labels=True)
    model = A.train(membrane, overlap, labels, em, args.seed, initial, thresholds,
                    workers=args.workers, fragments=args.fragments)
    model["inputs"] = {k: getattr(args, k) for k in ("membrane", "overlap", "em", "labels")}
    save(args.output, model)
    best = next(r for r in model["sweep"] if r["threshold"] == model["threshold"])["labels"]
    print(f"learned: {model['training']['edges']} edges ({model['training']['positives']} "
          f"merge), threshold {model['threshold']:g} chosen by cross-validation (adapted Rand "
          f"error {best['adapted_rand_error']:.4f}, VOI {best['voi_split']:.3f} / "
          f"{best['voi_merge']:.3f}); wrote {args.output}")


def _apply(args):
    from ..agglomerate import check_thresholds
    from ..io import check_outputs_apart, write_stack
    from . import agglomerate as A
    from .classifier import check_features, load
    from .graph import feature_names

    check_outputs_apart({"--model": args.model, "--membrane": args.membrane,
                         "--overlap": args.overlap, "--em": args.em},
                        {"--output": args.output})
    _check_output_file(args.output, "--output", (".tif", ".tiff", ".zarr"))
    if args.threshold is not None:
        check_thresholds([args.threshold], "--threshold")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    model = load(args.model)
    check_features(model, feature_names(args.em is not None), f"--model {args.model}")
    threshold = model.get("threshold") if args.threshold is None else args.threshold
    if threshold is None:
        raise ValueError(f"--model {args.model} records no threshold: give --threshold")
    membrane, overlap, em, _ = _read(args, with_labels=False)
    (labels,) = A.apply(model, membrane, overlap, em, [threshold], args.workers)
    write_stack(args.output, labels)
    print(f"learned: {int(labels.max())} objects at merge threshold {threshold:g}; "
          f"wrote {args.output}", file=sys.stdout)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(f"{PROG} {args.command}",
                   lambda: _train(args) if args.command == "train" else _apply(args))


if __name__ == "__main__":
    raise SystemExit(main())

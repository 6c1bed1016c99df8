"""python -m imagetranslation.affinity: a 3D U-Net from EM to nearest-neighbour affinities.

--mode train: learns the z, y and x affinities of --input_labels from the EM stack --input_em
(TIFF, slice folder or .zarr) on random 3-D crops, for --minutes of wall time and/or
--max_steps; with --validation_em/--validation_labels it keeps the weights that cut edges best
on that volume (F1).  --checkpoint RUN (the --output_dir) resumes a run where it stopped.

--mode test: predicts the affinities of --input_em with the run in --checkpoint, tile by tile,
and writes them to --output as a (z, y, x, 3) uint8 TIFF (channels: z, y, x affinities, 255 =
same neuron as the voxel's predecessor along that axis), which ``reconstruct3D.py --method
agglomerate --input_affinities`` and ``neuron3d.sweep --input_affinities`` read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuron3d import io
from neuron3d.atomic import check_outputs_apart
from neuron3d.cli import ArgumentParser, run_cli

from .network import CONVS
from .train import PROG, Settings, check_volume, machine_choices

_DEFAULTS = Settings(max_steps=1)


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "test"], required=True)
    p.add_argument("--input_em", required=True, metavar="STACK", nargs="+",
                   help="EM stack (z, y, x): .tif, slice folder or .zarr; train: one or more")
    p.add_argument("--input_labels", metavar="STACK", nargs="+",
                   help="train: ground-truth labels of each --input_em (same shapes)")
    p.add_argument("--output_dir", metavar="DIR", help="train: the run folder")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="test: the trained run; train: resume this run (= --output_dir)")
    p.add_argument("--force", action="store_true",
                   help="train: start over in an --output_dir that holds a run")
    p.add_argument("--validation_em", metavar="STACK",
                   help="train: EM of a validation volume (the quadrant choices are made on)")
    p.add_argument("--validation_labels", metavar="STACK",
                   help="train: its ground-truth labels")
    p.add_argument("--output", metavar="FILE.tif", help="test: the affinity stack written")
    d = _DEFAULTS
    net = p.add_argument_group("network (fixed by the run; train only)")
    net.add_argument("--features", type=int, default=d.features,
                     help=f"channels of the finest level (default {d.features})")
    net.add_argument("--levels", type=int, default=d.levels,
                     help=f"resolution levels (default {d.levels})")
    net.add_argument("--no_z_pool", dest="z_pool", action="store_false",
                     help="pool in y and x only (anisotropic data)")
    net.add_argument("--fine_z", action="store_true",
                     help="3x3x3 convolutions at the finest level too (slower)")
    t = p.add_argument_group("training")
    t.add_argument("--crop", type=int, nargs=3, default=d.crop, metavar=("Z", "Y", "X"),
                   help=f"training crop (default {' '.join(map(str, d.crop))})")
    t.add_argument("--batch_size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr, help=f"Adam's learning rate ({d.lr:g})")
    t.add_argument("--max_steps", type=int, help="step budget")
    t.add_argument("--minutes", type=float, help="wall-time budget (all sessions of the run)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--no_augment", dest="augment", action="store_false",
                   help="no flips, transposes or intensity changes")
    t.add_argument("--no_balance", dest="balanced", action="store_false",
                   help="every edge weighs the same in the loss (default: cut and uncut edges "
                        "weigh half each, Lee et al. 2017's rebalancing)")
    t.add_argument("--validation_freq", type=int, default=d.validation_freq)
    t.add_argument("--validation_share", type=float, default=d.validation_share,
                   help="validation's share of the budget (default %(default)s)")
    t.add_argument("--save_freq", type=int, default=d.save_freq)
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels on fixed threads (train: bit-identical resume; "
                        "test: the same affinities on any machine's thread count)")
    t.add_argument("--threads", type=int, help="TensorFlow's thread pools (train and test)")
    t.add_argument("--mixed_precision", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16: bfloat16 arithmetic on float32 weights; off: float32; auto "
                        "(default): bf16 on a CPU with AMX (amx_bf16), unless --deterministic "
                        "or a GPU. A resumed run keeps its own")
    net.add_argument("--conv", choices=("auto", *CONVS), default="auto",
                     help="how the 3x3x3 convolutions run: stacked (a Conv2D over three slices "
                          "in channels), conv3d (Keras' Conv3D), or auto (default): conv3d on "
                          "a CPU with AMX or a GPU, stacked otherwise (documentation/"
                          "affinities.md). A resumed run keeps its own")
    q = p.add_argument_group("prediction (test)")
    q.add_argument("--tile", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="largest tile predicted at once (default 96 192 192)")
    q.add_argument("--margin", type=int, default=16, help="context around a tile (voxels)")
    return p


def _settings(args):
    names = [f for f in Settings.__dataclass_fields__]
    values = {n: getattr(args, n) for n in names if hasattr(args, n)}
    values["crop"] = tuple(values["crop"])
    values.update(machine_choices(args.mixed_precision, args.conv, args.deterministic))
    return Settings(**values)


def _auto_note(args, settings):
    """What ``auto`` chose on this machine (None when the user chose)."""
    said = [f"--{name} auto: {getattr(settings, name) or 'float32'}"
            for name in ("mixed_precision", "conv") if getattr(args, name) == "auto"]
    return f"{PROG}: {', '.join(said)} on this machine" if said else None


def _read_em(path, flag):
    stack = io.read_stack(path, what=flag)
    if stack.ndim != 3:
        raise ValueError(f"{flag} {path} must be a (z, y, x) EM stack, got shape {stack.shape}")
    return stack


def _read_pair(em_flag, em_path, labels_flag, labels_path, settings):
    em = _read_em(em_path, em_flag)
    labels = io.read_labels(labels_path, what=labels_flag)
    check_volume(em, labels, settings, (f"{em_flag} {em_path}", f"{labels_flag} {labels_path}"))
    return em, labels


def _train(args):
    from ..rundir import _holds_run, remove_run_files
    from .train import read_settings, train

    if args.output_dir is None:
        raise ValueError("--mode train needs --output_dir (the run folder)")
    out = Path(args.output_dir)
    resume = args.checkpoint is not None
    if resume and not io.same_path(args.checkpoint, out):
        raise ValueError(f"--checkpoint {args.checkpoint} resumes a run in place: it must be "
                         f"the --output_dir ({out})")
    if args.input_labels is None:
        raise ValueError("--mode train needs --input_labels (the ground truth of --input_em)")
    if (args.validation_em is None) != (args.validation_labels is None):
        raise ValueError("give both --validation_em and --validation_labels, or neither")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is an existing file, expected a folder")
    if _holds_run(out) and not resume and not args.force:
        raise ValueError(f"--output_dir {out} already holds a run: pass --checkpoint {out} "
                         "to resume it or --force to start over")
    if len(args.input_labels) != len(args.input_em):
        raise ValueError(f"{len(args.input_em)} --input_em stacks need as many --input_labels, "
                         f"got {len(args.input_labels)}")
    inputs = [(f"--input_em {p}", p) for p in args.input_em]
    inputs += [(f"--input_labels {p}", p) for p in args.input_labels]
    inputs += [("--validation_em", args.validation_em),
               ("--validation_labels", args.validation_labels)]
    check_outputs_apart(inputs, {"--output_dir": out})
    if resume:
        saved = read_settings(out)
        # the budget may grow on resume; everything else is the run's
        settings = Settings(**{**saved.record(), "crop": saved.crop,
                               "max_steps": args.max_steps or saved.max_steps,
                               "minutes": args.minutes or saved.minutes})
    else:
        settings = _settings(args)
    from ..runtime import configure_runtime

    configure_runtime(settings.deterministic, settings.threads)
    volumes = [_read_pair("--input_em", em, "--input_labels", labels, settings)
               for em, labels in zip(args.input_em, args.input_labels)]
    validation = None
    if args.validation_em is not None:
        validation = _read_pair("--validation_em", args.validation_em, "--validation_labels",
                                args.validation_labels, settings)
    if args.force and not resume:
        remove_run_files(out)
    note = None if resume else _auto_note(args, settings)
    if note:
        print(note, file=sys.stderr)
    train(settings, volumes, out, validation, resume=resume,
          log=lambda line: print(line, flush=True))


def _test(args):
    from .network import multiple
    from .predict import TILE, predict_volume, to_uint8
    from .train import load

    if args.checkpoint is None or args.output is None:
        raise ValueError("--mode test needs --checkpoint (a trained run) and --output FILE.tif")
    if not str(args.output).lower().endswith((".tif", ".tiff")):
        raise ValueError(f"--output {args.output} must be a .tif file")
    if len(args.input_em) != 1:
        raise ValueError(f"--mode test predicts one --input_em, got {len(args.input_em)}")
    source = args.input_em[0]
    check_outputs_apart({"--input_em": source, "--checkpoint": args.checkpoint},
                        {"--output": args.output})
    if args.margin < 0:
        raise ValueError(f"--margin must be >= 0, got {args.margin}")
    tile = tuple(args.tile) if args.tile else TILE
    if min(tile) < 1:
        raise ValueError(f"--tile must be three positive sizes, got {tile}")
    from ..runtime import configure_runtime

    configure_runtime(args.deterministic, args.threads)
    model, settings = load(args.checkpoint)
    em = _read_em(source, "--input_em")
    step = multiple(settings.levels, settings.z_pool)
    if em.shape[0] < 2:
        raise ValueError(f"--input_em {source} has {em.shape[0]} slice: a 3-D network "
                         "needs a (z, y, x) stack of several slices")
    affs = predict_volume(model, em, step, tile, args.margin)
    io.write_tif(args.output, to_uint8(affs))
    print(f"{PROG}: wrote the affinities of {source} "
          f"({' x '.join(map(str, em.shape))}) to {args.output}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _train(args) if args.mode == "train" else _test(args))


if __name__ == "__main__":
    sys.exit(main())

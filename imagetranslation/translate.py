"""translate.py: train, test or export a pix2pix image-to-image network (TensorFlow 2).

    python imagetranslation/translate.py --mode train --input_dir datasets/combined \\
        --output_dir results/T3_em_membrane_a --which_direction AtoB --Y_loss square \\
        --model pix2pix --generator resnet --fliplr --flipud --transpose \\
        --max_epochs 2000 --display_freq 500 --gan_weight 0
    python imagetranslation/translate.py --mode test --checkpoint results/T3_em_membrane_a \\
        --input_dir datasets/combined/ --output_dir results/P3_em_membrane_b

Training into a folder that already holds a run is refused: pass
``--checkpoint <that folder>`` to resume it or ``--force`` to start over.  Ctrl-C
saves a checkpoint at the current step, then exits with status 130; a killed
run resumes from its last checkpoint to the same weights as an uninterrupted
one.  ``--max_minutes M`` ends training at a wall-time budget (alone or with
--max_steps/--max_epochs, whichever comes first; per invocation, so a resumed
run gets M more minutes); ``training.json`` records the steps reached and why
training stopped.  ``--augment`` adds EM augmentations (stateless, like the
flips); ``--mode test --tta`` averages the predictions over the 8 flips and
transposes.  ``--generator highwaynet|densenet`` are the thesis trainer's
other generators; ``--restore generators --checkpoint DIR`` starts a new
training from another run's generator weights; ``--devices`` trains on several
GPUs (MirroredStrategy; the global ``--batch_size`` is split over them).
``--deterministic`` (with ``--threads N``, default 1) makes the numbers of a
seed the same on other machines; the run's ``options.json`` records the
TensorFlow settings in effect under ``"runtime"``.  Test and export refuse to
write into a training run's folder, and no command writes an output that is,
contains or lies inside one of its inputs.  Every flag is declared once, with its
type, default, range and help, in :class:`imagetranslation.config.Config`.  Bad
input: one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import sys

from imagetranslation import quiet_tensorflow_start
from imagetranslation.config import add_arguments, check_mode, from_arguments
from neuron3d.cli import ArgumentParser, run_cli

#: oneDNN instruction set used with --deterministic (unless ONEDNN_MAX_CPU_ISA is set).
DETERMINISTIC_CPU_ISA = "AVX2"


def build_parser():
    """translate.py's parser: a flag for every option of
    :class:`imagetranslation.config.Config`, in its order; the zarr flags of
    :func:`neuron3d.blockwise.add_arguments` and ``--tile`` in their own group."""
    p = ArgumentParser(prog="translate.py", description=__doc__.splitlines()[0])

    def zarr_group(parser):
        from neuron3d.blockwise import add_arguments as blockwise_arguments

        return blockwise_arguments(parser)  # --mode test of a .zarr EM volume into a .zarr

    return add_arguments(p, zarr_group)


def config_of(args):
    """The validated :class:`~imagetranslation.config.Config` of parsed arguments.

    Raises
    ------
    ValueError
        Naming the flag and its value (see
        :func:`imagetranslation.config.check_values`), or a flag the mode needs
        (:func:`imagetranslation.config.check_mode`).
    """
    config = from_arguments(args)
    check_mode(config)
    return config


def resolve(args):
    """The options of parsed arguments as a plain dict (:meth:`Config.record
    <imagetranslation.config.Config.record>` of :func:`config_of`), for callers that
    keep or serialise them; the trainer's functions take it or the Config."""
    return config_of(args).record()


def check_paths(config):
    """Refuse outputs that are, contain or lie inside an input of the command, before
    anything is read (:func:`neuron3d.io.check_outputs_apart`; see
    :func:`imagetranslation.rundir.paths_of`)."""
    from imagetranslation.rundir import check_inference_output, paths_of
    from neuron3d.io import check_outputs_apart

    zarr = config.mode == "test" and _zarr_test(config)
    if config.mode in ("test", "export") and not zarr:
        check_inference_output(config)  # its message says why a run's folder is refused
    check_outputs_apart(*paths_of(config, zarr=zarr))


def run(args):
    options = config_of(args)
    check_paths(options)
    if options.deterministic and "tensorflow" not in sys.modules:
        # oneDNN (TensorFlow's CPU convolutions and matrix products) picks its kernels by the
        # CPU's instruction set (AVX2, AVX-512, ...), and they round differently: cap it at
        # AVX2, which nearly every x86-64 machine has.  Read at start-up: a fresh process only.
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", DETERMINISTIC_CPU_ISA)
    with quiet_tensorflow_start():
        from imagetranslation import trainer

        trainer.device_summary()  # TensorFlow probes its devices here
    if args.mode == "train":
        trainer.train(options)
    elif args.mode == "test" and _zarr_test(options):
        _test_zarr(args, options)
    elif args.mode == "test":
        for flag in ("scheduler", "memory_limit", "chunks", "tile"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} is for --mode test of a .zarr --input_dir")
        trainer.test(options)
    else:
        trainer.export(options)


def _zarr_test(args):
    from neuron3d.zarrio import is_zarr

    return is_zarr(args.input_dir) or is_zarr(args.output_dir)


def _test_zarr(args, options):
    """--mode test of a .zarr EM volume (or consecutive pairs) into a .zarr store, slice chunk
    by slice chunk, on dask with --scheduler (see imagetranslation/tiled.py)."""
    from imagetranslation.tiled import predict_volume
    from neuron3d import blockwise
    from neuron3d.zarrio import is_zarr, open_array

    blockwise.check_arguments(args, {"--input_dir": args.input_dir},
                              {"--output_dir": args.output_dir})
    if not (is_zarr(args.input_dir) and is_zarr(args.output_dir)):
        raise ValueError("--mode test of a zarr volume reads --input_dir X.zarr and writes "
                         f"--output_dir Y.zarr, got {args.input_dir} and {args.output_dir}")
    if args.views:
        raise ValueError("--views is for --mode test of image folders (a .zarr volume is "
                         "predicted slice by slice in tiles)")
    open_array(args.input_dir, "--input_dir")  # before starting anything
    with blockwise.engine(args.scheduler, args.memory_limit) as client:  # None: serial
        shape = predict_volume(args.checkpoint, args.input_dir, args.output_dir, args.chunks,
                               args.tile, args.tta, client, weights=options.weights)
    print(f"translate.py: wrote {shape} predictions to {args.output_dir}", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("translate.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

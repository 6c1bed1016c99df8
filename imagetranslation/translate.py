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
write into a training run's folder.  Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import sys

from imagetranslation import quiet_tensorflow_start
from imagetranslation.data import AUGMENT_DEFAULTS
from imagetranslation.options import (
    AUGMENTATIONS,
    GENERATORS,
    LR_DECAYS,
    RESTORE,
    check_values,
    parse_augment,
)
from neuron3d.cli import ArgumentParser, run_cli

#: oneDNN instruction set used with --deterministic (unless ONEDNN_MAX_CPU_ISA is set).
DETERMINISTIC_CPU_ISA = "AVX2"


def build_parser():
    p = ArgumentParser(prog="translate.py", description=__doc__.splitlines()[0])
    p.add_argument("--mode", required=True, choices=["train", "test", "export"])
    p.add_argument("--input_dir", help="folder of combined A|B images (train, test)")
    p.add_argument("--output_dir", required=True, help="where outputs are written")
    p.add_argument("--checkpoint", help="training output folder to resume from (train) or "
                   "to load (test, export)")
    p.add_argument("--restore", choices=RESTORE, default="all",
                   help="train with --checkpoint: all = resume that run (default); generators = "
                        "start a new training (step 0, new optimizers) from its generator "
                        "weights, e.g. NN-4 from NN-3; both = from its generator and "
                        "discriminator weights. The generator options must match the "
                        "checkpoint's; --output_dir must be another folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--which_direction", choices=["AtoB", "BtoA"], default="AtoB")
    p.add_argument("--model", choices=["pix2pix"], default="pix2pix")
    p.add_argument("--generator", choices=GENERATORS, default="resnet",
                   help="resnet (the thesis'), unet, highwaynet or densenet (the thesis "
                        "trainer's others: the resnet's encoder and decoder around gated "
                        "residual units or densely connected blocks)")
    p.add_argument("--ngf", type=int, default=0,
                   help="generator filters in the first layer (0 = 64 for unet, 32 for the "
                        "others)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first layer")
    p.add_argument("--n_res_blocks", type=int, default=9, help="residual blocks (resnet)")
    p.add_argument("--u_depth", type=int, default=8, help="encoder depth (unet)")
    p.add_argument("--n_highway_units", type=int, default=9,
                   help="gated residual units (highwaynet)")
    p.add_argument("--n_dense_blocks", type=int, default=5, help="dense blocks (densenet)")
    p.add_argument("--n_dense_layers", type=int, default=5,
                   help="densely connected layers in each block (densenet)")
    p.add_argument("--encoder_activation", action="store_true",
                   help="batch norm + ReLU after the three encoder convs of resnet, "
                        "highwaynet, densenet (the thesis' trainer had none)")
    p.add_argument("--Y_loss", choices=["hinge", "square", "dice", "logistic"], default="hinge",
                   help="regression loss: hinge = L1, square = L2 (default hinge)")
    p.add_argument("--pos_weight", type=float, default=1.0,
                   help="weight of the target's positive (white) pixels in the hinge, square "
                        "or logistic --Y_loss, against 1 for the negative ones (default 1): "
                        "class balance for a minority such as membranes. Trained with weight "
                        "W, an output of 0.5 (the threshold everything downstream uses) "
                        "stands for a posterior probability of 1 / (1 + W) of white (square "
                        "and logistic), so W > 1 marks a pixel white on less evidence; the "
                        "outputs stay graded")
    p.add_argument("--loss", choices=["log", "square"], default="log", help="GAN loss")
    p.add_argument("--gan_weight", type=float, default=1.0,
                   help="weight of the GAN loss; 0 trains without a discriminator")
    p.add_argument("--classic_weight", type=float, default=100.0, help="weight of Y_loss")
    for flag, what in (("fliplr", "left-right flips"), ("flipud", "up-down flips"),
                       ("transpose", "transposes")):
        p.add_argument(f"--{flag}", action="store_true", default=True,
                       help=f"random {what} in training (default on)")
        p.add_argument(f"--no_{flag}", dest=flag, action="store_false", help=f"no {what}")
    p.add_argument("--augment", default="",
                   help="comma list of training augmentations, applied in this order: "
                        f"{', '.join(AUGMENTATIONS)} (default none). elastic warps input and "
                        "target alike; the others change the input only; misalign and "
                        "missing_slice change the red or the green channel of two-slice inputs")
    d = AUGMENT_DEFAULTS
    p.add_argument("--brightness", type=float, default=d["brightness"],
                   help="intensity: brightness offset uniform in [-B, B] on the 0..1 scale "
                        "(default %(default)s)")
    p.add_argument("--contrast", type=float, default=d["contrast"],
                   help="intensity: contrast factor uniform in [1 - C, 1 + C] about mid-gray "
                        "(default %(default)s)")
    p.add_argument("--gamma", type=float, default=d["gamma"],
                   help="intensity: gamma log-uniform in [1/G, G] (default %(default)s)")
    p.add_argument("--blur_sigma", type=float, default=d["blur_sigma"],
                   help="blur: Gaussian sigma uniform in [0, S] pixels (default %(default)s)")
    p.add_argument("--elastic_pixels", type=float, default=d["elastic_pixels"],
                   help="elastic: largest displacement in pixels (default %(default)s)")
    p.add_argument("--elastic_spacing", type=int, default=d["elastic_spacing"],
                   help="elastic: pixels between the random displacements, smooth between "
                        "(default %(default)s)")
    p.add_argument("--missing_slice_p", type=float, default=d["missing_slice_p"],
                   help="missing_slice: probability of blanking the red or the green channel "
                        "(default %(default)s)")
    p.add_argument("--misalign_p", type=float, default=d["misalign_p"],
                   help="misalign: probability of shifting the red or the green channel "
                        "(default %(default)s)")
    p.add_argument("--misalign_pixels", type=int, default=d["misalign_pixels"],
                   help="misalign: largest shift in y and in x, whole pixels "
                        "(default %(default)s)")
    p.add_argument("--scale_size", type=int, default=286,
                   help="resize images up (area) until the shorter side is this")
    p.add_argument("--crop_size", type=int, default=256, help="random crop size for training")
    p.add_argument("--max_epochs", type=int, help="training epochs (passes over the images)")
    p.add_argument("--max_steps", type=int, help="training steps (overrides --max_epochs)")
    p.add_argument("--max_minutes", type=float,
                   help="wall-time budget of this invocation's training loop in minutes (> 0): "
                        "stops after the first step that reaches it, checkpoints, and records "
                        "the steps reached in training.json; with --max_steps/--max_epochs "
                        "whichever comes first, alone the budget ends training")
    p.add_argument("--batch_size", type=int, default=1,
                   help="images per training step (the global batch: split evenly over the "
                        "devices of --devices)")
    p.add_argument("--devices", default="auto",
                   help="training devices: auto = every GPU if more than one is visible (else "
                        "TensorFlow's default single device; with a --batch_size that is not a "
                        "multiple of the GPU count, as many GPUs as divide it), all = every "
                        "GPU, cpu = the CPU only, or a comma list such as GPU:0,GPU:1. On "
                        "several devices (tf.distribute.MirroredStrategy) each step splits the "
                        "--batch_size images evenly over them, batch norm uses the statistics "
                        "of the whole batch and the learning rate is unchanged: a step equals "
                        "one step on one device with the same batch, up to rounding")
    p.add_argument("--lr", type=float, default=0.0002, help="Adam learning rate")
    p.add_argument("--validation_dir",
                   help="train: combined images held out from training (as --input_dir); "
                        "every --validation_freq steps and at the end the generator predicts "
                        "them whole (as --mode test does) and its --Y_loss on them is "
                        "recorded; the weights of the lowest go to <output_dir>/best, which "
                        "--mode test uses (early stopping by checkpoint choice)")
    p.add_argument("--validation_freq", type=int, default=250,
                   help="validate every N steps (default %(default)s)")
    p.add_argument("--weights", default="best", metavar="best|last",
                   help="test/export: the validated best weights of the run when it has them "
                        "(default), or its last checkpoint")
    p.add_argument("--lr_decay", default="none", metavar="|".join(LR_DECAYS),
                   help="learning-rate schedule over the run: none (constant --lr, the "
                        "default), cosine or linear from --lr down to 0 at its end. The end is "
                        "--max_steps/--max_epochs or the --max_minutes budget, whichever comes "
                        "first (by steps done or minutes spent, whichever is further along); a "
                        "budget run resumed with --checkpoint starts its schedule again")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="train: also keep an exponential moving average of the generator's "
                        "weights (decay in [0, 1), e.g. 0.999; the decay of step t is "
                        "min(DECAY, (1+t)/(10+t))), which validation scores and --mode "
                        "test/export use. 0 (the default): off")
    p.add_argument("--summary_freq", type=int, default=100, help="TensorBoard scalars every N")
    p.add_argument("--progress_freq", type=int, default=50, help="progress line every N steps")
    p.add_argument("--display_freq", type=int, default=0,
                   help="save input/output/target images every N steps (0 = never)")
    p.add_argument("--save_freq", type=int, default=5000, help="checkpoint every N steps")
    p.add_argument("--image_height", type=int, help="test: resize inputs to this height")
    p.add_argument("--image_width", type=int, help="test: resize inputs to this width")
    p.add_argument("--output_filetype", choices=["png", "jpeg"], default="png")
    p.add_argument("--tta", action="store_true",
                   help="test: average the predictions over the 8 flips and transposes (each "
                        "inverted first); 8 times the prediction time")
    p.add_argument("--mixed_precision", choices=["bf16", "fp16"], help="mixed-precision training")
    p.add_argument("--xla", action="store_true", help="compile the training step with XLA")
    p.add_argument("--force", action="store_true",
                   help="train: start over in an --output_dir that holds a run (its checkpoints, "
                        "events, options.json and display images are removed first)")
    p.add_argument("--deterministic", action="store_true",
                   help="the same numbers for the same seed on other machines: TensorFlow op "
                        "determinism, fixed thread counts (--threads, default 1) and oneDNN's "
                        "CPU kernels capped at AVX2 (ONEDNN_MAX_CPU_ISA)")
    p.add_argument("--threads", type=int,
                   help="TensorFlow intra- and inter-op threads (default: one per core; "
                        "1 with --deterministic)")
    from neuron3d.blockwise import add_arguments

    big = add_arguments(p)  # --mode test of a .zarr EM volume into a .zarr store
    big.add_argument("--tile", type=int, metavar="N",
                     help="test of a .zarr volume: predict N x N tiles (a multiple of the "
                          "generator's stride) grown by its receptive radius, centres kept "
                          "(default: whole slices)")
    return p


def resolve(args):
    """Validated options dict from parsed arguments.

    Raises
    ------
    ValueError
        Naming the flag and its value (see
        :func:`imagetranslation.options.check_values`), or a flag the mode needs.
    """
    options = vars(args).copy()
    if options["ngf"] == 0:
        options["ngf"] = 64 if options["generator"] == "unet" else 32
    check_values(options)
    options["augment"] = parse_augment(options["augment"])
    if args.mode in ("train", "test") and not args.input_dir:
        raise ValueError(f"--mode {args.mode} needs --input_dir")
    if args.mode == "train":
        if args.max_epochs is None and args.max_steps is None and args.max_minutes is None:
            raise ValueError("--mode train needs --max_epochs or --max_steps, or a time "
                             "budget --max_minutes")
        if args.restore != "all" and not args.checkpoint:
            raise ValueError(f"--restore {args.restore} needs --checkpoint (the training output "
                             "folder whose weights the new training starts from)")
    elif not args.checkpoint:
        raise ValueError(f"--mode {args.mode} needs --checkpoint (a training output folder)")
    return options


def run(args):
    options = resolve(args)
    if options["deterministic"] and "tensorflow" not in sys.modules:
        # oneDNN (TensorFlow's CPU convolutions and matrix products) picks its kernels by the
        # CPU's instruction set (AVX2, AVX-512, ...), and they round differently: cap it at
        # AVX2, which nearly every x86-64 machine has.  Read at start-up: a fresh process only.
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", DETERMINISTIC_CPU_ISA)
    with quiet_tensorflow_start():
        from imagetranslation import trainer

        trainer.device_summary()  # TensorFlow probes its devices here
    if args.mode == "train":
        trainer.train(options)
    elif args.mode == "test" and _zarr_test(args):
        _test_zarr(args)
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


def _test_zarr(args):
    """--mode test of a .zarr EM volume (or consecutive pairs) into a .zarr store, slice chunk
    by slice chunk, on dask with --scheduler (see imagetranslation/tiled.py)."""
    from contextlib import nullcontext

    from imagetranslation.tiled import predict_volume
    from neuron3d import blockwise
    from neuron3d.zarrio import is_zarr, open_array

    blockwise.check_arguments(args, {"--input_dir": args.input_dir},
                              {"--output_dir": args.output_dir})
    if not (is_zarr(args.input_dir) and is_zarr(args.output_dir)):
        raise ValueError("--mode test of a zarr volume reads --input_dir X.zarr and writes "
                         f"--output_dir Y.zarr, got {args.input_dir} and {args.output_dir}")
    open_array(args.input_dir, "--input_dir")  # before starting anything
    engine = nullcontext() if args.scheduler is None else \
        blockwise.engine(args.scheduler, args.memory_limit)
    with engine as client:
        shape = predict_volume(args.checkpoint, args.input_dir, args.output_dir, args.chunks,
                               args.tile, args.tta, client)
    print(f"translate.py: wrote {shape} predictions to {args.output_dir}", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("translate.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

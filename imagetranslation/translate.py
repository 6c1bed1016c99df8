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
one.  ``--deterministic`` (with ``--threads N``, default 1) makes the numbers
of a seed the same on other machines; the run's ``options.json`` records the
TensorFlow settings in effect under ``"runtime"``.  Test and export refuse to
write into a training run's folder.  Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import sys

from imagetranslation import quiet_tensorflow_start
from imagetranslation.options import check_values
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--which_direction", choices=["AtoB", "BtoA"], default="AtoB")
    p.add_argument("--model", choices=["pix2pix"], default="pix2pix")
    p.add_argument("--generator", choices=["resnet", "unet"], default="resnet")
    p.add_argument("--ngf", type=int, default=0,
                   help="generator filters in the first layer (0 = 32 for resnet, 64 for unet)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first layer")
    p.add_argument("--n_res_blocks", type=int, default=9, help="residual blocks (resnet)")
    p.add_argument("--u_depth", type=int, default=8, help="encoder depth (unet)")
    p.add_argument("--encoder_activation", action="store_true",
                   help="batch norm + ReLU after the resnet's three encoder convs (the thesis' "
                        "trainer had none)")
    p.add_argument("--Y_loss", choices=["hinge", "square", "dice", "logistic"], default="hinge",
                   help="regression loss: hinge = L1, square = L2 (default hinge)")
    p.add_argument("--loss", choices=["log", "square"], default="log", help="GAN loss")
    p.add_argument("--gan_weight", type=float, default=1.0,
                   help="weight of the GAN loss; 0 trains without a discriminator")
    p.add_argument("--classic_weight", type=float, default=100.0, help="weight of Y_loss")
    for flag, what in (("fliplr", "left-right flips"), ("flipud", "up-down flips"),
                       ("transpose", "transposes")):
        p.add_argument(f"--{flag}", action="store_true", default=True,
                       help=f"random {what} in training (default on)")
        p.add_argument(f"--no_{flag}", dest=flag, action="store_false", help=f"no {what}")
    p.add_argument("--scale_size", type=int, default=286,
                   help="resize images up (area) until the shorter side is this")
    p.add_argument("--crop_size", type=int, default=256, help="random crop size for training")
    p.add_argument("--max_epochs", type=int, help="training epochs (passes over the images)")
    p.add_argument("--max_steps", type=int, help="training steps (overrides --max_epochs)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.0002, help="Adam learning rate")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--summary_freq", type=int, default=100, help="TensorBoard scalars every N")
    p.add_argument("--progress_freq", type=int, default=50, help="progress line every N steps")
    p.add_argument("--display_freq", type=int, default=0,
                   help="save input/output/target images every N steps (0 = never)")
    p.add_argument("--save_freq", type=int, default=5000, help="checkpoint every N steps")
    p.add_argument("--image_height", type=int, help="test: resize inputs to this height")
    p.add_argument("--image_width", type=int, help="test: resize inputs to this width")
    p.add_argument("--output_filetype", choices=["png", "jpeg"], default="png")
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
        options["ngf"] = 32 if options["generator"] == "resnet" else 64
    check_values(options)
    if args.mode in ("train", "test") and not args.input_dir:
        raise ValueError(f"--mode {args.mode} needs --input_dir")
    if args.mode == "train":
        if args.max_epochs is None and args.max_steps is None:
            raise ValueError("--mode train needs --max_epochs or --max_steps")
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
    elif args.mode == "test":
        trainer.test(options)
    else:
        trainer.export(options)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("translate.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())

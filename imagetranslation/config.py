"""The trainer's one configuration: every option of translate.py, declared once.

:class:`Config` is a frozen dataclass.  Each field is one option: its type, its
default, its valid range or choices, whether it shapes the weights, and its
flag's help, all in the field's declaration (:func:`option`).  From it come

* translate.py's argparse parser (:func:`add_arguments`, in declaration order),
* the reading of a run's ``options.json`` (:func:`saved_config`), with the same
  checks (:func:`check_values`; messages name ``--flag`` for the command line and
  ``key in file`` for a file),
* :data:`ARCH_KEYS`, :data:`NETWORK_KEYS`, :data:`GENERATOR_SHAPE_KEYS`,
  :data:`GENERATOR_DEFAULTS` and :data:`AUGMENT_DEFAULTS`.

A :class:`Config` is also a read-only mapping of its options (``config["ngf"]``,
``dict(config)``) for callers that pass option dicts; the trainer reads its
attributes.  :meth:`Config.record` is the ``options.json`` record, with the keys
and the format the trainer always wrote, so that older runs keep loading.
This module imports no TensorFlow, so bad input fails fast.  Its length is the
schema's: one declaration, with its help, for each of the ~60 options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from .options import (  # noqa: F401 (the names of the options' values, re-exported)
    AUGMENTATIONS,
    DEVICE_WORDS,
    GENERATORS,
    LR_DECAYS,
    MAX_BLUR_SIGMA,
    MODES,
    RESTORE,
    _is_int,
    _is_real,
    _name,
    parse_augment,
    parse_devices,
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """The valid values of a number: ``low``/``high`` bounds (``None``: none), whether
    they are included, and whether the value must be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = False

    def ok(self, value):
        if self.finite and not math.isfinite(value):
            return False
        if self.low is not None and not (value > self.low if self.low_open
                                         else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open
                                     else value <= self.high)

    def describe(self, kind):
        if kind is int:
            return f"an integer >= {self.low:g}"
        if self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"


def option(default, help=None, *, kind=None, rule=None, choices=None, weights=False,
           arch=False, shapes=(), flag=True, group=None, negatable=False, parser_choices=False,
           metavar=None, required=False, record=True):
    """A :class:`Config` field: the declaration of one option.

    Parameters
    ----------
    default
        Its default (the flag's too).
    help : str or None
        The flag's help (``%(default)s`` allowed, as argparse expands it).
    kind : type
        ``int``, ``float``, ``str``, ``bool`` (what argparse converts to), or None
        for strings that are not converted.
    rule : Rule or None
        The valid range of a number.
    choices : tuple or None
        The valid values (``None`` always allowed for an option whose default is None).
    weights : bool
        Whether it shapes the weights (what a checkpoint holds): a resumed run keeps the
        checkpoint's value (:data:`NETWORK_KEYS`).
    arch : bool
        Whether ``--mode test``/``export`` take it from the checkpoint (:data:`ARCH_KEYS`).
    shapes : tuple of str
        The generators whose weights it shapes besides ``ngf`` (:data:`GENERATOR_SHAPE_KEYS`).
    flag : bool or str
        Whether translate.py has a flag for it; ``"external"``: the flag is added by
        :func:`neuron3d.blockwise.add_arguments`.
    group : str or None
        ``"zarr"``: the flag goes into the group of those zarr flags.
    negatable : bool
        A ``--X`` on switch (default on) with a ``--no_X`` off switch.
    parser_choices : bool
        argparse checks the choices (a usage error) before :func:`check_values` does.
    metavar, required
        As for argparse.
    record : bool or str
        Whether it is in the options.json record; ``"if_set"``: only when not None.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "kind": kind, "rule": rule, "choices": choices, "weights": weights,
        "arch": arch, "shapes": shapes, "flag": flag, "group": group, "negatable": negatable,
        "parser_choices": parser_choices, "metavar": metavar, "required": required,
        "record": record})


_POSITIVE, _NON_NEGATIVE = Rule(1), Rule(0)
_FINITE_NON_NEGATIVE, _FINITE_POSITIVE = Rule(0, finite=True), Rule(0, low_open=True,
                                                                     finite=True)
_UNIT, _UNIT_OPEN = Rule(0, 1), Rule(0, 1, high_open=True)
_SHARE = Rule(0, 1, low_open=True)
_FLIPS = {"fliplr": "left-right flips", "flipud": "up-down flips", "transpose": "transposes"}


@dataclasses.dataclass(frozen=True)
class Config(Mapping):
    """translate.py's options, typed and checked (see the module docstring).

    Build one with :meth:`from_mapping` (a dict of options, missing ones default) or
    :func:`from_arguments` (parsed flags); construction checks every value
    (:func:`check_values`) and normalises ``augment`` (a tuple in pipeline order) and
    ``ngf`` 0 (32, 64 for unet).  Change one with :meth:`replace`.
    """

    mode: str | None = option(None, choices=MODES, parser_choices=True, required=True)
    input_dir: str | None = option(None, "folder of combined A|B images (train, test)")
    output_dir: str | None = option(None, "where outputs are written", required=True)
    checkpoint: str | None = option(None, "training output folder to resume from (train) or "
                                          "to load (test, export)")
    restore: str = option("all", "train with --checkpoint: all = resume that run (default); "
                          "generators = start a new training (step 0, new optimizers) from its "
                          "generator weights, e.g. NN-4 from NN-3; both = from its generator "
                          "and discriminator weights. The generator options must match the "
                          "checkpoint's; --output_dir must be another folder",
                          choices=RESTORE, parser_choices=True)
    seed: int = option(0, kind=int)
    which_direction: str = option("AtoB", choices=("AtoB", "BtoA"), parser_choices=True,
                                  weights=True, arch=True)
    model: str = option("pix2pix", choices=("pix2pix",), parser_choices=True, arch=True)
    generator: str = option("resnet", "resnet (the thesis'), unet, highwaynet or densenet (the "
                            "thesis trainer's others: the pix2pix U-Net, the resnet's encoder "
                            "and decoder around gated residual units or densely connected "
                            "blocks), or segunet (the segmentation U-Net of Ronneberger et "
                            "al. 2015: two 3x3 conv + batch norm + ReLU per level, max "
                            "pooling, upsampling and skips at every resolution)",
                            choices=GENERATORS, parser_choices=True, weights=True, arch=True)
    ngf: int = option(0, "generator filters in the first layer (0 = 64 for unet, 32 for the "
                         "others)", kind=int, rule=_POSITIVE, weights=True, arch=True)
    ndf: int = option(64, "discriminator filters in the first layer", kind=int, rule=_POSITIVE,
                      weights=True, arch=True)
    n_res_blocks: int = option(9, "residual blocks (resnet)", kind=int, rule=_NON_NEGATIVE,
                               weights=True, arch=True, shapes=("resnet",))
    u_depth: int = option(8, "encoder depth: downsamplings (unet, segunet); sizes must be "
                          "multiples of 2^depth", kind=int, rule=_POSITIVE, weights=True,
                          arch=True, shapes=("unet", "segunet"))
    n_highway_units: int = option(9, "gated residual units (highwaynet)", kind=int,
                                  rule=_NON_NEGATIVE, weights=True, arch=True,
                                  shapes=("highwaynet",))
    n_dense_blocks: int = option(5, "dense blocks (densenet)", kind=int, rule=_NON_NEGATIVE,
                                 weights=True, arch=True, shapes=("densenet",))
    n_dense_layers: int = option(5, "densely connected layers in each block (densenet)",
                                 kind=int, rule=_POSITIVE, weights=True, arch=True,
                                 shapes=("densenet",))
    encoder_activation: bool = option(False, "batch norm + ReLU after the three encoder convs "
                                      "of resnet, highwaynet, densenet (the thesis' trainer had "
                                      "none)", kind=bool, weights=True, arch=True,
                                      shapes=("resnet", "highwaynet", "densenet"))
    Y_loss: str = option("hinge", "regression loss: hinge = L1, square = L2 (default hinge)",
                         choices=("hinge", "square", "dice", "logistic"), parser_choices=True,
                         arch=True)
    pos_weight: float = option(
        1.0, "weight of the target's positive (white) pixels in the hinge, square or logistic "
        "--Y_loss, against 1 for the negative ones (default 1): class balance for a minority "
        "such as membranes. Trained with weight W, an output of 0.5 (the threshold everything "
        "downstream uses) stands for a posterior probability of 1 / (1 + W) of white (square "
        "and logistic), so W > 1 marks a pixel white on less evidence; the outputs stay graded",
        kind=float, rule=_FINITE_POSITIVE, arch=True)
    loss: str = option("log", "GAN loss", choices=("log", "square"), parser_choices=True,
                       weights=True, arch=True)
    gan_weight: float = option(1.0, "weight of the GAN loss; 0 trains without a discriminator",
                               kind=float, rule=_FINITE_NON_NEGATIVE, arch=True)
    classic_weight: float = option(100.0, "weight of Y_loss", kind=float,
                                   rule=_FINITE_NON_NEGATIVE, arch=True)
    fliplr: bool = option(True, kind=bool, negatable=True)
    flipud: bool = option(True, kind=bool, negatable=True)
    transpose: bool = option(True, kind=bool, negatable=True)
    augment: tuple = option(
        (), "comma list of training augmentations, applied in this order: "
        f"{', '.join(AUGMENTATIONS)} (default none). elastic warps input and target alike; the "
        "others change the input only; misalign and missing_slice change the red or the green "
        "channel of two-slice inputs")
    brightness: float = option(0.1, "intensity: brightness offset uniform in [-B, B] on the "
                               "0..1 scale (default %(default)s)", kind=float, rule=_UNIT)
    contrast: float = option(0.2, "intensity: contrast factor uniform in [1 - C, 1 + C] about "
                             "mid-gray (default %(default)s)", kind=float, rule=_UNIT_OPEN)
    gamma: float = option(1.25, "intensity: gamma log-uniform in [1/G, G] (default "
                          "%(default)s)", kind=float, rule=Rule(1, finite=True))
    blur_sigma: float = option(1.0, "blur: Gaussian sigma uniform in [0, S] pixels (default "
                               "%(default)s)", kind=float, rule=_FINITE_NON_NEGATIVE)
    elastic_pixels: float = option(2.0, "elastic: largest displacement in pixels (default "
                                   "%(default)s)", kind=float, rule=_FINITE_NON_NEGATIVE)
    elastic_spacing: int = option(16, "elastic: pixels between the random displacements, "
                                  "smooth between (default %(default)s)", kind=int, rule=Rule(2))
    missing_slice_p: float = option(0.1, "missing_slice: probability of blanking the red or "
                                    "the green channel (default %(default)s)", kind=float,
                                    rule=_UNIT)
    misalign_p: float = option(0.2, "misalign: probability of shifting the red or the green "
                               "channel (default %(default)s)", kind=float, rule=_UNIT)
    misalign_pixels: int = option(3, "misalign: largest shift in y and in x, whole pixels "
                                  "(default %(default)s)", kind=int, rule=_NON_NEGATIVE)
    scale_size: int = option(286, "resize images up (area) until the shorter side is this",
                             kind=int, rule=_POSITIVE)
    crop_size: int = option(256, "random crop size for training", kind=int, rule=_POSITIVE)
    max_epochs: int | None = option(None, "training epochs (passes over the images)", kind=int,
                                    rule=_NON_NEGATIVE)
    max_steps: int | None = option(None, "training steps (overrides --max_epochs)", kind=int,
                                   rule=_NON_NEGATIVE)
    max_minutes: float | None = option(
        None, "wall-time budget of this invocation's training loop in minutes (> 0): stops "
        "after the first step that reaches it, checkpoints, and records the steps reached in "
        "training.json; with --max_steps/--max_epochs whichever comes first, alone the budget "
        "ends training", kind=float, rule=_FINITE_POSITIVE)
    batch_size: int = option(1, "images per training step (the global batch: split evenly over "
                             "the devices of --devices)", kind=int, rule=_POSITIVE)
    devices: str = option(
        "auto", "training devices: auto = every GPU if more than one is visible (else "
        "TensorFlow's default single device; with a --batch_size that is not a multiple of the "
        "GPU count, as many GPUs as divide it), all = every GPU, cpu = the CPU only, or a comma "
        "list such as GPU:0,GPU:1. On several devices (tf.distribute.MirroredStrategy) each "
        "step splits the --batch_size images evenly over them, batch norm uses the statistics "
        "of the whole batch and the learning rate is unchanged: a step equals one step on one "
        "device with the same batch, up to rounding")
    lr: float = option(0.0002, "Adam learning rate", kind=float, rule=_FINITE_POSITIVE)
    validation_dir: str | None = option(
        None, "train: combined images held out from training (as --input_dir); every "
        "--validation_freq steps and at the end the generator predicts them whole (as --mode "
        "test does) and its --Y_loss on them is recorded; the weights of the lowest go to "
        "<output_dir>/best, which --mode test uses (early stopping by checkpoint choice)")
    validation_freq: int = option(250, "validate every N steps (default %(default)s)", kind=int,
                                  rule=_POSITIVE)
    validation_share: float = option(
        0.1, "train: the most of the training's compute validation may cost, in (0, 1] "
        "(default %(default)s): each validation predicts a fixed, evenly spaced subset of the "
        "--validation_dir images, as many as hold SHARE x 3 x the pixels trained in "
        "--validation_freq steps (a prediction costs about a third of a training step's "
        "forward and backward pass), at least one; training.json records the subset and the "
        "seconds validation took", kind=float, rule=_SHARE)
    weights: str | None = option(None, "test/export: the validated best weights of the run "
                                 "(<checkpoint>/best, which --validation_dir writes; refused "
                                 "when the run has none), or its last checkpoint (default: best "
                                 "when the run has them, else last)", choices=("best", "last"),
                                 metavar="best|last")
    lr_decay: str = option(
        "none", "learning-rate schedule over the run: none (constant --lr, the default), cosine "
        "or linear from --lr down to 0 at its end. The end is --max_steps/--max_epochs or the "
        "--max_minutes budget, whichever comes first (by steps done or minutes spent, whichever "
        "is further along); a budget run resumed with --checkpoint starts its schedule again",
        choices=LR_DECAYS, metavar="|".join(LR_DECAYS))
    beta1: float = option(0.5, "Adam beta1", kind=float, rule=_UNIT_OPEN)
    ema: float = option(0.0, "train: also keep an exponential moving average of the "
                        "generator's weights (decay in [0, 1), e.g. 0.999; the decay of step t "
                        "is min(DECAY, (1+t)/(10+t))), which validation scores and --mode "
                        "test/export use. 0 (the default): off", kind=float, rule=_UNIT_OPEN,
                        weights=True, arch=True, metavar="DECAY")
    summary_freq: int = option(100, "TensorBoard scalars every N", kind=int, rule=_NON_NEGATIVE)
    progress_freq: int = option(50, "progress line every N steps", kind=int, rule=_NON_NEGATIVE)
    display_freq: int = option(0, "save input/output/target images every N steps (0 = never)",
                               kind=int, rule=_NON_NEGATIVE)
    save_freq: int = option(5000, "checkpoint every N steps", kind=int, rule=_NON_NEGATIVE)
    image_height: int | None = option(None, "test: resize inputs to this height", kind=int,
                                      rule=_POSITIVE)
    image_width: int | None = option(None, "test: resize inputs to this width", kind=int,
                                     rule=_POSITIVE)
    output_filetype: str = option("png", choices=("png", "jpeg"), parser_choices=True)
    tta: bool = option(False, "test: average the predictions over the 8 flips and transposes "
                       "(each inverted first); 8 times the prediction time", kind=bool)
    views: bool = option(False, "test: the input images are the slices of one volume (in "
                         "order, one size); predict it also sliced along y and along x, and "
                         "average the three views (isotropic EM); 3 times the prediction time",
                         kind=bool)
    mixed_precision: str | None = option(
        None, "mixed-precision training: bf16, fp16, or auto = bf16 where training runs on a "
        "CPU with bfloat16 instructions (AVX512_BF16 or AMX), with crops of at least 96 pixels "
        "and without --deterministic, else float32 (what auto chose is recorded in "
        "options.json; documentation/trainer.md)",
        choices=("bf16", "fp16", "auto"), parser_choices=True, weights=True, arch=True)
    xla: bool = option(False, "compile the training step with XLA", kind=bool)
    force: bool = option(False, "train: start over in an --output_dir that holds a run (its "
                         "checkpoints, events, options.json and display images are removed "
                         "first)", kind=bool)
    deterministic: bool = option(False, "the same numbers for the same seed on other machines: "
                                 "TensorFlow op determinism, fixed thread counts (--threads, "
                                 "default 1) and oneDNN's CPU kernels capped at AVX2 "
                                 "(ONEDNN_MAX_CPU_ISA)", kind=bool)
    threads: int | None = option(None, "TensorFlow intra- and inter-op threads (default: one "
                                 "per core; 1 with --deterministic)", kind=int, rule=_POSITIVE)
    scheduler: str | None = option(None, flag="external")
    memory_limit: str | None = option(None, flag="external")
    chunks: tuple | None = option(None, flag="external")
    tile: int | None = option(None, "test of a .zarr volume: predict N x N tiles (a multiple of "
                              "the generator's stride) grown by its receptive radius, centres "
                              "kept (default: whole slices)", kind=int, group="zarr",
                              metavar="N")
    #: Set by training: the devices it ran on (see trainer.device_strategy).
    training_devices: tuple | None = option(None, flag=False, record="if_set")

    def __post_init__(self):
        if self.ngf == 0:  # --ngf 0: the generator's own default
            object.__setattr__(self, "ngf", 64 if self.generator == "unet" else 32)
        check_values(self._given())
        values = {}
        values["augment"] = tuple(parse_augment(self.augment))
        if self.training_devices is not None:
            values["training_devices"] = tuple(self.training_devices)
        if self.chunks is not None:
            values["chunks"] = tuple(self.chunks)
        for f in dataclasses.fields(self):  # 1 given for a float option is 1.0
            value = getattr(self, f.name)
            if f.metadata["kind"] is float and _is_int(value):
                values[f.name] = float(value)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _given(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, values, source=None):
        """A Config from a dict of options (unknown keys ignored, missing ones default).

        ``None`` values take the default of options that have one.  Raises ``ValueError``
        as :func:`check_values` (naming ``key in source`` when ``source`` is given).
        """
        if isinstance(values, Config):
            return values
        if source is not None:
            check_values(values, source)
        known = {}
        for f in dataclasses.fields(cls):
            if f.name in values and (values[f.name] is not None or f.default is None):
                known[f.name] = values[f.name]
        if isinstance(known.get("augment"), str):
            known["augment"] = tuple(parse_augment(known["augment"], source))
        return cls(**known)

    def replace(self, **changes):
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def record(self):
        """The options.json record: every option by name (lists for tuples), as the trainer
        always wrote it, without ``training_devices`` unless set, and ``weights`` ``best``
        when not given (the default it always recorded: best weights when the run has them)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["record"] == "if_set" and value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["weights"] = self.weights or "best"
        return out

    # The read-only mapping of the options (callers that pass option dicts).
    def __getitem__(self, key):
        if key not in _NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_NAMES)

    def __len__(self):
        return len(_NAMES)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_NAMES = tuple(_FIELDS)
#: Options that define the network; test mode takes them from the checkpoint.
ARCH_KEYS = tuple(n for n, f in _FIELDS.items() if f.metadata["arch"])
#: Options that shape the weights (and what the checkpoint holds); a resumed run keeps the
#: checkpoint's.
NETWORK_KEYS = tuple(n for n, f in _FIELDS.items() if f.metadata["weights"])
#: The options that shape each generator's weights besides ``ngf`` (``--restore generators``
#: needs them equal to the checkpoint's).
GENERATOR_SHAPE_KEYS = {g: tuple(n for n, f in _FIELDS.items() if g in f.metadata["shapes"])
                        for g in GENERATORS}
#: Defaults of the generators' size options (translate.py's flags of the same names).
GENERATOR_DEFAULTS = {n: _FIELDS[n].default for n in ("n_res_blocks", "u_depth",
                                                      "n_highway_units", "n_dense_blocks",
                                                      "n_dense_layers")}
#: Defaults of the augmentation parameters (translate.py's flags of the same names).
AUGMENT_DEFAULTS = {n: _FIELDS[n].default for n in (
    "brightness", "contrast", "gamma", "blur_sigma", "elastic_pixels", "elastic_spacing",
    "missing_slice_p", "misalign_p", "misalign_pixels")}


def as_config(options):
    """``options`` as a :class:`Config` (itself if it is one; see :meth:`Config.from_mapping`)."""
    return options if isinstance(options, Config) else Config.from_mapping(options)


def default(name):
    """The default of option ``name``."""
    return _FIELDS[name].default


def add_arguments(parser, zarr_group=None):
    """Add a flag for every option of :class:`Config` with a flag, in declaration order.

    ``zarr_group``: a function ``parser -> argument group`` that adds the flags of
    ``flag="external"`` options and returns their group, where ``group="zarr"`` options go.
    """
    group = None
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if meta["flag"] == "external":
            if group is None and zarr_group is not None:
                group = zarr_group(parser)
            continue
        if not meta["flag"]:
            continue
        target = group if meta["group"] == "zarr" and group is not None else parser
        flag = f"--{f.name}"
        if meta["negatable"]:
            what = _FLIPS[f.name]
            target.add_argument(flag, action="store_true", default=True,
                                help=f"random {what} in training (default on)")
            target.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                                help=f"no {what}")
            continue
        kwargs = {"help": meta["help"]}
        if meta["required"]:
            kwargs["required"] = True
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta["kind"] is bool:
            kwargs["action"] = "store_true"
        else:
            if meta["kind"] in (int, float):
                kwargs["type"] = meta["kind"]
            if meta["parser_choices"]:
                kwargs["choices"] = meta["choices"]
            value = "" if f.name == "augment" else f.default
            if value is not None:
                kwargs["default"] = value
        target.add_argument(flag, **kwargs)
    return parser


def check_mode(config, mode=None):
    """Refuse a configuration that ``mode`` (default ``config.mode``) cannot run.

    Raises
    ------
    ValueError
        Naming the flag: train and test need ``--input_dir``; train needs
        ``--max_epochs``, ``--max_steps`` or ``--max_minutes``, ``--checkpoint`` with
        ``--restore`` other than all, and takes no ``--tta`` or ``--views``; test and export need
        ``--checkpoint``.
    """
    mode = mode or config.mode
    if mode in ("train", "test") and not config.input_dir:
        raise ValueError(f"--mode {mode} needs --input_dir")
    if mode == "train":
        if config.max_epochs is None and config.max_steps is None and config.max_minutes is None:
            raise ValueError("--mode train needs --max_epochs or --max_steps, or a time "
                             "budget --max_minutes")
        if config.restore != "all" and not config.checkpoint:
            raise ValueError(f"--restore {config.restore} needs --checkpoint (the training "
                             "output folder whose weights the new training starts from)")
        if config.tta:
            raise ValueError("--tta is for --mode test (it averages the predictions over the 8 "
                             "flips and transposes); --mode train does not take it")
        if config.views:
            raise ValueError("--views is for --mode test (it averages the predictions of a "
                             "volume's three views); --mode train does not take it")
    elif mode in ("test", "export") and not config.checkpoint:
        raise ValueError(f"--mode {mode} needs --checkpoint (a training output folder)")


def from_arguments(args):
    """The Config of parsed translate.py flags (see :func:`add_arguments`)."""
    return Config.from_mapping(vars(args))


def check_values(options, source=None):
    """Raise ``ValueError`` for the first option whose value is out of range.

    The rules are those declared in :class:`Config` (each field's ``rule`` and
    ``choices``), plus: ``gan_weight`` and ``classic_weight`` not both 0 (nothing to
    learn); ``blur_sigma`` <= :data:`MAX_BLUR_SIGMA`; ``pos_weight`` 1 with the dice
    loss; ``augment`` names of :data:`AUGMENTATIONS` (:func:`parse_augment`);
    ``devices`` a word or a device list (:func:`parse_devices`).

    Parameters
    ----------
    options : Mapping
        Option values by name (translate.py's flags without ``--``); missing
        keys and ``None`` values are not checked; unknown keys are ignored.
    source : str or Path or None
        ``None`` for command-line values (messages name ``--flag``), else the
        file the values came from (messages name ``key in file``).

    Raises
    ------
    ValueError
        Naming the flag (or key and file) and the value.
    """
    def given(key):
        return options.get(key) is not None

    for key, f in _FIELDS.items():
        rule, kind = f.metadata["rule"], f.metadata["kind"]
        if rule is None or not given(key):
            continue
        value = options[key]
        typed = _is_int(value) if kind is int else _is_real(value)
        if not typed or not rule.ok(value):
            raise ValueError(f"{_name(key, source)} must be {rule.describe(kind)}, "
                             f"got {value!r}")
    if given("gan_weight") and given("classic_weight") and not (
            options["gan_weight"] or options["classic_weight"]):
        raise ValueError(f"{_name('gan_weight', source)} and {_name('classic_weight', source)} "
                         "are both 0: the generator would learn nothing")
    sigma = options.get("blur_sigma")
    if given("blur_sigma") and sigma > MAX_BLUR_SIGMA:
        raise ValueError(f"{_name('blur_sigma', source)} must be <= {MAX_BLUR_SIGMA:g}, "
                         f"got {sigma!r}")
    weight = options.get("pos_weight")
    if given("pos_weight") and weight != 1 and options.get("Y_loss") == "dice":
        raise ValueError(f"{_name('pos_weight', source)} {weight!r} does not apply to the dice "
                         "loss (it weighs the classes by their overlap already); use 1 or "
                         "another --Y_loss")
    if "augment" in options:
        parse_augment(options["augment"], source)
    if "devices" in options:
        parse_devices(options["devices"], source)
    for key, f in _FIELDS.items():
        choices = f.metadata["choices"]
        if choices is None or key not in options or key == "mode":
            continue
        allowed = choices + ((None,) if f.default is None else ())
        if options[key] not in allowed:
            raise ValueError(f"{_name(key, source)} must be one of "
                             f"{', '.join(str(c) for c in allowed)}; got {options[key]!r}")

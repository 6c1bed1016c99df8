"""Checks of translate.py's option values, shared by the command line and saved options.json.

The same rules apply to values typed on the command line (messages name the
flag: ``--lr must be a finite number > 0, got nan``) and to values read back
from a run's ``options.json`` (messages name the key and the file:
``ngf in results/T3/options.json must be an integer >= 1, got 'abc'``).
This module imports no TensorFlow, so bad input fails fast.
"""

from __future__ import annotations

import math
import numbers
import re

#: Integers that must be >= 1 when given.
POSITIVE_INTS = ("ngf", "ndf", "crop_size", "batch_size", "scale_size", "u_depth",
                 "validation_freq",
                 "n_dense_layers", "image_height", "image_width", "threads")
#: Integers that must be >= 0 when given (0 means "never" for the frequencies).
NON_NEGATIVE_INTS = ("n_res_blocks", "n_highway_units", "n_dense_blocks", "max_epochs",
                     "max_steps", "save_freq", "summary_freq", "progress_freq", "display_freq")
#: Floats that must be finite and >= 0.
NON_NEGATIVE_FLOATS = ("gan_weight", "classic_weight", "blur_sigma", "elastic_pixels")
#: Floats that must lie in [0, 1].
UNIT_FLOATS = ("brightness", "missing_slice_p", "misalign_p")
#: Integers of the augmentations: (key, lowest value).
AUGMENT_INTS = (("elastic_spacing", 2), ("misalign_pixels", 0))
#: Training augmentations (``--augment``), in the order the pipeline applies them.
#: --lr_decay: the learning-rate schedules (trainer.learning_rate_at).
LR_DECAYS = ("none", "cosine", "linear")
AUGMENTATIONS = ("elastic", "intensity", "blur", "misalign", "missing_slice")
#: Largest ``--blur_sigma`` (the kernel has radius ceil(3 sigma) and must fit the crop).
MAX_BLUR_SIGMA = 10.0
#: The generators (``--generator``), as named by the thesis' trainer.
GENERATORS = ("resnet", "unet", "highwaynet", "densenet")
#: What ``--restore`` takes from ``--checkpoint`` (the thesis trainer's choices): ``all``
#: resumes the run; ``both`` (generator and discriminator weights) and ``generators``
#: (generator weights) start a new training from them.
RESTORE = ("all", "both", "generators")
#: The words ``--devices`` takes besides a comma list of device names.
DEVICE_WORDS = ("auto", "all", "cpu")
_DEVICE_NAME = re.compile(r"^(?:/?device:|/)?(cpu|gpu):(\d+)$", re.IGNORECASE)


def parse_devices(value, source=None):
    """What ``--devices`` asks for: a word of :data:`DEVICE_WORDS` or device names.

    Parameters
    ----------
    value : str or None
        ``auto`` (None too), ``all``, ``cpu``, or a comma list of device names
        ``GPU:0,GPU:1`` (case-insensitive; ``/device:GPU:0`` and ``/gpu:0``
        are accepted too).
    source : str or Path or None
        As for :func:`check_values`.

    Returns
    -------
    str or tuple of str
        The word, or the names in TensorFlow's spelling (``"GPU:0"``), in the
        order given.  Whether the devices exist is checked when TensorFlow runs
        (:func:`imagetranslation.trainer.device_strategy`).

    Raises
    ------
    ValueError
        Naming the flag and the value if it is neither a word nor a list of
        distinct device names.
    """
    if value is None:
        return "auto"
    if not isinstance(value, str):
        raise ValueError(f"{_name('devices', source)} must be a string, got {value!r}")
    if value.strip().lower() in DEVICE_WORDS:
        return value.strip().lower()
    names = []
    for part in value.split(","):
        match = _DEVICE_NAME.match(part.strip())
        if not match:
            raise ValueError(f"{_name('devices', source)} {value}: {part.strip()!r} is not a "
                             f"device name (expected {', '.join(DEVICE_WORDS)}, or a comma "
                             "list such as GPU:0,GPU:1)")
        name = f"{match.group(1).upper()}:{int(match.group(2))}"
        if name in names:
            raise ValueError(f"{_name('devices', source)} {value}: {name} is named twice")
        names.append(name)
    return tuple(names)


def parse_augment(value, source=None):
    """The augmentations named by ``--augment`` as a list in pipeline order.

    Parameters
    ----------
    value : str or list of str or None
        A comma list (``"intensity,elastic"``; ``""`` or ``"none"`` for none)
        or a list of names (as saved in options.json).
    source : str or Path or None
        As for :func:`check_values`.

    Returns
    -------
    list of str
        The names, each once, in the order of :data:`AUGMENTATIONS` (the order
        the pipeline applies them, whatever order they were given in).

    Raises
    ------
    ValueError
        Naming the flag and the value if a name is not one of :data:`AUGMENTATIONS`.
    """
    if value is None:
        return []
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
        if names == ["none"]:
            names = []
    elif isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
        names = list(value)
    else:
        raise ValueError(f"{_name('augment', source)} must be a comma list of names, "
                         f"got {value!r}")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        given = value if isinstance(value, str) else ",".join(names)
        raise ValueError(f"{_name('augment', source)} {given}: unknown augmentation "
                         f"{unknown[0]!r} (choose from {', '.join(AUGMENTATIONS)}, "
                         "comma-separated, or none)")
    return [n for n in AUGMENTATIONS if n in names]


def _name(key, source):
    return f"--{key}" if source is None else f"{key} in {source}"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_values(options, source=None):
    """Raise ``ValueError`` for the first option whose value is out of range.

    Parameters
    ----------
    options : dict
        Option values by name (translate.py's flags without ``--``); missing
        keys and ``None`` values are not checked.
    source : str or Path or None
        ``None`` for command-line values (messages name ``--flag``), else the
        file the values came from (messages name ``key in file``).

    Raises
    ------
    ValueError
        Naming the flag (or key and file) and the value: integers out of range
        (see :data:`POSITIVE_INTS`, :data:`NON_NEGATIVE_INTS`); ``lr`` not a
        finite number > 0; ``beta1`` or ``ema`` outside [0, 1); ``gan_weight`` or
        ``classic_weight`` negative or not finite, or both 0 (nothing to learn);
        ``max_minutes`` or ``pos_weight`` not a finite number > 0 (``pos_weight`` other than 1
        with the dice loss); an augmentation parameter out of
        range (``brightness``, ``missing_slice_p``, ``misalign_p`` in [0, 1];
        ``contrast`` in [0, 1); ``gamma`` >= 1; ``blur_sigma`` in [0, 10];
        ``elastic_pixels`` >= 0; ``elastic_spacing`` >= 2; ``misalign_pixels``
        >= 0) or an unknown name in ``augment`` (see :func:`parse_augment`);
        ``generator`` not one of :data:`GENERATORS`, ``restore`` not one of
        :data:`RESTORE`, ``devices`` not a word or device list (see
        :func:`parse_devices`); ``n_highway_units``, ``n_dense_blocks`` < 0 or
        ``n_dense_layers`` < 1; ``lr_decay`` not one of :data:`LR_DECAYS`.
    """
    def given(key):
        return options.get(key) is not None

    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        if not given(key):
            continue
        low = 1 if key in POSITIVE_INTS else 0
        value = options[key]
        if not _is_int(value) or value < low:
            raise ValueError(f"{_name(key, source)} must be an integer >= {low}, got {value!r}")
    for key in NON_NEGATIVE_FLOATS:
        value = options.get(key)
        if given(key) and (not _is_real(value) or not math.isfinite(value) or value < 0):
            raise ValueError(f"{_name(key, source)} must be a finite number >= 0, got {value!r}")
    if given("gan_weight") and given("classic_weight") and not (
            options["gan_weight"] or options["classic_weight"]):
        raise ValueError(f"{_name('gan_weight', source)} and {_name('classic_weight', source)} "
                         "are both 0: the generator would learn nothing")
    for key in UNIT_FLOATS:
        value = options.get(key)
        if given(key) and (not _is_real(value) or not 0 <= value <= 1):
            raise ValueError(f"{_name(key, source)} must be in [0, 1], got {value!r}")
    for key, low in AUGMENT_INTS:
        value = options.get(key)
        if given(key) and (not _is_int(value) or value < low):
            raise ValueError(f"{_name(key, source)} must be an integer >= {low}, got {value!r}")
    contrast = options.get("contrast")
    if given("contrast") and (not _is_real(contrast) or not 0 <= contrast < 1):
        raise ValueError(f"{_name('contrast', source)} must be in [0, 1), got {contrast!r}")
    gamma = options.get("gamma")
    if given("gamma") and (not _is_real(gamma) or not math.isfinite(gamma) or gamma < 1):
        raise ValueError(f"{_name('gamma', source)} must be a finite number >= 1, got {gamma!r}")
    sigma = options.get("blur_sigma")
    if given("blur_sigma") and sigma > MAX_BLUR_SIGMA:
        raise ValueError(f"{_name('blur_sigma', source)} must be <= {MAX_BLUR_SIGMA:g}, "
                         f"got {sigma!r}")
    weight = options.get("pos_weight")
    if given("pos_weight") and (not _is_real(weight) or not math.isfinite(weight)
                                or weight <= 0):
        raise ValueError(f"{_name('pos_weight', source)} must be a finite number > 0, "
                         f"got {weight!r}")
    if given("pos_weight") and weight != 1 and options.get("Y_loss") == "dice":
        raise ValueError(f"{_name('pos_weight', source)} {weight!r} does not apply to the dice "
                         "loss (it weighs the classes by their overlap already); use 1 or "
                         "another --Y_loss")
    minutes = options.get("max_minutes")
    if given("max_minutes") and (not _is_real(minutes) or not math.isfinite(minutes)
                                 or minutes <= 0):
        raise ValueError(f"{_name('max_minutes', source)} must be a finite number > 0, "
                         f"got {minutes!r}")
    if "augment" in options:
        parse_augment(options["augment"], source)
    lr = options.get("lr")
    if given("lr") and (not _is_real(lr) or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"{_name('lr', source)} must be a finite number > 0, got {lr!r}")
    for key in ("beta1", "ema"):
        value = options.get(key)
        if given(key) and (not _is_real(value) or not 0 <= value < 1):
            raise ValueError(f"{_name(key, source)} must be in [0, 1), got {value!r}")
    if "devices" in options:
        parse_devices(options["devices"], source)
    for key, choices in (("generator", GENERATORS), ("restore", RESTORE),
                         ("which_direction", ("AtoB", "BtoA")),
                         ("loss", ("log", "square")), ("lr_decay", LR_DECAYS),
                         ("weights", ("best", "last")),
                         ("Y_loss", ("hinge", "square", "dice", "logistic")),
                         ("mixed_precision", ("bf16", "fp16", None))):
        if key in options and options[key] not in choices:
            raise ValueError(f"{_name(key, source)} must be one of "
                             f"{', '.join(str(c) for c in choices)}; got {options[key]!r}")

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

#: Integers that must be >= 1 when given.
POSITIVE_INTS = ("ngf", "ndf", "crop_size", "batch_size", "scale_size", "u_depth",
                 "image_height", "image_width", "threads")
#: Integers that must be >= 0 when given (0 means "never" for the frequencies).
NON_NEGATIVE_INTS = ("n_res_blocks", "max_epochs", "max_steps", "save_freq", "summary_freq",
                     "progress_freq", "display_freq")
#: Floats that must be finite and >= 0.
NON_NEGATIVE_FLOATS = ("gan_weight", "classic_weight")


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
        finite number > 0; ``beta1`` outside [0, 1); ``gan_weight`` or
        ``classic_weight`` negative or not finite, or both 0 (nothing to learn).
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
    lr = options.get("lr")
    if given("lr") and (not _is_real(lr) or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"{_name('lr', source)} must be a finite number > 0, got {lr!r}")
    beta1 = options.get("beta1")
    if given("beta1") and (not _is_real(beta1) or not 0 <= beta1 < 1):
        raise ValueError(f"{_name('beta1', source)} must be in [0, 1), got {beta1!r}")
    for key, choices in (("generator", ("resnet", "unet")), ("which_direction", ("AtoB", "BtoA")),
                         ("loss", ("log", "square")),
                         ("Y_loss", ("hinge", "square", "dice", "logistic")),
                         ("mixed_precision", ("bf16", "fp16", None))):
        if key in options and options[key] not in choices:
            raise ValueError(f"{_name(key, source)} must be one of "
                             f"{', '.join(str(c) for c in choices)}; got {options[key]!r}")

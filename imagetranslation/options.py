"""The values of translate.py's options: their names and the parsing of the two that are
lists (``--devices``, ``--augment``).

The schema of every option (type, default, range, help) is
:class:`imagetranslation.config.Config`; its checks are
:func:`imagetranslation.config.check_values`.  This module imports nothing of the
trainer, so that the schema can use it.
"""

from __future__ import annotations

import numbers
import re

#: Training augmentations (``--augment``), in the order the pipeline applies them.
AUGMENTATIONS = ("elastic", "intensity", "blur", "misalign", "missing_slice")
#: --lr_decay: the learning-rate schedules (trainer.learning_rate_at).
LR_DECAYS = ("none", "cosine", "linear")
#: Largest ``--blur_sigma`` (the kernel has radius ceil(3 sigma) and must fit the crop).
MAX_BLUR_SIGMA = 10.0
#: The generators (``--generator``): the thesis trainer's four, as it named them, and the
#: segmentation U-Net (``segunet``).
GENERATORS = ("resnet", "unet", "highwaynet", "densenet", "segunet")
#: What ``--restore`` takes from ``--checkpoint`` (the thesis trainer's choices): ``all``
#: resumes the run; ``both`` (generator and discriminator weights) and ``generators``
#: (generator weights) start a new training from them.
RESTORE = ("all", "both", "generators")
#: The words ``--devices`` takes besides a comma list of device names.
DEVICE_WORDS = ("auto", "all", "cpu")
#: translate.py's modes.
MODES = ("train", "test", "export")
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
        As for :func:`imagetranslation.config.check_values`.

    Returns
    -------
    str or tuple of str
        The word, or the names in TensorFlow's spelling (``"GPU:0"``), in the
        order given.  Whether the devices exist is checked when TensorFlow runs
        (:func:`imagetranslation.runtime.device_strategy`).

    Raises
    ------
    ValueError
        Naming the flag and the value if it is neither a word nor a list of
        distinct device names (a word in a list, such as ``cpu,cpu``, is named as
        such; a device named twice is said to be).
    """
    if value is None:
        return "auto"
    if not isinstance(value, str):
        raise ValueError(f"{_name('devices', source)} must be a string, got {value!r}")
    if value.strip().lower() in DEVICE_WORDS:
        return value.strip().lower()
    names, parts = [], [part.strip() for part in value.split(",")]
    for part in parts:
        word = part.lower()
        if word in DEVICE_WORDS:
            count = [p.lower() for p in parts].count(word)
            what = "named twice" if count == 2 else (f"named {count} times" if count > 2
                                                        else "in a list")
            raise ValueError(f"{_name('devices', source)} {value}: {word} is {what}; {word} "
                             f"is a word that stands alone (--devices {word}), a list names "
                             "distinct devices such as CPU:0,CPU:1 or GPU:0,GPU:1")
        match = _DEVICE_NAME.match(part)
        if not match:
            raise ValueError(f"{_name('devices', source)} {value}: {part!r} is not a "
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
        As for :func:`imagetranslation.config.check_values`.

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

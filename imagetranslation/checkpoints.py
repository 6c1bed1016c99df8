"""Checkpoints of a run: its saved options, resuming it, starting a new training from its
weights (``--restore generators|both``), and restoring a ``tf.train.Checkpoint`` with
messages that name the files."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .config import (
    ARCH_KEYS,
    GENERATOR_DEFAULTS,
    GENERATOR_SHAPE_KEYS,
    NETWORK_KEYS,
    as_config,
    check_values,
)

PROG = "translate.py"


def saved_options(checkpoint_dir):
    """The options.json of a training output folder, and its path.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it has no options.json, or the file is not a JSON object of valid options.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"--checkpoint folder does not exist: {checkpoint_dir}")
    options_file = checkpoint_dir / "options.json"
    if not options_file.exists():
        raise ValueError(f"--checkpoint folder {checkpoint_dir} has no options.json "
                         "(is it the output_dir of a training run?)")
    try:
        saved = json.loads(options_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot parse {options_file}: {str(exc).splitlines()[0]}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{options_file} must hold a JSON object of options, "
                         f"got {type(saved).__name__}")
    check_values({k: saved[k] for k in ARCH_KEYS if k in saved}, source=options_file)
    return saved, options_file



def resume_options(options):
    """Options for a run resumed from ``options.checkpoint``.

    The checkpoint's network options (:data:`~imagetranslation.config.NETWORK_KEYS`)
    replace the given ones, since the weights have their shapes.

    Returns
    -------
    options : Config
        The merged options.
    saved_with_gan : bool
        Whether the checkpoint was trained with a discriminator.
    """
    options = as_config(options)
    saved, source = saved_options(options.checkpoint)
    saved = {"ema": 0.0, **saved}  # runs from before --ema have none
    changed = {k: saved[k] for k in NETWORK_KEYS if k in saved and saved[k] != getattr(options, k)}
    if changed:
        print(f"{PROG}: resuming with the network options of {source}: {changed}",
              file=sys.stderr)
    return options.replace(**changed), saved.get("gan_weight", 0) > 0


def _shown(key, value):
    if key == "encoder_activation":
        return f"--encoder_activation {'on' if value else 'off'}"
    return f"--{key} {value}"


def transfer_options(options):
    """Check that a new training can start from the weights of ``options.checkpoint``.

    For ``restore`` ``generators`` (generator weights) and ``both`` (generator
    and discriminator weights): the generator the options ask for must be the
    checkpoint's (same ``generator``, ``ngf`` and size options, see
    :data:`GENERATOR_SHAPE_KEYS`; ``both`` also needs a discriminator on
    both sides with the same ``ndf``).  Reads the checkpoint's options.json
    only.  The weights' shapes (the channel counts) are checked when they are
    restored (:func:`restore`).

    Raises
    ------
    ValueError
        Naming the flag, its value and the checkpoint's value (with the file).
    FileNotFoundError
        If the checkpoint folder does not exist.
    """
    options = as_config(options)
    saved, source = saved_options(options.checkpoint)
    what, checkpoint = options.restore, options.checkpoint
    kind = options.generator
    keys = ("generator", "ngf") + GENERATOR_SHAPE_KEYS.get(kind, ())
    defaults = {**GENERATOR_DEFAULTS, "encoder_activation": False}
    for key in keys:
        mine, theirs = getattr(options, key), saved.get(key, defaults.get(key))
        if key == "encoder_activation":
            mine, theirs = bool(mine), bool(theirs)
        elif mine is None:
            mine = defaults.get(key)
        if mine != theirs:
            raise ValueError(f"--restore {what}: {_shown(key, mine)} does not match the "
                             f"generator of --checkpoint {checkpoint} ({key} {theirs!r} in "
                             f"{source})")
    if what == "both":
        if not saved.get("gan_weight", 0) > 0:
            raise ValueError(f"--restore both: --checkpoint {checkpoint} has no discriminator "
                             f"(gan_weight {saved.get('gan_weight', 0)!r} in {source}); use "
                             "--restore generators")
        if not options.gan_weight > 0:
            raise ValueError(f"--restore both: --gan_weight {options.gan_weight:g} trains "
                             "no discriminator; use --restore generators")
        if options.ndf != saved.get("ndf"):
            raise ValueError(f"--restore both: --ndf {options.ndf} does not match the "
                             f"discriminator of --checkpoint {checkpoint} (ndf "
                             f"{saved.get('ndf')!r} in {source})")


def restore_weights(model, folder, what):
    """Restore the generator (``what == "generators"``) or the generator and the
    discriminator (``"both"``) of ``model`` from the latest checkpoint in ``folder``.

    The optimizers and the step counter stay new: training starts at step 0.
    Returns the checkpoint prefix; raises ``ValueError`` as :func:`restore` does.
    """
    import tensorflow as tf

    parts = {"generator": model.generator}
    if what == "both":
        parts["discriminator"] = model.discriminator
    restored = restore(tf.train.Checkpoint(**parts), folder)
    model.reset_ema()
    return restored


_SHAPES = re.compile(r"incompatible tensor with shape (\(.*?\)) when attempting to restore "
                     r"variable with shape (\(.*?\)) and name (\S+?)\.?$")


def _latest_checkpoint(folder):
    """The newest checkpoint prefix listed in ``folder/checkpoint``.

    Raises
    ------
    ValueError
        Naming the file if the list is missing, unreadable, or names files
        that are not there.
    """
    import tensorflow as tf

    listing = Path(folder) / "checkpoint"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the reasons are given below, once
    try:
        latest = tf.train.latest_checkpoint(str(folder))
    except tf.errors.OpError as exc:
        raise ValueError(f"cannot read the checkpoint list {listing}: "
                         f"{_first_line(exc)}") from None
    finally:
        logger.setLevel(level)
    if latest is None and listing.exists():
        raise ValueError(f"the checkpoint list {listing} is unreadable or names checkpoint "
                         "files that are missing (corrupt or truncated?)")
    if latest is None:
        raise ValueError(f"no checkpoint files in {folder} (nothing to resume or load; "
                         f"is it the output_dir of a training run?)")
    return latest


def _first_line(exc):
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def restore(checkpoint, folder, partial=False):
    """Restore ``checkpoint`` (a ``tf.train.Checkpoint``) from the latest save in ``folder``.

    Parameters
    ----------
    partial : bool
        Allow objects missing from the saved checkpoint (a discriminator that
        joins a generator trained without one; inference needs only the generator).
        Without it every variable of ``checkpoint`` must be restored; values in
        the saved checkpoint that ``checkpoint`` lacks are ignored either way.

    Returns
    -------
    str
        The checkpoint prefix restored (``<folder>/ckpt-<step>``).

    Raises
    ------
    ValueError
        Naming the checkpoint files if they cannot be read (corrupt or
        truncated) or do not match the network (a weight of another shape:
        the message gives both shapes and the variable).
    """
    import tensorflow as tf

    latest = _latest_checkpoint(folder)
    try:
        status = checkpoint.restore(latest)
        if not partial:
            status.assert_existing_objects_matched()
        status.expect_partial()
    except ValueError as exc:
        shapes = _SHAPES.search(" ".join(str(exc).split()))
        if shapes is None:
            raise ValueError(f"cannot read checkpoint {latest} ({Path(latest).name}.index, "
                             f"{Path(latest).name}.data-*): corrupt or truncated? "
                             f"{_first_line(exc)}") from None
        saved, needed, name = shapes.groups()
        raise ValueError(f"checkpoint {latest} does not match the network being trained: it "
                         f"holds a weight of shape {saved} where the network's ({name}) has "
                         f"shape {needed} (another generator, channel count or size?)") from None
    except (tf.errors.OpError, IndexError, RuntimeError, OSError) as exc:
        # DataLossError and friends; a truncated data file gives IndexError.
        raise ValueError(f"cannot read checkpoint {latest} ({Path(latest).name}.index, "
                         f"{Path(latest).name}.data-*): corrupt or truncated? "
                         f"{_first_line(exc)}") from None
    except AssertionError:
        raise ValueError(f"checkpoint {latest} does not match the network being "
                         "trained") from None
    return latest

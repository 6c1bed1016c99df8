"""Training the affinity U-Net: settings, the loop, checkpoints, validation, the record.

A run folder holds ``options.json`` (the :class:`Settings` and TensorFlow's runtime),
TensorFlow checkpoints of the network, the optimizer and the step (``ckpt-N``; the last three
kept), ``best/`` (the weights that scored best on the validation volume, when one is given),
and ``training.json`` (steps, seconds, the validation history, the step kept).

Step N's batch depends only on (seed, N) (:func:`~.data.batch`), and a checkpoint holds the
optimizer's state, so with ``deterministic`` a run resumed from a checkpoint ends with the same
weights, bit for bit, as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuron3d.affinity import boundary_f1, edge_mask, label_affinities
from neuron3d.io import write_file

from .data import batch
from .network import CONVS, multiple, unet
from .predict import predict_volume

PROG = "python -m imagetranslation.affinity"
#: Steps between the loss records of training.json (their mean) and the progress lines.
LOSS_EVERY = 50

@dataclass(frozen=True)
class Settings:
    """What a training run was asked to do (options.json records it).

    ``minutes`` is a wall-time budget over all sessions of a run; ``max_steps`` a step
    budget; training stops at whichever comes first.  ``validation_freq`` steps apart the
    network predicts a fixed centre crop of the validation volume holding at most
    ``validation_share x 3 x validation_freq x batch_size x crop`` voxels (a training step
    costs about three forward passes per voxel), so validation costs about that share of the
    budget whatever the volume's size.
    """

    features: int = 12
    levels: int = 3
    z_pool: bool = True
    fine_z: bool = False
    crop: tuple[int, int, int] = (32, 64, 64)
    batch_size: int = 1
    lr: float = 1e-3
    max_steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    augment: bool = True
    balanced: bool = True
    validation_freq: int = 100
    validation_share: float = 0.1
    save_freq: int = 500
    deterministic: bool = False
    threads: int | None = None
    #: "bf16": bfloat16 arithmetic on float32 weights (Keras' mixed_bfloat16); None: float32.
    mixed_precision: str | None = None
    #: How the convolutions run (:data:`~.network.CONVS`); runs from before the choice
    #: existed were "stacked".
    conv: str = "stacked"

    def __post_init__(self):
        positive = {"features": self.features, "levels": self.levels,
                    "batch_size": self.batch_size, "validation_freq": self.validation_freq,
                    "save_freq": self.save_freq}
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}")
        if len(self.crop) != 3 or min(self.crop) < 1:
            raise ValueError(f"--crop must be three positive sizes (z y x), got {self.crop}")
        step = multiple(self.levels, self.z_pool)
        bad = [c for c, m in zip(self.crop, step) if c % m]
        if bad:
            raise ValueError(f"--crop {' '.join(map(str, self.crop))}: each side must be a "
                             f"multiple of {' x '.join(map(str, step))} for {self.levels} levels")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"--minutes must be a positive number, got {self.minutes}")
        if self.max_steps is None and self.minutes is None:
            raise ValueError("give --max_steps or --minutes (or both): a budget for training")
        if self.conv not in CONVS:
            raise ValueError(f"--conv must be one of {', '.join(CONVS)}, got {self.conv}")
        if self.mixed_precision not in (None, "bf16"):
            raise ValueError(f"--mixed_precision must be bf16 or off, got "
                             f"{self.mixed_precision}")
        if not 0 < self.validation_share <= 1:
            raise ValueError(f"--validation_share must be in (0, 1], got "
                             f"{self.validation_share}")

    def record(self):
        return {**dataclasses.asdict(self), "crop": list(self.crop)}

    @classmethod
    def from_record(cls, record, source):
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            values = {k: v for k, v in record.items() if k in names}
            values["crop"] = tuple(values["crop"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source} is not an affinity network's options.json "
                             f"({exc})") from None


def read_settings(folder):
    """The :class:`Settings` of the run in ``folder`` (its options.json)."""
    path = Path(folder) / "options.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: is {folder} an affinity network's "
                                "training folder?") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if record.get("network") != "affinity_unet":
        raise ValueError(f"{folder} holds no affinity network (its options.json is for "
                         f"{record.get('network') or 'another trainer'}; a 2-D translate.py "
                         "run?)")
    return Settings.from_record(record, path)


def machine_choices(mixed_precision, conv, deterministic):
    """``--mixed_precision`` and ``--conv`` with ``auto`` resolved for this machine: on a CPU
    with AMX, bfloat16 Conv3D trains 2.9x the steps per second of the float32 stacked
    convolutions (0.054 against 0.155 s at 32 x 64 x 64); on the AVX512_BF16 machine without
    AMX the stacked float32 form was fastest (Keras' 3x3x3 Conv3D network 3.5x slower in
    float32, and a Conv3D layer 3.4x slower in bfloat16 than in float32:
    documentation/affinities.md).  A GPU gets Conv3D in float32 (not measured here).

    Returns
    -------
    dict
        ``mixed_precision`` ("bf16" or None) and ``conv`` (one of :data:`~.network.CONVS`).
    """
    import tensorflow as tf

    from ..runtime import bf16_cpu, cpu_flags

    if mixed_precision == "auto":
        mixed_precision = "bf16" if bf16_cpu(deterministic, needs=("amx_bf16",)) else None
    elif mixed_precision == "off":
        mixed_precision = None
    if conv == "auto":
        gpu = bool(tf.config.list_physical_devices("GPU"))
        conv = "conv3d" if gpu or "amx_bf16" in cpu_flags() else "stacked"
    return {"mixed_precision": mixed_precision, "conv": conv}


def build(settings):
    """The network of ``settings`` (seeded by its seed)."""
    import keras

    keras.utils.set_random_seed(int(settings.seed))
    return unet(settings.features, settings.levels, z_pool=settings.z_pool,
                fine_z=settings.fine_z, conv=settings.conv,
                dtype="mixed_bfloat16" if settings.mixed_precision == "bf16" else None)


def check_volume(em, labels, settings, names):
    """ValueError unless the labels cover the (z, y, x) EM stack and it holds a crop."""
    if labels.shape != em.shape:
        raise ValueError(f"{names[1]} has shape {labels.shape}, {names[0]} {em.shape}: the "
                         "labels must cover the EM voxel for voxel")
    if any(c > s for c, s in zip(settings.crop, em.shape)):
        raise ValueError(f"{names[0]} is {' x '.join(map(str, em.shape))} voxels, smaller than "
                         f"the crop {' x '.join(map(str, settings.crop))} (--crop)")


def validation_window(shape, settings):
    """The centre crop of a validation volume ``shape`` that validation predicts: at most
    :class:`Settings`' share of voxels, each side shrunk in proportion, none below the
    network's multiple."""
    limit = (settings.validation_share * 3 * settings.validation_freq * settings.batch_size
             * int(np.prod(settings.crop)))
    step = multiple(settings.levels, settings.z_pool)
    factor = min(1.0, (limit / float(np.prod(shape))) ** (1 / 3))
    sides = [min(s, max(m, int(s * factor) // m * m)) for s, m in zip(shape, step)]
    return tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, sides))


class _Record:
    """training.json: accumulated across the sessions of a run."""

    def __init__(self, folder, resumed):
        self.path = Path(folder) / "training.json"
        self.data = {"steps": 0, "seconds_total": 0.0, "validation": [], "loss": [],
                     "kept_step": None, "kept_f1": None, "sessions": 0, "stopped_by": None,
                     "skipped_steps": 0}
        if resumed:
            try:
                self.data.update(json.loads(self.path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass

    def write(self):
        write_file(self.path, json.dumps(self.data, indent=2) + "\n")


def train(settings, volumes, output_dir, validation=None, resume=False, log=print,
          clock=time.monotonic):
    """Train the affinity network on ``volumes`` into ``output_dir``.

    Parameters
    ----------
    settings : Settings
    volumes : list of (numpy.ndarray, numpy.ndarray)
        (z, y, x) EM (uint8) and ground-truth labels of the same shape, one pair per training
        volume (crops are drawn from each in proportion to its voxels).
    output_dir : path
        The run folder (created; a resumed run's folder).
    validation : (numpy.ndarray, numpy.ndarray), optional
        EM and labels of a validation volume: the best checkpoint by the F1 of cut edges on it
        is kept in ``best/`` and is what prediction loads.
    resume : bool
        Continue the run in ``output_dir`` from its latest checkpoint (its steps and seconds
        count against the budget).
    log : callable
        Progress lines.
    clock : callable
        Seconds (a monotonic clock; tests pass a fake one).

    Returns
    -------
    dict
        The training record (what training.json holds).
    """
    import keras
    import tensorflow as tf

    from ..checkpoints import restore
    from ..rundir import write_options
    from ..runtime import all_finite

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build(settings)
    optimizer = keras.optimizers.Adam(settings.lr)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, str(out), max_to_keep=3)
    best = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(out / "best"),
                                      max_to_keep=1)
    record = _Record(out, resume)
    if resume:
        model.build((None, None, None, None, 1))
        optimizer.build(model.trainable_variables)
        restore(checkpoint, out)
    else:
        write_options(out / "options.json", {**settings.record(), "network": "affinity_unet"})
    start = int(step_var.numpy())
    budget = None if settings.minutes is None else settings.minutes * 60.0
    spent = float(record.data["seconds_total"]) if resume else 0.0
    if validation is not None:
        window = validation_window(validation[0].shape, settings)
        v_em, v_target = validation[0][window], label_affinities(validation[1][window])
        v_mask = edge_mask(v_target.shape[1:])
    step_multiple = multiple(settings.levels, settings.z_pool)

    @tf.function(reduce_retracing=True)
    def train_step(x, target, weight):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            p = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
            bce = -(target * tf.math.log(p) + (1 - target) * tf.math.log(1 - p))
            loss = tf.reduce_sum(weight * bce) / tf.maximum(tf.reduce_sum(weight), 1.0)
        grads = tape.gradient(loss, model.trainable_variables)
        if settings.mixed_precision != "bf16":
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss, tf.constant(0.0)
        # as translate.py's: a step whose loss or gradients are not finite is skipped
        finite = all_finite([loss, *grads])

        def apply():
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return tf.constant(0.0)

        return loss, tf.cond(finite, apply, lambda: tf.constant(1.0))

    def validate(step):
        predicted = predict_volume(model, v_em, step_multiple, tile=v_em.shape, margin=0)
        f1 = boundary_f1(predicted, v_target, v_mask)
        record.data["validation"].append({"step": step, "f1": f1})
        if record.data["kept_f1"] is None or f1 > record.data["kept_f1"]:
            record.data["kept_step"], record.data["kept_f1"] = step, f1
            best.save(checkpoint_number=step)
        return f1

    began, step, losses, why = clock(), start, [], "max_steps"
    record.data["sessions"] += 1
    try:
        while True:
            elapsed = spent + clock() - began
            if settings.max_steps is not None and step >= settings.max_steps:
                why = "max_steps"
                break
            if budget is not None and elapsed >= budget:
                why = "minutes"
                break
            x, target, weight = batch(volumes, settings.crop, settings.batch_size,
                                      settings.seed, step, settings.augment, settings.balanced)
            loss, skipped = train_step(x, target, weight)
            losses.append(float(loss))
            record.data["skipped_steps"] += int(skipped)
            step += 1
            step_var.assign(step)
            if step % settings.save_freq == 0:
                manager.save(checkpoint_number=step)
            if step % LOSS_EVERY == 0:
                record.data["loss"].append({"step": step,
                                            "loss": float(np.mean(losses[-LOSS_EVERY:]))})
            if validation is not None and step % settings.validation_freq == 0:
                f1 = validate(step)
                log(f"{PROG}: step {step}, loss {np.mean(losses[-LOSS_EVERY:]):.4f}, "
                    f"validation F1 {f1:.4f}, {spent + clock() - began:.0f} s")
            elif step % LOSS_EVERY == 0:
                log(f"{PROG}: step {step}, loss {np.mean(losses[-LOSS_EVERY:]):.4f}, "
                    f"{spent + clock() - began:.0f} s")
    except KeyboardInterrupt:
        why = "interrupted"
        raise
    finally:
        manager.save(checkpoint_number=step)
        if validation is not None and step > start and step % settings.validation_freq:
            validate(step)
        record.data.update(steps=step, seconds_total=spent + clock() - began, stopped_by=why)
        record.write()
    kept = record.data["kept_step"]
    log(f"{PROG}: trained {step} steps in {record.data['seconds_total']:.0f} s "
        f"(stopped by {why})" + (f"; kept step {kept} (validation F1 "
                                 f"{record.data['kept_f1']:.4f})" if kept is not None else ""))
    return record.data


def load(folder):
    """The trained network of the run in ``folder``: its best weights by validation (``best/``)
    if it has them, else its latest checkpoint; and its :class:`Settings`."""
    import tensorflow as tf

    from ..checkpoints import restore

    settings = read_settings(folder)
    model = build(settings)
    best = Path(folder) / "best"
    source = best if (best / "checkpoint").is_file() else Path(folder)
    restore(tf.train.Checkpoint(model=model), source)
    return model, settings

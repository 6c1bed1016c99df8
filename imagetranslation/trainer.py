"""Training, testing and export of pix2pix models (used by ``translate.py``).

Train: loss = classic_weight x Y_loss(output, target) + gan_weight x GAN loss,
Adam for generator and discriminator; with ``gan_weight == 0`` the
discriminator is never built (the thesis setting: a supervised fully
convolutional regressor).  Outputs in ``output_dir``: ``options.json`` (the
options the run used and the TensorFlow settings in effect, see
:func:`runtime_settings`), ``training.json`` (how far the run got and why it
stopped, see :func:`fit`), checkpoints (``tf.train.CheckpointManager``),
TensorBoard event files and, with ``display_freq``, ``images/`` and
``index.html``.  Every file this module writes itself goes through the atomic
writers of :mod:`neuron3d.io`.

Data safety: training refuses an output folder that already holds a run unless
it resumes from that folder (``checkpoint == output_dir``) or ``force`` starts
over; test and export refuse to write into a training run's folder; Ctrl-C
saves a checkpoint at the current step before stopping.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from neuron3d.io import same_path, write_file, write_folder, write_image
from neuron3d.progress import StepProgress

from . import data as D
from .models import GENERATOR_DEFAULTS, build_generator, patch_discriminator, stride_of
from .options import check_values, parse_augment, parse_devices

#: Options that define the network; test mode takes them from the checkpoint.
ARCH_KEYS = ("which_direction", "model", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
             "n_highway_units", "n_dense_blocks", "n_dense_layers", "encoder_activation",
             "Y_loss", "pos_weight", "loss", "gan_weight", "classic_weight", "mixed_precision",
             "ema")
#: Options that shape the weights (and what the checkpoint holds); a resumed run keeps the
#: checkpoint's.
NETWORK_KEYS = ("which_direction", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
                "n_highway_units", "n_dense_blocks", "n_dense_layers", "encoder_activation",
                "loss", "mixed_precision", "ema")
#: The options that shape each generator's weights besides ``ngf`` (``--restore generators``
#: needs them equal to the checkpoint's).
GENERATOR_SHAPE_KEYS = {"resnet": ("n_res_blocks", "encoder_activation"),
                        "unet": ("u_depth",),
                        "highwaynet": ("n_highway_units", "encoder_activation"),
                        "densenet": ("n_dense_blocks", "n_dense_layers", "encoder_activation")}
EPS = 1e-12
PROG = "translate.py"

#: Files of a run folder that mark it as holding a run (checkpoints, options).
_RUN_MARKERS = re.compile(r"^(checkpoint|ckpt-\d+.*|options\.json)$")
#: Files a training run writes into its folder (``--force`` removes them), including
#: TensorFlow's temporaries of a killed save (``ckpt-N_temp``, ``checkpoint.tmp...``).
_RUN_FILES = re.compile(r"^(checkpoint|checkpoint\.tmp.*|ckpt-\d+.*|events\.out\.tfevents\..*"
                        r"|options\.json|training\.json|index\.html|best)$")
#: Images that training (display_freq) and test write into ``images/``.
_RUN_IMAGES = re.compile(r"^.+-(inputs|outputs|targets)\.(png|jpeg)$")
#: Temporaries TensorFlow leaves when killed while saving a checkpoint.
_TF_TEMPORARIES = re.compile(r"^(ckpt-\d+_temp.*|checkpoint\.tmp[0-9a-f]+)$")
#: The clock of the time budget (``max_minutes``); tests replace it.
_clock = time.monotonic
#: Why a training run stopped, as recorded in training.json.
STOPPED_BY = ("max_steps", "max_minutes", "interrupted")


def configure_runtime(deterministic=False, threads=None):
    """Apply translate.py's ``--deterministic`` and ``--threads`` to TensorFlow.

    Must run before TensorFlow executes its first operation in this process
    (thread pools are fixed then).

    Parameters
    ----------
    deterministic : bool
        Enable TensorFlow's op determinism
        (``tf.config.experimental.enable_op_determinism``): every op gives the
        same result for the same inputs, on the same hardware and software.
        Combined with a fixed ``threads`` (1 when None) so that work is split
        the same way on machines with different core counts.  (translate.py
        also caps oneDNN's instruction set, which must happen before
        TensorFlow starts; see ``translate.run``.)
    threads : int or None
        Intra- and inter-op thread pool sizes; None keeps TensorFlow's choice
        (one thread per core) unless ``deterministic``.

    Raises
    ------
    ValueError
        If TensorFlow already runs with other thread pool sizes in this process.
    """
    import tensorflow as tf

    if deterministic and threads is None:
        threads = 1
    if threads is not None:
        pools = (("intra", tf.config.threading.get_intra_op_parallelism_threads,
                  tf.config.threading.set_intra_op_parallelism_threads),
                 ("inter", tf.config.threading.get_inter_op_parallelism_threads,
                  tf.config.threading.set_inter_op_parallelism_threads))
        for kind, get, set_ in pools:
            if get() == threads:
                continue
            try:
                set_(threads)
            except RuntimeError:
                raise ValueError(
                    f"--threads {threads}: TensorFlow already runs with {get() or 'default'} "
                    f"{kind}-op threads in this process; start translate.py in a new process"
                ) from None
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def runtime_settings():
    """The TensorFlow settings in effect that decide a run's numbers.

    The same seed gives the same numbers only with the same settings (and the
    same hardware and TensorFlow build); runs record these in their
    ``options.json`` under ``"runtime"``, and reports can quote them.

    Returns
    -------
    dict
        ``tensorflow`` (version), ``op_determinism`` (bool),
        ``intra_op_threads`` and ``inter_op_threads`` (0 means TensorFlow's
        default, one per core), ``cpus`` (cores this process may use),
        ``onednn`` (whether oneDNN's CPU kernels are on; their results depend
        on the CPU's instruction set; None if unknown), ``onednn_max_cpu_isa``
        (the ``ONEDNN_MAX_CPU_ISA`` cap, None if not set), ``cpu_model``, ``device``.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.framework import config as _config

        determinism = bool(_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        determinism = os.environ.get("TF_DETERMINISTIC_OPS", "0") not in ("", "0", "false")
    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover
        onednn = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count()
    return {
        "tensorflow": tf.__version__,
        "op_determinism": determinism,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpus": cpus,
        "onednn": onednn,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "cpu_model": _cpu_model(),
        "device": device_summary(),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or None


def configure(options):
    """Seeds and mixed precision for a run."""
    import keras

    keras.utils.set_random_seed(int(options["seed"]))
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(options.get("mixed_precision"))
    keras.mixed_precision.set_global_policy(policy or "float32")


def device_summary():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)}: {', '.join(g.name for g in gpus)})" if gpus else "CPU"


#: The strategies made by :func:`device_strategy`, by device list.  A second
#: MirroredStrategy over the same devices in one process would start its collective
#: operations' keys where the first one's started, and TensorFlow's runtime, which remembers
#: them, aborts ("Shape mismatch in the collective instance"): later runs in the process
#: (tests, notebooks) reuse the first one.
_STRATEGIES = {}


def device_strategy(devices, batch_size):
    """The ``tf.distribute`` strategy for translate.py's ``--devices`` and ``--batch_size``.

    Parameters
    ----------
    devices : str
        ``auto``: every GPU if more than one is visible (with a ``batch_size``
        that is not a multiple of their count, the most GPUs that divide it,
        with a note on stderr), else TensorFlow's default single device;
        ``all``: every GPU (every CPU device if there is no GPU); ``cpu``: the
        first CPU; or a comma list of device names (see
        :func:`imagetranslation.options.parse_devices`).
    batch_size : int
        The global batch, split evenly over the devices.

    Returns
    -------
    strategy : tf.distribute.Strategy or None
        None for the default single-device path, ``OneDeviceStrategy`` for one
        named device, ``MirroredStrategy`` for several (the same object for the
        same devices throughout the process).
    names : list of str
        The devices used (``["GPU:0", "GPU:1"]``); empty for the default path.

    Raises
    ------
    ValueError
        Naming ``--devices`` and the value: a device that is not visible here
        (the message lists those that are), or several devices that
        ``batch_size`` cannot be split evenly over.
    """
    import tensorflow as tf

    wanted = parse_devices(devices)

    def visible(kind):
        return [d.name.split("device:", 1)[-1] for d in tf.config.list_logical_devices(kind)]

    gpus, cpus = visible("GPU"), visible("CPU")
    if wanted == "auto":
        names = gpus
        if len(names) > 1 and batch_size % len(names):
            usable = max(k for k in range(1, len(names) + 1) if batch_size % k == 0)
            print(f"{PROG}: --batch_size {batch_size} is split over {usable} of the "
                  f"{len(names)} GPUs (a multiple of {len(names)} uses all of them)",
                  file=sys.stderr)
            names = names[:usable]
        if len(names) <= 1:
            return None, []
    elif wanted == "all":
        names = gpus or cpus
    elif wanted == "cpu":
        names = cpus[:1]
    else:
        missing = [name for name in wanted if name not in gpus + cpus]
        if missing:
            raise ValueError(f"--devices {devices}: no device {missing[0]} here (visible: "
                             f"{', '.join(cpus + gpus)})")
        names = list(wanted)
    if len(names) > 1 and batch_size % len(names):
        raise ValueError(f"--devices {devices}: --batch_size {batch_size} cannot be split "
                         f"evenly over its {len(names)} devices ({', '.join(names)}); pass a "
                         f"multiple of {len(names)}")
    key = tuple(names)
    if key not in _STRATEGIES:  # one per process and device list: see _STRATEGIES
        _STRATEGIES[key] = (tf.distribute.OneDeviceStrategy(f"/{names[0]}") if len(names) == 1
                            else tf.distribute.MirroredStrategy([f"/{n}" for n in names]))
    return _STRATEGIES[key], names


def classic_loss(kind, output, target, replica_sum=None, pos_weight=1.0):
    """The regression ("classic") loss between output and target in [-1, 1].

    ``replica_sum``: under several replicas, a function that sums a tensor over
    them; dice then uses the sums of the global batch (the other losses are
    means of their own, averaged over the replicas by the caller).
    ``pos_weight`` (``--pos_weight``): hinge, square and logistic weigh each pixel's
    term by 1 + (pos_weight - 1) x its target in [0, 1] (white 1 -> pos_weight,
    black -1 -> 1) and take the mean of the weighted terms.
    """
    import tensorflow as tf

    p, t = (output + 1.0) / 2.0, (target + 1.0) / 2.0

    def mean(terms):
        if pos_weight == 1:
            return tf.reduce_mean(terms)
        return tf.reduce_mean(terms * (1.0 + (pos_weight - 1.0) * t))

    if kind == "hinge":  # the thesis trainer's name for L1
        return mean(tf.abs(output - target))
    if kind == "square":
        return mean(tf.square(output - target))
    if kind == "dice" and replica_sum is not None:
        sums = replica_sum(tf.stack([tf.reduce_sum(p * t), tf.reduce_sum(p), tf.reduce_sum(t)]))
        return 1.0 - (2.0 * sums[0] + 1.0) / (sums[1] + sums[2] + 1.0)
    if kind == "dice":
        overlap = 2.0 * tf.reduce_sum(p * t) + 1.0
        return 1.0 - overlap / (tf.reduce_sum(p) + tf.reduce_sum(t) + 1.0)
    if kind == "logistic":
        p = tf.clip_by_value(p, EPS, 1.0 - 1e-7)
        return -mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))
    raise ValueError(f"unknown Y_loss {kind!r}")


def gan_losses(kind, real, fake):
    """(generator GAN loss, discriminator loss) from discriminator outputs."""
    import tensorflow as tf

    if kind == "log":
        gen = tf.reduce_mean(-tf.math.log(fake + EPS))
        disc = tf.reduce_mean(-(tf.math.log(real + EPS) + tf.math.log(1.0 - fake + EPS)))
    else:  # least squares
        gen = tf.reduce_mean(tf.square(fake - 1.0))
        disc = 0.5 * tf.reduce_mean(tf.square(real - 1.0) + tf.square(fake))
    return gen, disc


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam with TensorFlow's fused update (``ResourceApplyAdam``): one op per
    variable instead of about ten, the same formula, state variables and checkpoints.
    Keras' own update for AMSGrad, sparse gradients and dtypes other than float32."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        var = variable.value if isinstance(variable, keras.Variable) else variable
        if (self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or var.dtype != tf.float32 or not hasattr(var, "handle")):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1, beta2=beta_2, epsilon=tf.constant(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32), use_locking=False)


class Model:
    """Generator (+ discriminator) with optimizers and a checkpoint.

    Parameters
    ----------
    options : dict
        The run's options (network, losses, ``lr``, ``beta1``, ``xla``).
    strategy : tf.distribute.Strategy or None
        Where the variables live and the step runs (see :func:`device_strategy`);
        None: TensorFlow's default device.  With several replicas batch
        normalisation is synchronized (statistics of the global batch).  The
        checkpoint's contents do not depend on it: a run saved under one
        strategy resumes under another.
    """

    def __init__(self, options, strategy=None):
        import contextlib

        import tensorflow as tf

        self.options = options
        self.strategy = strategy
        self.replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        synchronized = self.replicas > 1
        with contextlib.nullcontext() if strategy is None else strategy.scope():
            self.generator = build_generator(options, synchronized=synchronized)
            self.g_opt = FusedAdam(options["lr"], beta_1=options["beta1"])
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            tracked = {"generator": self.generator, "gen_optimizer": self.g_opt,
                       "step": self.step}
            self.discriminator = None
            if options["gan_weight"] > 0:
                self.discriminator = patch_discriminator(ndf=options["ndf"],
                                                         sigmoid=options["loss"] == "log",
                                                         synchronized=synchronized)
                self.d_opt = FusedAdam(options["lr"], beta_1=options["beta1"])
                tracked.update(discriminator=self.discriminator, disc_optimizer=self.d_opt)
            self.g_opt.build(self.generator.trainable_variables)
            if self.discriminator is not None:
                self.d_opt.build(self.discriminator.trainable_variables)
            self.generator_ema = None
            if options.get("ema"):
                self.generator_ema = build_generator(options, synchronized=synchronized)
                tracked["generator_ema"] = self.generator_ema
                self.reset_ema()
            self.checkpoint = tf.train.Checkpoint(**tracked)

    @property
    def averaged(self):
        """The generator a user gets: the moving average with ``--ema``, else the generator."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def _ema_pairs(self):
        """(average, variable) of every float variable; the two generators are built alike,
        so their variables (in the order of the layers) pair up."""
        averages, weights = self.generator_ema.variables, self.generator.variables
        if len(averages) != len(weights) or any(
                tuple(e.shape) != tuple(w.shape) or e.dtype != w.dtype
                for e, w in zip(averages, weights)):
            raise AssertionError("the moving-average generator does not mirror the generator")
        return [(e, w) for e, w in zip(averages, weights) if "float" in str(w.dtype)]

    def reset_ema(self):
        """Start the moving average at the generator's weights (a new or transferred run)."""
        if self.generator_ema is not None:
            for average, weight in self._ema_pairs():
                average.assign(weight.value)

    def update_ema(self):
        """One step of the moving average of every generator variable (the weights and batch
        norm's statistics), with TensorFlow's warm-up: after ``t`` steps the decay is
        ``min(ema, (1 + t) / (10 + t))``, so the first steps are not averaged with the
        initial weights for long.  Called after the weights moved, before the step counter
        does."""
        import tensorflow as tf

        t = tf.cast(self.step, tf.float32)
        decay = tf.minimum(tf.constant(self.options["ema"], tf.float32), (1.0 + t) / (10.0 + t))
        for average, weight in self._ema_pairs():
            average.assign_sub((1.0 - decay) * (average.value - weight.value))

    def train_step_fn(self):
        """A ``tf.function`` that trains one batch and adds 1 to the step counter.

        Called with a batch of inputs and targets (under a strategy: the
        elements of ``strategy.experimental_distribute_dataset``); returns the
        losses (of the whole batch), the outputs (under several replicas: the
        first replica's share) and the new step.
        """
        import tensorflow as tf

        o = self.options
        gen, disc = self.generator, self.discriminator
        strategy, replicas = self.strategy, self.replicas
        replica_sum = None
        if replicas > 1:
            def replica_sum(value):
                return tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, value)

        def share(value):
            # Each replica's losses are means over its share of the global batch (dice and
            # batch statistics: over the whole batch), and the optimizers sum the replicas'
            # gradients: 1/replicas of each gives the gradient of the global batch's mean,
            # so the learning rate stays that of one device.
            return value if replicas == 1 else value / replicas

        def update(inputs, targets):
            with tf.GradientTape(persistent=True) as tape:
                outputs = gen(inputs)
                classic = classic_loss(o["Y_loss"], outputs, targets, replica_sum,
                                       o.get("pos_weight", 1.0))
                loss = o["classic_weight"] * classic
                gan = d_loss = tf.constant(0.0)
                if disc is not None:
                    real = disc([inputs, targets])
                    fake = disc([inputs, outputs])
                    gan, d_loss = gan_losses(o["loss"], real, fake)
                    loss = loss + o["gan_weight"] * gan
                shared_loss, shared_d_loss = share(loss), share(d_loss)  # on the tape
            if disc is not None:
                d_grads = tape.gradient(shared_d_loss, disc.trainable_variables)
                self.d_opt.apply_gradients(zip(d_grads, disc.trainable_variables))
            grads = tape.gradient(shared_loss, gen.trainable_variables)
            self.g_opt.apply_gradients(zip(grads, gen.trainable_variables))
            del tape
            return {"gen_loss_classic": classic, "gen_loss_GAN": gan,
                    "discrim_loss": d_loss}, outputs

        def step(inputs, targets):
            if strategy is None:
                losses, outputs = update(inputs, targets)
            else:
                losses, outputs = strategy.run(update, args=(inputs, targets))
                losses = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                          for k, v in losses.items()}
                outputs = strategy.experimental_local_results(outputs)[0]
            if self.generator_ema is not None:
                self.update_ema()
            # The step counter moves in the same graph call as the weights, so an
            # interrupt (Ctrl-C) never separates them.
            step = self.step.assign_add(1)
            return {**losses, "outputs": outputs, "step": step}

        return tf.function(step, jit_compile=bool(o.get("xla")), reduce_retracing=True)


def write_options(path, options):
    """Write ``options`` (plus :func:`runtime_settings` as ``"runtime"``) to ``path`` atomically."""
    record = {**options, "runtime": runtime_settings()}
    write_file(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _index_html(path, header, rows):
    """Write a table of images atomically; rows are lists of cells (text or image file names)."""
    cells = []
    for row in rows:
        parts = []
        for cell in row:
            if str(cell).endswith((".png", ".jpg", ".jpeg")):
                parts.append(f'<td><img src="{html.escape(str(cell))}" width="256"></td>')
            else:
                parts.append(f"<td>{html.escape(str(cell))}</td>")
        cells.append("<tr>" + "".join(parts) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    write_file(path, f"<html><body><table border=1>\n<tr>{head}</tr>\n" + "\n".join(cells)
               + "\n</table></body></html>\n")


def _holds_run(folder):
    """Whether ``folder`` holds a run (checkpoints or an options.json)."""
    folder = Path(folder)
    return folder.is_dir() and any(_RUN_MARKERS.match(p.name) for p in folder.iterdir())


def _holds_checkpoints(folder):
    folder = Path(folder)
    return folder.is_dir() and any(p.name == "checkpoint" or p.name.endswith(".index")
                                   for p in folder.iterdir())


def check_train_output(options):
    """Refuse to train into a folder holding another run, unless resuming it or ``force``.

    Raises
    ------
    ValueError
        If ``output_dir`` holds checkpoints or an options.json and is not the
        ``checkpoint`` folder being resumed and ``force`` is not set; if
        ``force`` would remove the checkpoint being resumed; or if ``restore``
        (``generators``, ``both``) would start a new run in the ``checkpoint``
        folder it reads.
    """
    out, checkpoint = Path(options["output_dir"]), options.get("checkpoint")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is an existing file, expected a folder")
    what = options.get("restore") or "all"
    if checkpoint is not None and what != "all" and same_path(checkpoint, out):
        raise ValueError(f"--restore {what} starts a new training from the weights of "
                         f"--checkpoint {checkpoint}: --output_dir must be another folder (to "
                         "resume that run, leave out --restore)")
    resuming_here = checkpoint is not None and same_path(checkpoint, out)
    if options.get("force") and resuming_here:
        raise ValueError(f"--force would remove the checkpoints of --checkpoint {checkpoint} "
                         f"(the same folder as --output_dir {out}): pass one of them")
    if _holds_run(out) and not resuming_here and not options.get("force"):
        raise ValueError(f"--output_dir {out} already holds a run (checkpoints/options.json): "
                         f"pass --checkpoint {out} to resume it or --force to start over")


def remove_run_files(folder):
    """Remove what a run wrote into ``folder``: checkpoints, events, options, images.

    Other files are kept.  Returns the paths removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _RUN_FILES.match(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    images = folder / "images"
    if images.is_dir():
        for entry in images.iterdir():
            if _RUN_IMAGES.match(entry.name) and entry.is_file():
                entry.unlink()
                removed.append(entry)
        if not any(images.iterdir()):
            images.rmdir()
    return removed


def _remove_tf_temporaries(folder):
    """Remove the temporaries a checkpoint save killed by SIGKILL left in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if _TF_TEMPORARIES.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry)
            elif _TF_TEMPORARIES.match(entry.name):
                entry.unlink()


def check_sizes(options, height, width):
    """Check that the crop fits the (scaled) ``height`` x ``width`` images and the networks.

    Raises
    ------
    ValueError
        If ``crop_size`` is larger than the scaled images, not a multiple of
        the generator's stride, or too small for the PatchGAN discriminator.
    """
    height, width = D.scaled_size(height, width, options["scale_size"])
    crop = options["crop_size"]
    if crop > min(height, width):
        raise ValueError(f"--crop_size {crop} is larger than the scaled image "
                         f"({height} x {width}) from {options['input_dir']}")
    if crop % stride_of(options):
        raise ValueError(f"--crop_size {crop} must be a multiple of "
                         f"{stride_of(options)} for the {options['generator']} generator")
    if options["gan_weight"] > 0 and crop < 32:
        raise ValueError(f"--crop_size {crop} is too small for the PatchGAN "
                         "discriminator (needs >= 32; or train with --gan_weight 0)")
    sigma = options.get("blur_sigma")
    if "blur" in parse_augment(options.get("augment")) and sigma is not None:
        radius = D.blur_radius(sigma)
        if radius >= crop:
            raise ValueError(f"--blur_sigma {sigma} needs a kernel of radius {radius}, which "
                             f"must be smaller than --crop_size {crop}")


def resume_options(options):
    """Options for a run resumed from ``options["checkpoint"]`` (a new dict).

    The checkpoint's network options (:data:`NETWORK_KEYS`) replace the given
    ones, since the weights have their shapes.

    Returns
    -------
    options : dict
        The merged options.
    saved_with_gan : bool
        Whether the checkpoint was trained with a discriminator.
    """
    saved, source = _saved_options(options["checkpoint"])
    saved = {"ema": 0.0, **saved}  # runs from before --ema have none
    changed = {k: saved[k] for k in NETWORK_KEYS if k in saved and saved[k] != options.get(k)}
    if changed:
        print(f"{PROG}: resuming with the network options of {source}: {changed}",
              file=sys.stderr)
    return {**options, **changed}, saved.get("gan_weight", 0) > 0


def _shown(key, value):
    if key == "encoder_activation":
        return f"--encoder_activation {'on' if value else 'off'}"
    return f"--{key} {value}"


def transfer_options(options):
    """Check that a new training can start from the weights of ``options["checkpoint"]``.

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
    saved, source = _saved_options(options["checkpoint"])
    what, checkpoint = options["restore"], options["checkpoint"]
    kind = options["generator"]
    keys = ("generator", "ngf") + GENERATOR_SHAPE_KEYS.get(kind, ())
    defaults = {**GENERATOR_DEFAULTS, "encoder_activation": False}
    for key in keys:
        mine, theirs = options.get(key), saved.get(key, defaults.get(key))
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
        if not options["gan_weight"] > 0:
            raise ValueError(f"--restore both: --gan_weight {options['gan_weight']:g} trains "
                             "no discriminator; use --restore generators")
        if options["ndf"] != saved.get("ndf"):
            raise ValueError(f"--restore both: --ndf {options['ndf']} does not match the "
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


def train(options):
    """Train a model as ``translate.py --mode train`` does.

    Parameters
    ----------
    options : dict
        As :func:`imagetranslation.translate.resolve` makes them; not modified.

    Returns
    -------
    dict
        ``options`` (the options the run used, as written to options.json,
        ``max_steps`` resolved, a resumed checkpoint's network options
        applied, and ``training_devices``: the devices of :func:`device_strategy`,
        empty for TensorFlow's default one), ``step`` (the step reached),
        ``losses`` (the last step's) and ``training``: the record written to
        ``training.json`` (see :func:`fit`).

    Raises
    ------
    ValueError, FileNotFoundError
        Bad input data, sizes, output folder or checkpoint; nothing is written then.
    KeyboardInterrupt
        On Ctrl-C, after saving a checkpoint at the step reached.
    """
    options = dict(options)
    check_values(options)
    options["restore"] = options.get("restore") or "all"
    if options["restore"] != "all" and not options.get("checkpoint"):
        raise ValueError(f"--restore {options['restore']} needs --checkpoint (the training "
                         "output folder whose weights the new training starts from)")
    configure_runtime(options.get("deterministic", False), options.get("threads"))
    check_train_output(options)
    strategy, devices = device_strategy(options.get("devices") or "auto", options["batch_size"])
    if options.get("xla") and len(devices) > 1:
        raise ValueError(f"--xla compiles the step for one device; --devices "
                         f"{options.get('devices') or 'auto'} trains on {len(devices)} "
                         f"({', '.join(devices)}): pass --devices {devices[0]} or leave out --xla")
    options["training_devices"] = devices
    inputs, targets, _ = D.load_pairs(options["input_dir"], options["which_direction"])
    check_sizes(options, *inputs.shape[1:3])
    validation = None
    if options.get("validation_dir"):
        validation = D.load_pairs(options["validation_dir"], options["which_direction"],
                                  what="--validation_dir")[:2]  # RGB, as the inputs
    steps_per_epoch = math.ceil(len(inputs) / options["batch_size"])
    if options.get("max_steps") is None and options.get("max_epochs") is not None:
        options["max_steps"] = options["max_epochs"] * steps_per_epoch
    options["max_steps"] = options.get("max_steps")
    if options.get("max_steps") is None and options.get("max_minutes") is None:
        raise ValueError("--mode train needs --max_epochs or --max_steps, or a time budget "
                         "--max_minutes")
    options["augment"] = parse_augment(options.get("augment"))
    two_slice = {"missing_slice", "misalign"} & set(options["augment"])
    if two_slice and np.array_equal(inputs[..., 0], inputs[..., 1]):
        print(f"{PROG}: warning: --augment {','.join(sorted(two_slice))} changes the red or "
              f"the green channel, but the inputs of {options['input_dir']} have equal red "
              "and green channels (one slice, not a consecutive pair)", file=sys.stderr)
    saved_with_gan = None
    resuming = bool(options.get("checkpoint")) and options["restore"] == "all"
    if resuming:
        options, saved_with_gan = resume_options(options)
    elif options.get("checkpoint"):
        transfer_options(options)
    configure(options)
    model = Model(options, strategy)
    if resuming:
        restore(model.checkpoint, options["checkpoint"],
                partial=not saved_with_gan and model.discriminator is not None)
    elif options.get("checkpoint"):
        restored = restore_weights(model, options["checkpoint"], options["restore"])
        parts = {"generators": "generator", "both": "generator and discriminator"}
        print(f"{PROG}: a new training from the {parts[options['restore']]} weights of "
              f"{restored}", file=sys.stderr)
    out = Path(options["output_dir"])
    if options.get("force"):
        remove_run_files(out)
    _remove_tf_temporaries(out)
    write_options(out / "options.json", options)
    start = int(model.step.numpy())
    end = "" if options["max_steps"] is None else options["max_steps"]
    budget = "" if options.get("max_minutes") is None else \
        f", at most {options['max_minutes']:g} minutes"
    where = f"device {device_summary()}"
    if devices:
        share = options["batch_size"] // len(devices)
        where = (f"device{'s' if len(devices) > 1 else ''} {', '.join(devices)}"
                 + (f" ({share} image{'s' if share > 1 else ''} each)"
                    if len(devices) > 1 else ""))
    print(f"{PROG}: training {options['generator']} (ngf {options['ngf']}) on "
          f"{len(inputs)} images, steps {start}..{end}{budget} "
          f"({steps_per_epoch} per epoch), {where}", file=sys.stderr)
    dataset = D.training_dataset(inputs, targets, options, start)
    step, losses, record = fit(model, dataset, options, start, validation)
    print(f"{PROG}: trained to step {step} in {record['seconds']:.1f} s (stopped by "
          f"{record['stopped_by']}); checkpoint, options.json, training.json and TensorBoard "
          f"logs in {out}", file=sys.stderr)
    return {"options": options, "step": step, "losses": losses, "training": record}


def _previous_seconds(options):
    """``seconds_total`` of the training.json in the folder being resumed (0 if none)."""
    checkpoint = options.get("checkpoint")
    if not checkpoint or (options.get("restore") or "all") != "all":
        return 0.0
    try:
        record = json.loads((Path(checkpoint) / "training.json").read_text(encoding="utf-8"))
        total = float(record["seconds_total"])
    except (OSError, ValueError, TypeError, KeyError):
        return 0.0
    return total if math.isfinite(total) and total >= 0 else 0.0


def write_training_record(out, record):
    """Write ``record`` to ``out/training.json`` atomically (sorted keys, indented)."""
    write_file(Path(out) / "training.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def learning_rate_at(lr, decay, step, max_steps=None, elapsed=None, budget=None):
    """``--lr_decay``: the learning rate of the step after ``step`` steps.

    The run's progress is the larger of ``step / max_steps`` and ``elapsed / budget``
    (seconds), each where known, clipped to [0, 1]: the schedule ends where the run
    ends, by steps or by its time budget, whichever comes first.  ``none`` keeps
    ``lr``; ``cosine`` is ``lr (1 + cos(pi p)) / 2``; ``linear`` is ``lr (1 - p)``.
    Without a known end (neither given) the rate stays ``lr``.
    """
    if decay == "none":
        return lr
    progress = []
    if max_steps:
        progress.append(step / max_steps)
    if budget:
        progress.append((elapsed or 0.0) / budget)
    p = min(max(max(progress, default=0.0), 0.0), 1.0)
    if decay == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if decay == "linear":
        return lr * (1.0 - p)
    raise ValueError(f"--lr_decay must be one of none, cosine, linear; got {decay!r}")


class Validation:
    """``--validation_dir``: the generator's ``--Y_loss`` on held-out images, and its best
    weights in ``<output_dir>/best`` (a checkpoint of the generator alone).

    The images are predicted whole with batch norm's moving averages (and with ``--ema``
    by the weights' moving average), as ``--mode test`` predicts them, so the loss is that
    of the network a user would get.  A resumed run in the same
    folder keeps the best of before (from its training.json).
    """

    def __init__(self, model, images, options, out):
        import tensorflow as tf

        self.generator = model.averaged
        self.inputs = D.to_model_range(images[0])
        self.targets = D.to_model_range(images[1])
        self.kind, self.stride = options["Y_loss"], stride_of(options)
        self.pos_weight = options.get("pos_weight", 1.0)
        self.folder = Path(out) / "best"
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=self.generator),
                                                  str(self.folder), max_to_keep=1)
        self.best_loss, self.best_step, self.history = math.inf, None, []
        previous = Path(out) / "training.json"
        if self.manager.latest_checkpoint and previous.is_file():
            try:
                earlier = json.loads(previous.read_text()).get("validation") or {}
            except (OSError, ValueError):
                earlier = {}
            if earlier.get("best_loss") is not None:
                self.best_loss, self.best_step = earlier["best_loss"], earlier["best_step"]
                self.history = list(earlier.get("history", []))

    def loss(self):
        import tensorflow as tf

        outputs = np.concatenate([predict_batch(self.generator, self.inputs[i:i + 8],
                                                self.stride)
                                  for i in range(0, len(self.inputs), 8)])
        return float(classic_loss(self.kind, tf.constant(outputs), tf.constant(self.targets),
                                  pos_weight=self.pos_weight))

    def __call__(self, step):
        """Validate at ``step``; save the weights if they are the best so far."""
        loss = self.loss()
        self.history.append([int(step), loss])
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, int(step)
            self.manager.save(checkpoint_number=step)
        return loss

    def record(self, options):
        return {"dir": str(options["validation_dir"]), "freq": options["validation_freq"],
                "loss": options["Y_loss"], "pos_weight": self.pos_weight,
                "best_step": self.best_step,
                "best_loss": self.best_loss if self.best_step is not None else None,
                "history": self.history}


def fit(model, dataset, options, start, validation=None):
    """Run the training loop from step ``start``.

    Writes checkpoints every ``save_freq`` steps and at the end, TensorBoard
    scalars every ``summary_freq`` steps, display images every
    ``display_freq`` steps, progress lines every ``progress_freq`` steps.
    Stops after step ``max_steps`` or, with ``max_minutes``, after the first
    step that ends ``max_minutes`` or more after the loop began (the clock is
    read after each step, so the run overshoots its budget by less than one
    step, plus the final checkpoint save), whichever comes first; without
    ``max_steps`` only the budget ends it.  The budget applies to this call:
    a run resumed with ``--checkpoint`` gets ``max_minutes`` more.  It counts
    the training loop, including the tracing of the first step, not
    TensorFlow's start-up and the loading of the images before it.  On Ctrl-C
    it saves a checkpoint at the step reached, writes training.json, then re-raises.

    Returns
    -------
    step : int
        The step reached.
    losses : dict
        The last step's losses.
    record : dict
        What ``output_dir/training.json`` holds (written atomically):
        ``steps_reached`` (int, the global step of the last checkpoint),
        ``start_step`` (int, where this invocation began), ``stopped_by``
        (``"max_steps"``, ``"max_minutes"`` or ``"interrupted"``), ``seconds``
        (float, wall time of this invocation's training loop, final
        checkpoint included), ``seconds_total`` (``seconds`` plus the
        ``seconds_total`` of the training.json of the run resumed, if any),
        ``max_steps`` (int or None), ``max_minutes`` (float or None).
    """
    import tensorflow as tf

    out = Path(options["output_dir"])
    manager = tf.train.CheckpointManager(model.checkpoint, str(out), max_to_keep=3)
    writer = tf.summary.create_file_writer(str(out))
    total = options["max_steps"]
    minutes = options.get("max_minutes")
    budget = None if minutes is None else 60.0 * minutes
    earlier = _previous_seconds(options)
    step_fn = model.train_step_fn()
    strategy = getattr(model, "strategy", None)
    if strategy is not None:  # each global batch split evenly over the replicas, in order
        dataset = strategy.experimental_distribute_dataset(dataset)
    validator = None if validation is None else Validation(model, validation, options, out)
    validated = None
    progress = StepProgress(total, start, desc=PROG, every_steps=options["progress_freq"],
                            final_line=True, unit="step")
    losses, step, saved = {}, start, None
    stopped_by = "max_steps"
    began = _clock()

    def record(why):
        seconds = max(_clock() - began, 0.0)
        result = {"steps_reached": step, "start_step": start, "stopped_by": why,
                  "seconds": round(seconds, 3), "seconds_total": round(earlier + seconds, 3),
                  "max_steps": total, "max_minutes": minutes}
        if validator is not None:
            result["validation"] = validator.record(options)
        write_training_record(out, result)
        return result

    def save():
        nonlocal saved
        if saved != step:
            manager.save(checkpoint_number=step)
            saved = step

    def validate():
        nonlocal validated
        value, validated = validator(step), step
        with writer.as_default(step=step):
            tf.summary.scalar("validation_loss", value)

    decay = options.get("lr_decay") or "none"
    optimizers = [model.g_opt] + ([model.d_opt] if model.discriminator is not None else [])

    def schedule():
        elapsed = _clock() - began if decay != "none" and budget is not None else None
        rate = learning_rate_at(options["lr"], decay, step, total, elapsed, budget)
        for optimizer in optimizers:
            optimizer.learning_rate.assign(rate)
        return rate

    rate = schedule()  # also on a resume: the checkpoint holds the rate it stopped at
    try:
        for batch_inputs, batch_targets in dataset:
            if decay != "none":
                rate = schedule()
            result = step_fn(batch_inputs, batch_targets)
            step = int(result["step"])
            losses = {k: float(v) for k, v in result.items() if k not in ("outputs", "step")}
            if model.discriminator is None:
                losses = {"gen_loss_classic": losses["gen_loss_classic"]}
            if options["summary_freq"] and step % options["summary_freq"] == 0 or step == total:
                with writer.as_default(step=step):
                    for key, value in losses.items():
                        tf.summary.scalar(key, value)
                    if decay != "none":
                        tf.summary.scalar("learning_rate", rate)
            if options["display_freq"] and step % options["display_freq"] == 0:
                if strategy is not None:  # the first replica's share, as result["outputs"]
                    batch_inputs, batch_targets = (strategy.experimental_local_results(b)[0]
                                                   for b in (batch_inputs, batch_targets))
                _display(out, step, batch_inputs, result["outputs"], batch_targets, writer)
            if options["save_freq"] and step % options["save_freq"] == 0:
                save()
            if validator is not None and step % options["validation_freq"] == 0:
                validate()
            progress.update(step, " ".join(f"{k}={v:.4g}" for k, v in losses.items()))
            if budget is not None and step != total and _clock() - began >= budget:
                stopped_by = "max_minutes"
                break
        progress.close()
        if step > start or manager.latest_checkpoint is None:
            save()
        if validator is not None and validated != step:
            validate()
        if validator is not None:
            print(f"{PROG}: validation {options['Y_loss']} loss {validator.best_loss:.5g} at "
                  f"step {validator.best_step} (of {len(validator.history)} checks): its "
                  f"generator in {validator.folder}", file=sys.stderr)
    except KeyboardInterrupt:
        progress.close()
        step = int(model.step.numpy())
        save()
        writer.flush()
        record("interrupted")
        print(f"{PROG}: interrupted at step {step}; saved checkpoint {manager.latest_checkpoint} "
              f"(resume with --checkpoint {out})", file=sys.stderr)
        raise
    writer.flush()
    return step, losses, record(stopped_by)


def _display(out, step, inputs, outputs, targets, writer):
    """Save the first image of the batch to images/ and TensorBoard; rewrite index.html."""
    import tensorflow as tf

    for kind, batch in (("inputs", inputs), ("outputs", outputs), ("targets", targets)):
        image = D.from_model_range(np.asarray(batch[0], dtype=np.float32))
        write_image(out / "images" / f"{step:08d}-{kind}.png", image)
        with writer.as_default(step=step):
            tf.summary.image(kind, image[None], step=step)
    rows = []
    for path in sorted((out / "images").glob("*-inputs.png")):
        number = path.name.split("-")[0]
        if number.isdigit():
            rows.append([int(number)] + [f"images/{number}-{kind}.png"
                                         for kind in ("inputs", "outputs", "targets")])
    _index_html(out / "index.html", ["step", "input", "output", "target"], rows)


def _saved_options(checkpoint_dir):
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


def load_for_inference(checkpoint_dir, overrides=None):
    """Generator restored from ``checkpoint_dir`` with its saved architecture options.

    Returns
    -------
    generator : keras.Model
    options : dict
        ``overrides`` (not modified) with the checkpoint's :data:`ARCH_KEYS`.
    """
    import tensorflow as tf

    saved, _ = _saved_options(checkpoint_dir)
    options = dict(overrides or {})
    options.update({k: saved[k] for k in ARCH_KEYS if k in saved})
    configure({"seed": options.get("seed", 0), "mixed_precision": options.get("mixed_precision")})
    generator = build_generator(options)
    best = Path(checkpoint_dir) / "best"
    key = "generator_ema" if options.get("ema") else "generator"  # what a user gets
    if options.get("weights", "best") == "best" and tf.train.latest_checkpoint(str(best)):
        checkpoint_dir, key = best, "generator"  # the validated best weights (--validation_dir)
    restore(tf.train.Checkpoint(**{key: generator}), checkpoint_dir, partial=True)
    return generator, options


_COMPILED = None  # generator -> its inference tf.function (a WeakKeyDictionary)


def _inference(generator):
    """``generator(batch, training=False)`` as one ``tf.function`` traced once for any batch
    size and image size (a Keras model; any other callable is called as it is).  Calling a
    Keras model eagerly dispatches every layer from Python on every slice."""
    import weakref

    import tensorflow as tf

    global _COMPILED
    if not isinstance(generator, keras.Model):
        return lambda batch: generator(batch, training=False)
    if _COMPILED is None:
        _COMPILED = weakref.WeakKeyDictionary()
    function = _COMPILED.get(generator)
    if function is None:
        channels = generator.inputs[0].shape[-1]
        model = weakref.ref(generator)  # the cache must not keep the generator alive
        function = tf.function(lambda batch: model()(batch, training=False),
                               input_signature=[tf.TensorSpec([None, None, None, channels],
                                                              tf.float32)])
        _COMPILED[generator] = function
    return function


def predict_batch(generator, images, stride):
    """Run ``generator`` on a batch of (n, y, x, c) float images of one size, of any size
    (padded to a multiple of ``stride``, then cropped); returns (n, y, x, c_out) float32.

    One call of a compiled function for the whole batch; the moving averages normalise
    (``training=False``), so each image's output does not depend on the others'."""
    images = np.asarray(images, dtype=np.float32)
    height, width = images.shape[1:3]
    pad_h, pad_w = -height % stride, -width % stride
    mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    output = np.asarray(_inference(generator)(padded), dtype=np.float32)
    return output[:, :height, :width]


def predict(generator, image, stride):
    """Run ``generator`` on one (y, x, c) float image of any size (padded, then cropped)."""
    return predict_batch(generator, image[None], stride)[0]


#: Test-time augmentation predicts its transforms in batches of at most this many pixels
#: (all 8 of a 724 x 724 slice at once; a 1024 x 1024 slice 4 at a time), so that a slice
#: that fits alone does not need 8 times the activations.
TTA_BATCH_PIXELS = 2**22

#: The 8 symmetries of the square as (transpose, flip up-down, flip left-right), applied in
#: that order; the identity first.
DIHEDRAL = tuple((t, fy, fx) for t in (False, True) for fy in (False, True)
                 for fx in (False, True))


def dihedral(image, transform):
    """Apply one of :data:`DIHEDRAL` to a (y, x, ...) array: transpose, then flips."""
    transpose, flip_y, flip_x = transform
    if transpose:
        image = np.swapaxes(image, 0, 1)
    if flip_y:
        image = image[::-1]
    if flip_x:
        image = image[:, ::-1]
    return image


def dihedral_inverse(image, transform):
    """Undo :func:`dihedral`: flips, then transpose."""
    transpose, flip_y, flip_x = transform
    if flip_x:
        image = image[:, ::-1]
    if flip_y:
        image = image[::-1]
    if transpose:
        image = np.swapaxes(image, 0, 1)
    return image


def predict_tta(generator, image, stride):
    """Test-time augmentation: :func:`predict` averaged over the 8 flips and transposes.

    Each of the 8 symmetries of the square (:data:`DIHEDRAL`) is applied to
    ``image`` and predicted in batches (one per orientation, all 8 at once for a
    square image, at most :data:`TTA_BATCH_PIXELS` pixels each; with the moving
    averages an image's output does not depend on the rest of its batch),
    inverted, and the 8 results are averaged.  Non-square images get all 8 too:
    the generator is fully convolutional, so a transposed (x, y) image is
    predicted like any other size.  Costs 8 predictions.  For a generator that
    commutes with flips and transposes it equals :func:`predict` (up to
    rounding) when the sides are multiples of ``stride`` (otherwise the padding
    :func:`predict` adds at the bottom and right lands on other sides of the
    transformed images).

    Parameters
    ----------
    generator : callable
        ``generator(batch, training=False)`` on (1, y, x, c) float32.
    image : numpy.ndarray
        (y, x, c) float32 in [-1, 1].
    stride : int
        The generator's stride (see :func:`predict`).

    Returns
    -------
    numpy.ndarray
        (y, x, c_out) float32.
    """
    if image.shape[0] == image.shape[1]:  # one batch per shape: all 8 at once for a square
        groups = [list(DIHEDRAL)]
    else:
        groups = [[t for t in DIHEDRAL if t[0] == transposed] for transposed in (False, True)]
    per_batch = max(1, TTA_BATCH_PIXELS // (image.shape[0] * image.shape[1]))
    total = None
    for group in groups:
        for start in range(0, len(group), per_batch):  # large slices: fewer at a time
            part = group[start:start + per_batch]
            moved = np.stack([dihedral(image, t) for t in part])
            for transform, output in zip(part, predict_batch(generator, moved, stride)):
                output = dihedral_inverse(output, transform).astype(np.float64)
                total = output if total is None else total + output
    return (total / len(DIHEDRAL)).astype(np.float32)


def check_inference_output(options):
    """Refuse a test/export ``output_dir`` that is a training run's folder.

    Raises
    ------
    ValueError
        If ``output_dir`` is the ``checkpoint`` folder or holds checkpoints:
        the outputs would overwrite that run's options.json.
    """
    out, checkpoint = Path(options["output_dir"]), options["checkpoint"]
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is an existing file, expected a folder")
    if same_path(out, checkpoint) or _holds_checkpoints(out):
        what = (f"the --checkpoint folder {checkpoint}" if same_path(out, checkpoint)
                else "a training run's folder (it holds checkpoints)")
        raise ValueError(f"--output_dir {out} is {what}: --mode {options.get('mode', 'test')} "
                         "would overwrite its options.json; choose another --output_dir")


def test(options):
    """Translate every combined image of input_dir (``translate.py --mode test``).

    Writes ``images/<name>-{inputs,outputs,targets}.<png|jpeg>``, then
    ``index.html`` and ``options.json`` into ``output_dir``.  With ``tta`` the
    outputs are :func:`predict_tta`'s average over the 8 flips and transposes.  ``images/`` is
    written atomically (:func:`neuron3d.io.write_folder`): on any error nothing
    is written, not even an empty ``output_dir``.  Returns the number of images.

    Raises
    ------
    ValueError, FileNotFoundError
        Bad checkpoint, input folder, or an ``output_dir`` that is a training
        run's folder (see :func:`check_inference_output`).
    """
    from PIL import Image

    options = dict(options)
    check_values(options)
    check_inference_output(options)
    configure_runtime(options.get("deterministic", False), options.get("threads"))
    generator, options = load_for_inference(options["checkpoint"], options)
    inputs, targets, names = D.load_pairs(options["input_dir"], options["which_direction"])
    out = Path(options["output_dir"])
    size = (options.get("image_height") or inputs.shape[1], options.get("image_width")
            or inputs.shape[2])
    stride = stride_of(options)
    predictor = predict_tta if options.get("tta") else predict
    suffix = "." + options.get("output_filetype", "png")
    rows = []

    def fill(tmp):
        progress = StepProgress(len(names), desc=PROG, every_seconds=10.0, final_line=True,
                                unit="image")
        with progress:
            for count, (a, b, name) in enumerate(zip(inputs, targets, names), 1):
                if a.shape[:2] != size:
                    a = np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR))
                    b = np.asarray(Image.fromarray(b).resize(size[::-1], Image.BILINEAR))
                output = D.from_model_range(predictor(generator, D.to_model_range(a), stride))
                row = [name]
                for kind, image in (("inputs", a), ("outputs", output), ("targets", b)):
                    file = f"{name}-{kind}{suffix}"
                    Image.fromarray(image).save(tmp / file)
                    row.append(f"images/{file}")
                rows.append(row)
                progress.update(count)

    write_folder(out / "images", fill, owned=lambda name: _RUN_IMAGES.match(name) is not None)
    _index_html(out / "index.html", ["name", "input", "output", "target"], rows)
    write_options(out / "options.json", options)
    print(f"{PROG}: wrote {len(rows)} outputs to {out / 'images'}", file=sys.stderr)
    return len(rows)


def export(options):
    """Write a TensorFlow SavedModel that predicts without this code (``--mode export``)."""
    options = dict(options)
    check_inference_output(options)
    generator, options = load_for_inference(options["checkpoint"], options)
    out = Path(options["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    target = out / "saved_model"
    generator.export(str(target), format="tf_saved_model", verbose=False)
    write_options(out / "options.json", options)
    print(f"{PROG}: exported SavedModel to {target} (input: float32 (batch, y, x, 3) in "
          f"[-1, 1], sizes multiple of {stride_of(options)})", file=sys.stderr)
    return target

"""TensorFlow's runtime for a run: threads and determinism, seeds and precision, devices.

``--deterministic`` and ``--threads`` (:func:`configure_runtime`), the settings a
run records in its options.json (:func:`runtime_settings`), the seed and the
mixed-precision policy (:func:`configure`), and the ``tf.distribute`` strategy of
``--devices`` (:func:`device_strategy`).
"""

from __future__ import annotations

import os
import sys

from .config import as_config, parse_devices

PROG = "translate.py"


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


#: /proc/cpuinfo flags of the CPU instructions that make bfloat16 fast in oneDNN.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: The smallest --crop_size that ``auto`` trains in bfloat16: on the 2-core AVX512_BF16
#: machine the ngf-32 ResNet of --recipe real trained 1.42x the steps in bfloat16 with crops
#: of 124 pixels, but 0.83x with crops of 48, where the casts outweigh the faster
#: convolutions (documentation/trainer.md).
BF16_MIN_CROP = 96


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (the first ``flags`` line of ``path``); empty if unreadable."""
    try:
        with open(path, encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_mixed_precision(value, deterministic, devices, crop_size, flags=None):
    """``--mixed_precision auto``: ``"bf16"`` on a CPU with :data:`BF16_FLAGS` for crops of at
    least :data:`BF16_MIN_CROP` (no GPU among ``devices`` or visible, no ``deterministic``,
    which caps oneDNN at AVX2), else None; any other value as it is."""
    if value != "auto":
        return value
    if crop_size < BF16_MIN_CROP:
        return None
    return "bf16" if bf16_cpu(deterministic, devices, flags) else None


def bf16_cpu(deterministic, devices=(), flags=None, needs=BF16_FLAGS):
    """Whether training runs on a CPU with one of the flags ``needs`` (no GPU among
    ``devices`` or visible) and without ``deterministic`` (which caps oneDNN at AVX2)."""
    if deterministic or any("GPU" in str(d).upper() for d in devices or ()):
        return False
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return False
    return bool(set(needs) & (cpu_flags() if flags is None else flags))


def all_finite(tensors):
    """A boolean tensor: whether every value of ``tensors`` (None entries ignored) is finite;
    the trainers' check of a bfloat16 step before they apply it."""
    import tensorflow as tf

    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
                          for t in tensors if t is not None])


def configure(config):
    """Seeds and mixed precision for a run (``seed``, ``mixed_precision`` of a
    :class:`~imagetranslation.config.Config` or an options mapping)."""
    import keras

    config = as_config(config)
    keras.utils.set_random_seed(int(config.seed))
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(config.mixed_precision)
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
        :func:`imagetranslation.config.parse_devices`).
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

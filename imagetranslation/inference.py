"""Inference: a run's generator loaded for prediction (:func:`load_for_inference`), whole
images of any size (:func:`predict`, :func:`predict_batch`) and test-time augmentation
over the 8 flips and transposes (:func:`predict_tta`)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from .checkpoints import restore, saved_options
from .config import ARCH_KEYS, as_config
from .models import build_generator
from .runtime import configure


def load_for_inference(checkpoint_dir, overrides=None):
    """Generator restored from ``checkpoint_dir`` with its saved architecture options.

    Parameters
    ----------
    checkpoint_dir : str or Path
        A training run's folder.
    overrides : Config or Mapping or None
        The options of the test or export (``weights``: ``best``, the validated best
        weights in ``<checkpoint_dir>/best``, refused if the run has none; ``last``, its
        last checkpoint; None, best if the run has them, else last).

    Returns
    -------
    generator : keras.Model
    options : Config
        ``overrides`` with the checkpoint's :data:`~imagetranslation.config.ARCH_KEYS`.

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the folder: no such folder, no or bad options.json, no or unreadable
        checkpoint, or ``weights`` ``best`` for a run without best weights.
    """
    import tensorflow as tf

    saved, _ = saved_options(checkpoint_dir)
    options = as_config(overrides or {})
    options = options.replace(**{k: saved[k] for k in ARCH_KEYS if k in saved})
    configure(options)
    generator = build_generator(options)
    key = "generator_ema" if options.ema else "generator"  # what a user gets
    if check_weights(checkpoint_dir, options.weights):
        best = Path(checkpoint_dir) / "best"
        checkpoint_dir, key = best, "generator"  # the validated best weights (--validation_dir)
    restore(tf.train.Checkpoint(**{key: generator}), checkpoint_dir, partial=True)
    return generator, options


def check_weights(checkpoint_dir, weights=None):
    """Whether ``--weights`` picks the run's validated best weights (``<run>/best``).

    Parameters
    ----------
    checkpoint_dir : str or Path
        A training run's folder.
    weights : {"best", "last", None}
        None: best when the run has them.

    Raises
    ------
    ValueError
        For ``best`` when the run has no best weights (naming the run).
    """
    import tensorflow as tf

    best = Path(checkpoint_dir) / "best"
    has_best = best.is_dir() and bool(tf.train.latest_checkpoint(str(best)))
    if weights == "best" and not has_best:
        raise ValueError(f"--weights best: the run {checkpoint_dir} has no validated best "
                         f"weights ({best} holds no checkpoint; they come from training with "
                         "--validation_dir); pass --weights last for its last checkpoint")
    return weights != "last" and has_best


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


#: A volume's three orthogonal views as axis orders of (z, y, x): slices along z (xy, the
#: input's own), along y (xz) and along x (yz).  Each order is its own inverse.
VIEWS = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 1, 0)}


def predict_views(generator, volume, stride, predictor=predict):
    """The mean of ``predictor`` over a volume's three orthogonal views (``--views``).

    The (z, y, x, c) volume is sliced along z, along y and along x (:data:`VIEWS`); every
    slice of each view is predicted (``predictor``: :func:`predict` or :func:`predict_tta`),
    the view is brought back to (z, y, x), and the three are averaged.  In an isotropic
    volume (FIB-SEM) each voxel so gets the context of three planes, where one slice gives
    one; costs 3 predictions of the volume.

    Parameters
    ----------
    generator : callable
        As for :func:`predict`.
    volume : numpy.ndarray
        (z, y, x, c) float32 in [-1, 1].
    stride : int
        The generator's stride.
    predictor : callable
        ``predictor(generator, image, stride)`` on one (y, x, c) image.

    Returns
    -------
    numpy.ndarray
        (z, y, x, c_out) float32, the mean of the three views' predictions.
    """
    total = None
    for axes in VIEWS.values():
        view = np.transpose(volume, axes + (3,))
        out = np.stack([predictor(generator, np.ascontiguousarray(s), stride) for s in view])
        out = np.transpose(out, axes + (3,))
        total = out.astype(np.float64) if total is None else total + out
    return (total / len(VIEWS)).astype(np.float32)

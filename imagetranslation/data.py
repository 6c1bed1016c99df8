"""Combined A|B images: loading, and the augmenting tf.data training pipeline.

A combined image holds the input A on the left half and the target B on the
right half (``tools/process.py --operation combine`` makes them).  The whole
data set is decoded once and kept in memory as uint8.  Every random choice
of the pipeline (which image, flips, transpose, crop) is a stateless function
of ``(seed, example index)``, so a run resumed from a checkpoint at step s
sees exactly the examples an uninterrupted run would.
"""

from __future__ import annotations

import numpy as np

from neuron3d.io import list_slice_files


def read_rgb(path):
    """Read an image as (y, x, 3) uint8 (gray and RGBA converted)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from None


def split_pair(image, path, direction="AtoB"):
    """Split a combined image into (input, target) halves according to ``direction``."""
    width = image.shape[1]
    if width % 2:
        raise ValueError(
            f"{path} is not a side-by-side A|B pair: width {width} is odd"
        )
    a, b = image[:, : width // 2], image[:, width // 2 :]
    return (a, b) if direction == "AtoB" else (b, a)


def load_pairs(folder, direction="AtoB", what="--input_dir"):
    """All pairs of ``folder``: (inputs, targets, names), uint8 arrays (n, y, x, 3).

    The images are taken in natural order (``2.png`` before ``10.png``); see
    :func:`neuron3d.io.list_slice_files`.  ``what`` names the folder in messages.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ValueError
        If it holds no images, an image is not a pair, or the images differ in size.
    """
    files = list_slice_files(folder, pattern=None, what=what)
    inputs, targets = [], []
    for path in files:
        a, b = split_pair(read_rgb(path), path, direction)
        if inputs and a.shape != inputs[0].shape:
            raise ValueError(f"combined images differ in size: {files[0]} holds "
                             f"{inputs[0].shape[:2]} halves, {path} holds {a.shape[:2]}")
        inputs.append(a)
        targets.append(b)
    return np.stack(inputs), np.stack(targets), [p.stem for p in files]


def to_model_range(images):
    """uint8 images (0..255) to the networks' value range: float32 in [-1, 1]."""
    return np.asarray(images).astype(np.float32) / 127.5 - 1.0


def from_model_range(images):
    """The networks' value range [-1, 1] back to uint8 0..255, rounded and clipped.

    The inverse of :func:`to_model_range` (``neuron3d.labels.to_uint8`` is a
    different conversion: it clips values already on the 0..255 scale).
    """
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def scaled_size(height, width, scale_size):
    """Size after resizing up so that the shorter side reaches ``scale_size`` (never down)."""
    short = min(height, width)
    if short >= scale_size:
        return height, width
    factor = scale_size / short
    return max(scale_size, round(height * factor)), max(scale_size, round(width * factor))


def training_dataset(inputs, targets, options, start_step=0):
    """Batches of augmented (input, target) crops for steps ``start_step .. max_steps - 1``.

    Parameters
    ----------
    inputs, targets : numpy.ndarray
        (n, y, x, c) uint8.
    options : dict
        seed, batch_size, max_steps, fliplr, flipud, transpose, scale_size, crop_size.
    """
    import tensorflow as tf

    n, height, width, c_in = inputs.shape
    data = tf.constant(np.concatenate([inputs, targets], axis=-1))
    channels = data.shape[-1]
    new_h, new_w = scaled_size(height, width, options["scale_size"])
    crop = options["crop_size"]
    seed = int(options["seed"]) % (2**31)
    square = new_h == new_w
    batch = options["batch_size"]

    def coin(index, salt):
        value = tf.random.stateless_uniform([], seed=tf.stack([seed + salt, index]))
        return value < 0.5

    def example(index):
        epoch = index // n
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        image = tf.cast(tf.gather(data, order[index % n]), tf.float32)
        if (new_h, new_w) != (height, width):
            image = tf.image.resize(image, (new_h, new_w), method="area")
        if options["fliplr"]:
            image = tf.cond(coin(index, 1), lambda: tf.reverse(image, [1]), lambda: image)
        if options["flipud"]:
            image = tf.cond(coin(index, 2), lambda: tf.reverse(image, [0]), lambda: image)
        if options["transpose"] and square:
            image = tf.cond(coin(index, 3), lambda: tf.transpose(image, [1, 0, 2]),
                            lambda: image)
        image = tf.image.stateless_random_crop(image, [crop, crop, channels],
                                               seed=tf.stack([seed + 4, index]))
        image = image / 127.5 - 1.0
        return image[..., :c_in], image[..., c_in:]

    indices = tf.data.Dataset.range(start_step * batch, options["max_steps"] * batch)
    return (indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch).prefetch(tf.data.AUTOTUNE))

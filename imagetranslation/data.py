"""Combined A|B images: loading, and the augmenting tf.data training pipeline.

A combined image holds the input A on the left half and the target B on the
right half (``tools/process.py --operation combine`` makes them).  The whole
data set is decoded once and kept in memory as uint8.  Every random choice
of the pipeline (which image, flips, transpose, crop, and the augmentations of
:func:`augment_example`) is a stateless function of ``(seed, example index)``,
so a run resumed from a checkpoint at step s sees exactly the examples an
uninterrupted run would.
"""

from __future__ import annotations

import math

import numpy as np

from neuron3d.io import list_slice_files

from .config import AUGMENT_DEFAULTS, as_config

__all__ = ["AUGMENT_DEFAULTS", "augment_example", "load_pairs", "training_dataset"]
#: Added to the seed for each augmentation's random numbers (flips and crop use 1..4).
_SALTS = {"elastic": 10, "intensity": 20, "blur": 30, "misalign": 40, "missing_slice": 50}
#: An end for the example indices of a run without max_steps (one ended by its time budget).
UNBOUNDED_STEPS = 2**40


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


def _uniform(shape, seed, salt, index, low=0.0, high=1.0, dtype=None):
    """Stateless uniform numbers for (seed + salt, index): [low, high) (integers: high excluded)."""
    import tensorflow as tf

    key = tf.stack([tf.cast(seed + salt, tf.int64), tf.cast(index, tf.int64)])
    return tf.random.stateless_uniform(shape, seed=key, minval=low, maxval=high,
                                       dtype=dtype or tf.float32)


def elastic_field(height, width, seed, index, pixels=2.0, spacing=16):
    """A smooth random displacement field, a function of ``(seed, index)``.

    Displacements uniform in ``[-pixels, pixels]`` on a coarse grid with one
    point every ``spacing`` pixels (covering the image), resized bicubically to
    the image and clipped to ``[-pixels, pixels]``.

    Returns
    -------
    tf.Tensor
        (height, width, 2) float32: the (dy, dx) displacement of each pixel, in pixels.
    """
    import tensorflow as tf

    grid = [math.ceil(height / spacing) + 1, math.ceil(width / spacing) + 1, 2]
    coarse = _uniform(grid, seed, _SALTS["elastic"], index, -pixels, pixels)
    field = tf.image.resize(coarse[None], [height, width], method="bicubic")[0]
    return tf.clip_by_value(field, -pixels, pixels)


def warp(image, field):
    """Sample ``image`` at (y + dy, x + dx) with bilinear interpolation, edges clamped.

    Parameters
    ----------
    image : tf.Tensor
        (y, x, c) float32.
    field : tf.Tensor
        (y, x, 2) float32 displacements (dy, dx) in pixels (:func:`elastic_field`).

    Returns
    -------
    tf.Tensor
        (y, x, c) float32; equal to ``scipy.ndimage.map_coordinates(channel,
        [y + dy, x + dx], order=1, mode="nearest")`` for each channel.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    yy, xx = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    y = tf.clip_by_value(yy + field[..., 0], 0.0, h - 1.0)
    x = tf.clip_by_value(xx + field[..., 1], 0.0, w - 1.0)
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, shape[0] - 1), tf.minimum(x0i + 1, shape[1] - 1)

    def at(yi, xi):
        return tf.gather_nd(image, tf.stack([yi, xi], axis=-1))

    top = at(y0i, x0i) * (1.0 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1.0 - wx) + at(y1i, x1i) * wx
    return top * (1.0 - wy) + bottom * wy


def _intensity(image, seed, index, brightness, contrast, gamma):
    """Contrast about mid-gray, brightness offset, then gamma, on the 0..1 scale; clipped."""
    import tensorflow as tf

    u = _uniform([3], seed, _SALTS["intensity"], index)
    factor = 1.0 - contrast + 2.0 * contrast * u[0]
    offset = brightness * (2.0 * u[1] - 1.0)
    exponent = tf.exp(math.log(gamma) * (2.0 * u[2] - 1.0))
    value = (image + 1.0) / 2.0
    value = tf.clip_by_value((value - 0.5) * factor + 0.5 + offset, 0.0, 1.0) ** exponent
    return value * 2.0 - 1.0


def blur_radius(sigma_max):
    """Radius of the Gaussian kernel for sigmas up to ``sigma_max``: ceil(3 sigma_max)."""
    return math.ceil(3.0 * sigma_max)


def _blur(image, seed, index, sigma_max):
    """Gaussian blur with sigma uniform in [0, sigma_max], separable, borders reflected."""
    import tensorflow as tf

    radius = blur_radius(sigma_max)
    if radius == 0:
        return image
    sigma = tf.maximum(_uniform([], seed, _SALTS["blur"], index, 0.0, sigma_max), 1e-3)
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(t * t) / (2.0 * sigma * sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = image.shape[-1]
    padded = tf.pad(image, [[radius, radius], [radius, radius], [0, 0]], mode="REFLECT")[None]
    along_y = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    along_x = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, along_y, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, along_x, [1, 1, 1, 1], "VALID")[0]


def _one_of_two_channels(image, seed, salt, index, probability):
    """(whether to change the example, a (c,) mask of the chosen channel: red or green)."""
    import tensorflow as tf

    u = _uniform([2], seed, salt, index)
    channel = tf.cast(u[1] < 0.5, tf.int32)  # 1 = green (slice z+1), 0 = red (slice z)
    mask = tf.equal(tf.range(image.shape[-1]), channel)
    return u[0] < probability, mask


def _shift(image, dy, dx):
    """``out[y, x] = image[y - dy, x - dx]``, coordinates clamped to the image (edges repeat)."""
    import tensorflow as tf

    shape = tf.shape(image)
    rows = tf.clip_by_value(tf.range(shape[0]) - dy, 0, shape[0] - 1)
    cols = tf.clip_by_value(tf.range(shape[1]) - dx, 0, shape[1] - 1)
    return tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)


def augment_example(inputs, targets, index, seed, options):
    """The ``--augment`` augmentations of one training example.

    A pure function of ``(seed, index)`` and the images: the same arguments
    give the same bytes, so resumed runs see the examples an uninterrupted run
    would.  Applied in this order (each only if named in ``options["augment"]``):

    * ``elastic``: input AND target are warped by the same smooth random field
      (:func:`elastic_field`, at most ``elastic_pixels``, grid ``spacing``
      ``elastic_spacing``) with bilinear interpolation for both (:func:`warp`):
      the target is a regression target, so a 0/255 edge becomes a one-pixel
      ramp rather than a jagged nearest-neighbour step.  They stay aligned.
    * ``intensity`` (input only): contrast factor uniform in
      ``[1 - contrast, 1 + contrast]`` about mid-gray, brightness offset uniform
      in ``[-brightness, brightness]`` (on the 0..1 scale), clipped, then gamma
      log-uniform in ``[1 / gamma, gamma]``; one draw for all channels.
    * ``blur`` (input only): Gaussian, sigma uniform in ``[0, blur_sigma]``.
    * ``misalign`` (input only; two-slice inputs): with probability
      ``misalign_p`` the red (slice z) or the green (slice z + 1) channel, one
      of the two at random, is shifted by whole pixels ``(dy, dx)`` uniform in
      ``[-misalign_pixels, misalign_pixels]`` (edges repeated).
    * ``missing_slice`` (input only; two-slice inputs): with probability
      ``missing_slice_p`` the red or the green channel, one at random, is
      blanked to black (0, the model's -1), as a lost section.

    Parameters
    ----------
    inputs, targets : tf.Tensor
        (y, x, c) float32 in the model range [-1, 1], of static shape.
    index : int or tf.Tensor
        The example index (step x batch_size + position in the batch).
    seed : int
        The run's seed.
    options : Config or Mapping
        ``augment`` (names, a list or comma string) and the parameters of
        :data:`~imagetranslation.config.AUGMENT_DEFAULTS` (defaults used where missing).

    Returns
    -------
    (tf.Tensor, tf.Tensor)
        The augmented inputs and targets, same shapes, float32 in [-1, 1]
        (bilinear warping and blurring keep values in range).
    """
    import tensorflow as tf

    o = as_config(options)
    names = o.augment
    if "elastic" in names and o.elastic_pixels > 0:
        c_in = inputs.shape[-1]
        height, width = inputs.shape[0], inputs.shape[1]  # static: the crop size
        field = elastic_field(height, width, seed, index, o.elastic_pixels, o.elastic_spacing)
        both = warp(tf.concat([inputs, targets], axis=-1), field)
        inputs, targets = both[..., :c_in], both[..., c_in:]
    if "intensity" in names:
        inputs = _intensity(inputs, seed, index, o.brightness, o.contrast, o.gamma)
    if "blur" in names:
        inputs = _blur(inputs, seed, index, o.blur_sigma)
    if "misalign" in names:
        apply, mask = _one_of_two_channels(inputs, seed, _SALTS["misalign"], index,
                                           o.misalign_p)
        m = o.misalign_pixels
        d = _uniform([2], seed, _SALTS["misalign"] + 1, index, -m, m + 1, dtype=tf.int32)
        inputs = tf.where(tf.logical_and(apply, mask), _shift(inputs, d[0], d[1]), inputs)
    if "missing_slice" in names:
        apply, mask = _one_of_two_channels(inputs, seed, _SALTS["missing_slice"], index,
                                           o.missing_slice_p)
        inputs = tf.where(tf.logical_and(apply, mask), -1.0, inputs)
    return inputs, targets


def training_dataset(inputs, targets, options, start_step=0):
    """Batches of augmented (input, target) crops for steps ``start_step .. max_steps - 1``.

    Parameters
    ----------
    inputs, targets : numpy.ndarray
        (n, y, x, c) uint8.
    options : Config or Mapping
        seed, batch_size, max_steps (None: no end, for a run ended by its time
        budget), fliplr, flipud, transpose, scale_size, crop_size; ``augment``
        and its parameters (:func:`augment_example`, applied to each crop).
    """
    import tensorflow as tf

    o = as_config(options)
    n, height, width, c_in = inputs.shape
    data = tf.constant(np.concatenate([inputs, targets], axis=-1))
    channels = data.shape[-1]
    new_h, new_w = scaled_size(height, width, o.scale_size)
    crop = o.crop_size
    seed = int(o.seed) % (2**31)
    square = new_h == new_w
    batch = o.batch_size

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
        if o.fliplr:
            image = tf.cond(coin(index, 1), lambda: tf.reverse(image, [1]), lambda: image)
        if o.flipud:
            image = tf.cond(coin(index, 2), lambda: tf.reverse(image, [0]), lambda: image)
        if o.transpose and square:
            image = tf.cond(coin(index, 3), lambda: tf.transpose(image, [1, 0, 2]),
                            lambda: image)
        image = tf.image.stateless_random_crop(image, [crop, crop, channels],
                                               seed=tf.stack([seed + 4, index]))
        image = image / 127.5 - 1.0
        if augmenting:
            return augment_example(image[..., :c_in], image[..., c_in:], index, seed, o)
        return image[..., :c_in], image[..., c_in:]

    augmenting = bool(o.augment)
    end = o.max_steps if o.max_steps is not None else UNBOUNDED_STEPS
    indices = tf.data.Dataset.range(start_step * batch, end * batch)
    return (indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch).prefetch(tf.data.AUTOTUNE))

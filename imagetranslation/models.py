"""Generators and discriminator of pix2pix, as Keras 3 functional models.

Images are (batch, height, width, channels) float in [-1, 1].  The graph is
built with ``training=True`` for batch normalisation (and the U-Net's dropout):
training, and a call without a ``training`` argument, normalise with the
statistics of the current batch.  Prediction (``trainer.predict``) calls the
model with ``training=False``, which in Keras 3 overrides the flag the graph
was built with: it normalises with the moving averages kept during training and
drops no units.  (pix2pix used the batch statistics at test time too; here an
output pixel depends only on its receptive field, which is what lets
``imagetranslation.tiled`` predict tile by tile.)  With ``synchronized=True``
(training on several devices, see :mod:`imagetranslation.trainer`) those are
the statistics of the global batch, summed over the replicas; the weights are
the same either way.

The ResNet, highway and dense generators share the thesis trainer's encoder
(7x7 conv, two 3x3 stride-2 convs) and decoder (two 4x4 stride-2 transposed
convs, 7x7 conv, tanh) and differ in the core at 1/4 resolution, as in
imagetranslation-tensorflow (``create_res_net``, ``create_highway_net``,
``create_dense_net``).
"""

from __future__ import annotations

import keras
from keras import layers

from .config import GENERATOR_DEFAULTS, GENERATORS, as_config  # noqa: F401 (re-exported)

#: Initial offset (beta) of the highway gates' batch norm, as in the thesis' trainer.
HIGHWAY_GATE_OFFSET = -10.0


def _init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


@keras.saving.register_keras_serializable(package="imagetranslation")
class BatchNormalization(layers.BatchNormalization):
    """Keras' batch normalisation, trained with TensorFlow's fused kernel.

    The same layer (weights, names, checkpoints, inference with the moving
    averages, synchronized statistics) as :class:`keras.layers.BatchNormalization`;
    only the training step of an unsynchronized layer on (batch, y, x, c) inputs
    differs: one ``FusedBatchNormV3`` op (and one for its gradient) instead of
    Keras' moments and arithmetic (with :class:`~imagetranslation.trainer.FusedAdam`,
    the small ResNet's CPU step went from 28.4 to 25.6 ms).  The moving averages
    get the batch variance without Bessel's correction, as Keras' own layer gives
    them (the fused op returns the corrected one; it is scaled back by
    (n - 1) / n).  float16 and bfloat16
    inputs are normalised in float32, as Keras does.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or self.synchronized or mask is not None
                or self.renorm or not (self.scale and self.center) or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        y, mean, corrected = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32"),
            epsilon=self.epsilon, is_training=True)
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = corrected * ((n - 1.0) / tf.maximum(n, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum
                                    + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="imagetranslation")
class Conv2D(layers.Conv2D):
    """Keras' Conv2D; a wide kernel over few channels runs on a 2 x 2 phase split.

    The same layer (weights, names, checkpoints, output up to float rounding) as
    :class:`keras.layers.Conv2D`.  A stride-1 'same' convolution with an odd kernel of 5 or
    more pixels and at most :data:`PHASE_SPLIT_CHANNELS` input or output channels (the
    generators' 7x7 first and last layers: 3 -> ngf, ngf -> 3) runs, on inputs of even
    static height and width, as a convolution of the input's 2 x 2 space-to-depth (4x the
    channels at half the size) with the kernel rearranged into the four output phases,
    followed by a depth-to-space.  That does 1.3x the multiply-adds of a 7x7 kernel but in
    convolutions of 4x the channels, which oneDNN runs up to twice as fast (the figures at
    :data:`PHASE_SPLIT_PIXELS`).  Other convolutions, and inputs of unknown, odd or smaller
    size (prediction's compiled function sees unknown sizes), take Keras' own path.
    """

    def _phase_split(self, inputs):
        size = self.kernel_size
        height, width = inputs.shape[1], inputs.shape[2]
        return (keras.backend.backend() == "tensorflow" and self.padding == "same"
                and self.data_format == "channels_last" and self.groups == 1
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                and size[0] == size[1] and size[0] % 2 == 1 and size[0] >= 5
                and min(self.kernel.shape[2], self.filters) <= PHASE_SPLIT_CHANNELS
                and isinstance(height, int) and isinstance(width, int)
                and height % 2 == 0 and width % 2 == 0
                and height * width >= PHASE_SPLIT_PIXELS)

    def call(self, inputs):
        if not self._phase_split(inputs):
            return super().call(inputs)
        import tensorflow as tf

        kernel = tf.cast(self.kernel, inputs.dtype)
        size, (channels_in, channels_out) = self.kernel_size[0], self.kernel.shape[2:]
        half, length = size // 2, size + 1  # the kernel, padded to an even length
        # Output pixel (2i + p, 2j + r) sums input block (i + a, j + b), offset (s, t), with
        # the kernel tap (2a + s - p, 2b + t - r) of the phase (p, r) (zero outside it).
        phases = []
        for p in (0, 1):
            for r in (0, 1):
                taps = tf.pad(kernel, [[p, 1 - p], [r, 1 - r], [0, 0], [0, 0]])
                taps = tf.reshape(taps, [length // 2, 2, length // 2, 2, channels_in,
                                         channels_out])
                phases.append(tf.reshape(tf.transpose(taps, [0, 2, 1, 3, 4, 5]),
                                         [length // 2, length // 2, 4 * channels_in,
                                          channels_out]))
        kernel = tf.reshape(tf.stack(phases, axis=3),
                            [length // 2, length // 2, 4 * channels_in, 4 * channels_out])
        padded = tf.pad(inputs, [[0, 0], [half, half], [half, half], [0, 0]])
        outputs = tf.nn.depth_to_space(
            tf.nn.conv2d(tf.nn.space_to_depth(padded, 2), kernel, 1, "VALID"), 2)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return outputs if self.activation is None else self.activation(outputs)


#: :class:`Conv2D` splits phases when the input or the output has at most this many channels,
#: on inputs of at least this many pixels: forward + backward of 7x7 3 -> 16 and 16 -> 3 at
#: 128 x 128 took 3.62 -> 2.96 and 7.01 -> 3.50 ms, 3 -> 32 and 32 -> 3 at 256 x 256
#: 24.0 -> 20.9 and 37.1 -> 21.0 ms, but 3 -> 32 at 48 x 48 1.81 -> 2.25 ms (2 cores).
PHASE_SPLIT_CHANNELS = 4
PHASE_SPLIT_PIXELS = 128 * 128


def _bn(x, synchronized=False, offset=0.0):
    beta = "zeros" if offset == 0 else keras.initializers.Constant(offset)
    return BatchNormalization(epsilon=1e-5, momentum=0.9, synchronized=synchronized,
                              beta_initializer=beta,
                              gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))(
        x, training=True)


def _conv(x, filters, size, stride=1, name=None):
    return Conv2D(filters, size, strides=stride, padding="same", kernel_initializer=_init(),
                  name=name)(x)


def _deconv(x, filters, size=4, stride=2):
    return layers.Conv2DTranspose(filters, size, strides=stride, padding="same",
                                  kernel_initializer=_init())(x)


def _output(x):
    """tanh to [-1, 1], kept in float32 under mixed precision."""
    return layers.Activation("tanh", dtype="float32", name="output")(x)


def _encoder(inputs, ngf, encoder_activation, synchronized):
    """The thesis trainer's encoder: 7x7 conv ``ngf``, 3x3 stride-2 convs ``2 ngf``, ``4 ngf``."""
    x = inputs
    for filters, size, stride in ((ngf, 7, 1), (2 * ngf, 3, 2), (4 * ngf, 3, 2)):
        x = _conv(x, filters, size, stride)
        if encoder_activation:
            x = layers.ReLU()(_bn(x, synchronized))
    return x


def _decoder(x, ngf, channels_out, synchronized):
    """4x4 stride-2 transposed convs to ``2 ngf`` and ``ngf`` (batch norm, ReLU); 7x7 conv; tanh."""
    for filters in (2 * ngf, ngf):
        x = layers.ReLU()(_bn(_deconv(x, filters), synchronized))
    return _output(_conv(x, channels_out, 7))


def _conv_bn_relu(x, filters, synchronized, name=None):
    return layers.ReLU(name=name)(_bn(_conv(x, filters, 3), synchronized))


def resnet_generator(channels_in=3, channels_out=3, ngf=32, n_res_blocks=9,
                     encoder_activation=False, synchronized=False):
    """The thesis' ResNet generator.

    7x7 conv ``ngf``; 3x3 stride-2 conv ``2 ngf``; 3x3 stride-2 conv ``4 ngf``
    (no normalisation or activation between these three unless
    ``encoder_activation``); ``n_res_blocks`` residual blocks of two
    (3x3 conv, batch norm, ReLU) plus the skip; 4x4 stride-2 transposed convs to
    ``2 ngf`` and ``ngf`` (each batch norm, ReLU); 7x7 conv to ``channels_out``;
    tanh.  Height and width must be multiples of 4 (see :func:`stride_of`).
    ``synchronized``: batch statistics over all replicas (see the module docstring).
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    x = _encoder(inputs, ngf, encoder_activation, synchronized)
    for _ in range(n_res_blocks):
        skip = x
        for _ in range(2):
            x = _conv_bn_relu(x, 4 * ngf, synchronized)
        x = layers.Add()([skip, x])
    return keras.Model(inputs, _decoder(x, ngf, channels_out, synchronized),
                       name="resnet_generator")


def highway_generator(channels_in=3, channels_out=3, ngf=32, n_highway_units=9,
                      encoder_activation=False, synchronized=False):
    """The thesis trainer's highway generator (``--generator highwaynet``).

    The ResNet generator's encoder and decoder around ``n_highway_units``
    gated residual units (Srivastava et al. 2015) at ``4 ngf`` channels.  Each
    unit computes the transform ``H(x)`` = two (3x3 conv, batch norm, ReLU), as
    a residual block does, and the gate ``T(x)`` = 3x3 conv, batch norm whose
    offset starts at :data:`HIGHWAY_GATE_OFFSET` (-10), then
    ``(1 + sigmoid) / 2``, per pixel and channel; the unit's output is
    ``T * H(x) + (1 - T) * x``.  As in imagetranslation-tensorflow (its "fix
    gate in highway net"), T lies in [0.5, 1] and starts at 0.5 (sigmoid(-10)
    is 5e-5): an even mix of carrying x and transforming it, which training
    may shift towards the transform, not the textbook gate in [0, 1].  Sizes:
    multiples of 4.  Layers ``highway_<i>_transform``, ``highway_<i>_gate`` and
    ``highway_<i>`` give H, T and the output of unit i.
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    x = _encoder(inputs, ngf, encoder_activation, synchronized)
    for unit in range(1, n_highway_units + 1):
        transform = x
        for layer in (1, 2):
            transform = _conv_bn_relu(transform, 4 * ngf, synchronized,
                                      name=f"highway_{unit}_transform" if layer == 2 else None)
        gate = _bn(_conv(x, 4 * ngf, 3), synchronized, offset=HIGHWAY_GATE_OFFSET)
        gate = layers.Rescaling(0.5, offset=0.5, name=f"highway_{unit}_gate")(
            layers.Activation("sigmoid")(gate))
        # x + T (H - x) = T H + (1 - T) x
        x = layers.Add(name=f"highway_{unit}")(
            [x, layers.Multiply()([gate, layers.Subtract()([transform, x])])])
    return keras.Model(inputs, _decoder(x, ngf, channels_out, synchronized),
                       name="highway_generator")


def dense_generator(channels_in=3, channels_out=3, ngf=32, n_dense_blocks=5, n_dense_layers=5,
                    encoder_activation=False, synchronized=False):
    """The thesis trainer's densely connected generator (``--generator densenet``).

    The ResNet generator's encoder and decoder around ``n_dense_blocks`` dense
    blocks (Huang et al. 2017) of ``n_dense_layers`` layers each.  Layer l of a
    block is a 3x3 conv to ``4 ngf`` channels, batch norm and ReLU on the
    concatenation of the block's input and the outputs of layers 1 .. l-1
    (``4 ngf * l`` channels in); the block passes on the output of its last
    layer (``4 ngf`` channels), which is its transition to the next block: as in
    imagetranslation-tensorflow there is no separate 1x1 transition conv and no
    pooling (the resolution stays at 1/4).  Sizes: multiples of 4.
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    x = _encoder(inputs, ngf, encoder_activation, synchronized)
    for _ in range(n_dense_blocks):
        nodes = [x]
        for _ in range(n_dense_layers):
            joined = nodes[0] if len(nodes) == 1 else layers.Concatenate()(nodes)
            nodes.append(_conv_bn_relu(joined, 4 * ngf, synchronized))
        x = nodes[-1]
    return keras.Model(inputs, _decoder(x, ngf, channels_out, synchronized),
                       name="dense_generator")


def unet_generator(channels_in=3, channels_out=3, ngf=64, depth=8, synchronized=False):
    """The pix2pix U-Net: ``depth`` 4x4 stride-2 encoder convs (LeakyReLU 0.2, batch norm
    after the first), mirrored transposed-conv decoder (batch norm, ReLU, dropout 0.5 in
    the three deepest) with skip connections; tanh output.  Sizes: multiples of 2**depth.
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    widths = [ngf * min(2**i, 8) for i in range(depth)]
    skips = []
    x = _conv(inputs, widths[0], 4, 2)
    skips.append(x)
    for width in widths[1:]:
        x = _bn(_conv(layers.LeakyReLU(0.2)(x), width, 4, 2), synchronized)
        skips.append(x)
    for i, width in reversed(list(enumerate(widths[:-1]))):
        x = _bn(_deconv(layers.ReLU()(x), width), synchronized)
        if i >= depth - 4:
            x = layers.Dropout(0.5)(x, training=True)
        x = layers.Concatenate()([x, skips[i]])
    x = _deconv(layers.ReLU()(x), channels_out)
    return keras.Model(inputs, _output(x), name="unet_generator")


def segmentation_unet(channels_in=3, channels_out=3, ngf=32, depth=4, synchronized=False):
    """The segmentation U-Net (Ronneberger et al. 2015), as the field predicts membranes with.

    ``depth + 1`` resolution levels; level l has ``ngf * min(2**l, 8)`` channels and two
    (3x3 conv, batch norm, ReLU).  Down: 2x2 max pooling; up: 2x nearest upsampling, then the
    same level's encoder features concatenated (a skip at every resolution, full resolution
    included, so the boundaries it draws are placed by full-resolution features); a 1x1 conv
    to ``channels_out`` and tanh.  ``same`` padding; sizes: multiples of ``2**depth``.  Unlike
    the pix2pix U-Net (:func:`unet_generator`) it has no dropout, which that one keeps on at
    test time as noise.
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    widths = [ngf * min(2**level, 8) for level in range(depth + 1)]
    x, skips = inputs, []
    for level, width in enumerate(widths):
        if level:
            skips.append(x)
            x = layers.MaxPooling2D(2)(x)
        x = _conv_bn_relu(_conv_bn_relu(x, width, synchronized), width, synchronized)
    for width, skip in zip(reversed(widths[:-1]), reversed(skips)):
        x = layers.Concatenate()([layers.UpSampling2D(2)(x), skip])
        x = _conv_bn_relu(_conv_bn_relu(x, width, synchronized), width, synchronized)
    return keras.Model(inputs, _output(_conv(x, channels_out, 1)), name="segmentation_unet")


def patch_discriminator(channels_in=3, channels_out=3, ndf=64, n_layers=3, sigmoid=True,
                        synchronized=False):
    """PatchGAN on the concatenated (input, target-or-output) pair; 70 x 70 receptive field."""
    a = keras.Input((None, None, channels_in), name="input")
    b = keras.Input((None, None, channels_out), name="target")
    def conv(x, filters, stride):  # pix2pix: pad 1, then a valid 4x4 convolution
        x = layers.ZeroPadding2D(1)(x)
        return layers.Conv2D(filters, 4, strides=stride, padding="valid",
                             kernel_initializer=_init())(x)

    x = layers.Concatenate()([a, b])
    x = layers.LeakyReLU(0.2)(conv(x, ndf, 2))
    for i in range(1, n_layers + 1):
        stride = 2 if i < n_layers else 1
        x = layers.LeakyReLU(0.2)(_bn(conv(x, ndf * min(2**i, 8), stride), synchronized))
    x = conv(x, 1, 1)
    x = layers.Activation("sigmoid" if sigmoid else "linear", dtype="float32")(x)
    return keras.Model([a, b], x, name="patch_discriminator")


def stride_of(options):
    """Total downsampling of the generator: image sizes must be multiples of this.

    4 for the generators with the thesis trainer's encoder (resnet, highwaynet,
    densenet), ``2 ** u_depth`` for the U-Nets.
    """
    if options.get("generator") not in GENERATORS:
        raise ValueError(f"unknown generator {options.get('generator')!r}; expected one of "
                         f"{', '.join(GENERATORS)}")
    options = as_config(options)
    return 2 ** options.u_depth if options.generator in ("unet", "segunet") else 4


def build_generator(options, channels_in=3, channels_out=3, synchronized=False):
    """Generator for an options dict.

    Parameters
    ----------
    options : Config or Mapping
        ``generator`` (one of :data:`~imagetranslation.config.GENERATORS`),
        ``ngf``, ``encoder_activation`` (not unet) and the size option of the
        generator: ``n_res_blocks`` (resnet), ``u_depth`` (unet, segunet),
        ``n_highway_units`` (highwaynet), ``n_dense_blocks`` and
        ``n_dense_layers`` (densenet); missing ones take
        :data:`~imagetranslation.config.GENERATOR_DEFAULTS` (the options.json of older
        runs lacks them).
    synchronized : bool
        Batch statistics over all replicas of a ``tf.distribute`` strategy.
    """
    o = as_config(options)
    kind, ngf, activation = o.generator, o.ngf, o.encoder_activation
    if kind == "resnet":
        return resnet_generator(channels_in, channels_out, ngf, o.n_res_blocks, activation,
                                synchronized)
    if kind == "unet":
        return unet_generator(channels_in, channels_out, ngf, o.u_depth, synchronized)
    if kind == "segunet":
        return segmentation_unet(channels_in, channels_out, ngf, o.u_depth, synchronized)
    if kind == "highwaynet":
        return highway_generator(channels_in, channels_out, ngf, o.n_highway_units,
                                 activation, synchronized)
    if kind == "densenet":
        return dense_generator(channels_in, channels_out, ngf, o.n_dense_blocks,
                               o.n_dense_layers, activation, synchronized)
    raise ValueError(f"unknown generator {kind!r}; expected one of {', '.join(GENERATORS)}")

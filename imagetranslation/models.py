"""Generators and discriminator of pix2pix, as Keras 3 functional models.

Images are (batch, height, width, channels) float in [-1, 1].  Batch
normalisation always uses the statistics of the current batch (``training=True``
in the graph), at test time too, as pix2pix does.
"""

from __future__ import annotations

import keras
from keras import layers


def _init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _bn(x):
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9,
                                     gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))(
        x, training=True)


def _conv(x, filters, size, stride=1, name=None):
    return layers.Conv2D(filters, size, strides=stride, padding="same",
                         kernel_initializer=_init(), name=name)(x)


def _deconv(x, filters, size=4, stride=2):
    return layers.Conv2DTranspose(filters, size, strides=stride, padding="same",
                                  kernel_initializer=_init())(x)


def _output(x):
    """tanh to [-1, 1], kept in float32 under mixed precision."""
    return layers.Activation("tanh", dtype="float32", name="output")(x)


def resnet_generator(channels_in=3, channels_out=3, ngf=32, n_res_blocks=9,
                     encoder_activation=False):
    """The thesis' ResNet generator.

    7x7 conv ``ngf``; 3x3 stride-2 conv ``2 ngf``; 3x3 stride-2 conv ``4 ngf``
    (no normalisation or activation between these three unless
    ``encoder_activation``); ``n_res_blocks`` residual blocks of two
    (3x3 conv, batch norm, ReLU) plus the skip; 4x4 stride-2 transposed convs to
    ``2 ngf`` and ``ngf`` (each batch norm, ReLU); 7x7 conv to ``channels_out``;
    tanh.  Height and width must be multiples of 4 (see :func:`stride_of`).
    """
    inputs = keras.Input((None, None, channels_in), name="input")
    x = inputs
    for filters, size, stride in ((ngf, 7, 1), (2 * ngf, 3, 2), (4 * ngf, 3, 2)):
        x = _conv(x, filters, size, stride)
        if encoder_activation:
            x = layers.ReLU()(_bn(x))
    for _ in range(n_res_blocks):
        skip = x
        for _ in range(2):
            x = layers.ReLU()(_bn(_conv(x, 4 * ngf, 3)))
        x = layers.Add()([skip, x])
    for filters in (2 * ngf, ngf):
        x = layers.ReLU()(_bn(_deconv(x, filters)))
    x = _conv(x, channels_out, 7)
    return keras.Model(inputs, _output(x), name="resnet_generator")


def unet_generator(channels_in=3, channels_out=3, ngf=64, depth=8):
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
        x = _bn(_conv(layers.LeakyReLU(0.2)(x), width, 4, 2))
        skips.append(x)
    for i, width in reversed(list(enumerate(widths[:-1]))):
        x = _bn(_deconv(layers.ReLU()(x), width))
        if i >= depth - 4:
            x = layers.Dropout(0.5)(x, training=True)
        x = layers.Concatenate()([x, skips[i]])
    x = _deconv(layers.ReLU()(x), channels_out)
    return keras.Model(inputs, _output(x), name="unet_generator")


def patch_discriminator(channels_in=3, channels_out=3, ndf=64, n_layers=3, sigmoid=True):
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
        x = layers.LeakyReLU(0.2)(_bn(conv(x, ndf * min(2**i, 8), stride)))
    x = conv(x, 1, 1)
    x = layers.Activation("sigmoid" if sigmoid else "linear", dtype="float32")(x)
    return keras.Model([a, b], x, name="patch_discriminator")


def stride_of(options):
    """Total downsampling of the generator: image sizes must be multiples of this."""
    return 4 if options["generator"] == "resnet" else 2 ** options["u_depth"]


def build_generator(options, channels_in=3, channels_out=3):
    """Generator for an options dict (``generator``, ``ngf``, ``n_res_blocks``, ``u_depth``)."""
    if options["generator"] == "resnet":
        return resnet_generator(channels_in, channels_out, options["ngf"],
                                options["n_res_blocks"], options.get("encoder_activation", False))
    if options["generator"] == "unet":
        return unet_generator(channels_in, channels_out, options["ngf"], options["u_depth"])
    raise ValueError(f"unknown generator {options['generator']!r}; expected resnet or unet")

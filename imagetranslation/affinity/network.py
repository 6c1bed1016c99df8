"""The 3D U-Net that predicts nearest-neighbour affinities from EM (Keras 3).

A U-Net (Ronneberger et al. 2015) in 3-D, as the field uses it on isotropic FIB-SEM (Funke et al.
2018, Lee et al. 2017): two 3x3x3 convolutions with ReLU per level, 2x2x2 max pooling down,
nearest upsampling and skip concatenation up, and a 1x1x1 convolution to three sigmoid channels,
the z, y and x affinities (:mod:`neuron3d.affinity`'s layout, channels last).  ``same`` padding,
so a volume whose sides are multiples of 2^(levels - 1) maps to affinities of its own size.

Each 3x3x3 convolution runs as a 2-D 3x3 convolution over the three neighbouring slices stacked
in channels (:class:`SliceStackConv`): the same linear map as ``Conv3D(kernel_size=3,
padding="same")``, but TensorFlow's CPU kernels compute it (and its gradient) 2.6x faster on
this project's 2-core machines (documentation/affinities.md).
"""

from __future__ import annotations

import keras
from keras import layers, ops

#: Input layout: (batch, z, y, x, 1) float32 EM scaled to [-1, 1].
CHANNELS = 3
#: The implementations of the 3x3x3 (and 1x3x3) convolutions (:func:`unet`'s ``conv``).
CONVS = ("stacked", "conv3d")


@keras.saving.register_keras_serializable("neuron3d")
class SliceStackConv(layers.Layer):
    """A 3x3x3 ``same`` convolution of (batch, z, y, x, c) as a 3x3 Conv2D of (batch * z, y, x,
    3c): slices z - 1, z and z + 1 (zero beyond the volume) side by side in channels.

    Parameters
    ----------
    filters : int
        Output channels.
    z_kernel : {1, 3}
        3: a 3x3x3 convolution; 1: a 1x3x3 one (in-plane only, for anisotropic data).
    """

    def __init__(self, filters, z_kernel=3, **kwargs):
        super().__init__(**kwargs)
        if z_kernel not in (1, 3):
            raise ValueError(f"z_kernel must be 1 or 3, got {z_kernel}")
        self.filters, self.z_kernel = int(filters), int(z_kernel)
        self.conv = layers.Conv2D(self.filters, 3, padding="same", dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = input_shape[-1] * self.z_kernel
        self.conv.build((None, None, None, channels))

    def call(self, x):
        shape = ops.shape(x)
        if self.z_kernel == 3:
            padded = ops.pad(x, [[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]])
            x = ops.concatenate([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=-1)
        flat = ops.reshape(x, (-1, shape[2], shape[3], ops.shape(x)[-1]))
        out = self.conv(flat)
        return ops.reshape(out, (shape[0], shape[1], shape[2], shape[3], self.filters))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "z_kernel": self.z_kernel}


def unet(features=12, levels=3, growth=2, z_pool=True, fine_z=False, dtype=None,
         conv="stacked"):
    """The affinity U-Net.

    Parameters
    ----------
    features : int
        Channels of the first level (each level below has ``growth`` times more).
    levels : int
        Resolution levels (levels - 1 poolings).
    growth : int
        Channel factor between levels.
    z_pool : bool
        Pool (and upsample) in z too; False keeps z at full resolution (anisotropic data).
    fine_z : bool
        3x3x3 convolutions at the finest level too.  By default only the first convolution
        there (over the EM) is 3-D and the other three are 1x3x3: at full resolution they cost
        most of the time, and the coarser levels' 3-D convolutions see across slices.
    dtype : str, optional
        Keras dtype policy of every layer but the output (``"mixed_bfloat16"``: bfloat16
        arithmetic on float32 weights); the output layer is float32 whatever it is.
    conv : {"stacked", "conv3d"}
        How the convolutions run: :class:`SliceStackConv` (faster to train on CPUs without
        AMX) or Keras' ``Conv3D`` (faster to train with AMX, in bfloat16 and float32); the
        same architecture either way, but their weights are laid out differently.

    Returns
    -------
    keras.Model
        (batch, z, y, x, 1) -> (batch, z, y, x, 3) float32 affinities in (0, 1).
    """
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {', '.join(CONVS)}, got {conv}")
    pool = (2, 2, 2) if z_pool else (1, 2, 2)
    inputs = keras.Input((None, None, None, 1), name="em")

    def block(x, n, name, z_kernels=(3, 3)):
        for i, z_kernel in enumerate(z_kernels, 1):
            if conv == "conv3d":
                x = layers.Conv3D(n, (z_kernel, 3, 3), padding="same", name=f"{name}_conv{i}",
                                  dtype=dtype)(x)
            else:
                x = SliceStackConv(n, z_kernel, name=f"{name}_conv{i}", dtype=dtype)(x)
            x = layers.ReLU(name=f"{name}_relu{i}", dtype=dtype)(x)
        return x

    x, skips = inputs, []
    for level in range(levels):
        x = block(x, features * growth ** level, f"down{level}",
                  (3, 3) if level or fine_z else (3, 1))
        if level < levels - 1:
            skips.append(x)
            x = layers.MaxPooling3D(pool, name=f"pool{level}", dtype=dtype)(x)
    for level in reversed(range(levels - 1)):
        x = layers.UpSampling3D(pool, name=f"up{level}", dtype=dtype)(x)
        x = layers.Concatenate(name=f"skip{level}", dtype=dtype)([x, skips[level]])
        x = block(x, features * growth ** level, f"up{level}",
                  (3, 3) if level or fine_z else (1, 1))
    outputs = layers.Conv3D(CHANNELS, 1, activation="sigmoid", dtype="float32",
                            name="affinities")(x)
    return keras.Model(inputs, outputs, name="affinity_unet")


def multiple(levels, z_pool=True):
    """The factor each side of a network input must be a multiple of: (z, y, x)."""
    step = 2 ** (levels - 1)
    return (step if z_pool else 1, step, step)

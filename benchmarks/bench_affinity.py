"""Time NN-6's training step: the U-Net with stacked-slice Conv2D against Keras' Conv3D.

Both networks are the same U-Net (``imagetranslation.affinity.network.unet``: levels, channels,
pooling), once built from :class:`SliceStackConv` (3x3x3 as a 3x3 Conv2D over three slices in
channels, 1x3x3 at the finest level but for the first convolution: the default) and once from
``keras.layers.Conv3D`` with 3x3x3 kernels everywhere, the naive reference.  A step is one
forward and backward pass and an Adam update on a (1, Z, Y, X, 1) crop; the median of
``--repeats`` steps after two warm-up steps is reported, and the prediction of a 128^3 volume.

    python -m benchmarks.bench_affinity [--crop 32 64 64] [--features 12] [--repeats 10] [--bf16]

``--conv conv3d`` is the default network built from Keras' Conv3D with the same kernel shapes
(1x3x3 where the stacked form uses them); ``--bf16`` adds both forms in mixed bfloat16, which
NN-6's ``auto`` picks (as Conv3D) on CPUs with AMX.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def conv3d_unet(features, levels):
    """The reference: the same U-Net with Keras' Conv3D (3x3x3 everywhere)."""
    import keras
    from keras import layers

    inputs = keras.Input((None, None, None, 1))

    def block(x, n):
        for _ in range(2):
            x = layers.ReLU()(layers.Conv3D(n, 3, padding="same")(x))
        return x

    x, skips = inputs, []
    for level in range(levels):
        x = block(x, features * 2 ** level)
        if level < levels - 1:
            skips.append(x)
            x = layers.MaxPooling3D(2)(x)
    for level in reversed(range(levels - 1)):
        x = layers.Concatenate()([layers.UpSampling3D(2)(x), skips[level]])
        x = block(x, features * 2 ** level)
    return keras.Model(inputs, layers.Conv3D(3, 1, activation="sigmoid")(x))


def step_seconds(model, crop, repeats):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((1, *crop, 1), dtype=np.float32))
    y = tf.constant((rng.random((1, *crop, 3)) > 0.5).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.binary_crossentropy(y, model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(2):
        step().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def predict_seconds(model, side=128):
    volume = np.random.default_rng(1).random((1, side, side, side, 1), dtype=np.float32)
    model(volume[:, :8, :8, :8], training=False)
    start = time.perf_counter()
    np.asarray(model(volume, training=False))
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_affinity",
                                description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, nargs=3, default=(32, 64, 64))
    p.add_argument("--features", type=int, default=12)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--bf16", action="store_true",
                   help="also time the default network in mixed bfloat16 (NN-6's "
                        "--mixed_precision bf16)")
    args = p.parse_args(argv)
    from imagetranslation.affinity.network import unet

    crop = tuple(args.crop)
    results = {}
    for name, model in (("stacked Conv2D (default)", unet(args.features, args.levels)),
                        ("stacked Conv2D, --fine_z", unet(args.features, args.levels,
                                                          fine_z=True)),
                        ("Keras Conv3D (naive)", conv3d_unet(args.features, args.levels)),
                        ("--conv conv3d", unet(args.features, args.levels, conv="conv3d")),
                        *((("stacked Conv2D, bf16", unet(args.features, args.levels,
                                                         dtype="mixed_bfloat16")),
                           ("--conv conv3d, bf16", unet(args.features, args.levels,
                                                        conv="conv3d", dtype="mixed_bfloat16")))
                          if args.bf16 else ())):
        results[name] = (step_seconds(model, crop, args.repeats), predict_seconds(model))
        print(f"{name}: {results[name][0]:.3f} s per training step on {crop}, "
              f"{results[name][1]:.1f} s to predict 128^3 ({model.count_params()} weights)")
    naive = results["Keras Conv3D (naive)"]
    for name in [n for n in results if n != "Keras Conv3D (naive)"]:
        print(f"{name}: x{naive[0] / results[name][0]:.1f} the steps per second of the naive "
              f"reference, x{naive[1] / results[name][1]:.1f} its prediction speed")


if __name__ == "__main__":
    main()

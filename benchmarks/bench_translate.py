"""Training speed of translate.py's pix2pix on this machine, against its float32 matmul rate.

For the thesis configuration (ResNet, ngf 32, 9 blocks, 256 x 256 crops, batch 1) and a
small one (ngf 16, 4 blocks, 128 crops), with the discriminator off (--gan_weight 0, the
thesis setting) and on, this times the real training step (the trainer's tf.function and
tf.data pipeline) and reports steps/s and achieved GFLOP/s.  FLOPs are counted from the
layers (2 x multiply-adds of every convolution; a training step ~ 3 x forward).  The
reference is a large float32 matmul timed in the same run: CPU training is compute-bound,
so that rate is the practical ceiling.

    python -m benchmarks.bench_translate [--steps 6] [--xla]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def conv_flops(model, size, channels):
    """Forward multiply-add FLOPs (x2) of all convolutions for one (size x size) input."""
    import keras

    inputs = [keras.Input((size, size, c)) for c in channels]
    fixed = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0])
    total = 0
    for layer in fixed.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, _ = layer.input.shape
            total += 2 * h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * int(np.prod(layer.kernel.shape))
    return total


def matmul_gflops(n=2048, repeats=5):
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def time_training(options, steps, warmup=2):
    from imagetranslation import data as D
    from imagetranslation.trainer import Model, configure

    configure(options)
    rng = np.random.default_rng(0)
    size = options["crop_size"]
    images = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    options = dict(options, max_steps=steps + warmup, scale_size=size)
    model = Model(options)
    step_fn = model.train_step_fn()
    times = []
    for i, (x, y) in enumerate(D.training_dataset(images, images, options)):
        start = time.perf_counter()
        float(step_fn(x, y)["gen_loss_classic"])
        if i >= warmup:
            times.append(time.perf_counter() - start)
    flops = 3 * conv_flops(model.generator, size, [3])
    if model.discriminator is not None:
        flops += 8 * conv_flops(model.discriminator, size, [3, 3])
    return statistics.median(times), flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    parser.add_argument("--xla", action="store_true", help="compile the step with XLA")
    args = parser.parse_args()
    import tensorflow as tf

    peak = matmul_gflops()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    print(f"float32 matmul 2048^2 on {threads} threads: {peak:.1f} GFLOP/s (reference ceiling)")
    base = dict(seed=0, batch_size=1, generator="resnet", Y_loss="square", loss="log",
                classic_weight=100.0, lr=2e-4, beta1=0.5, fliplr=True, flipud=True,
                transpose=True, ndf=64, u_depth=8, xla=args.xla)
    configs = [("thesis: ngf 32, 9 blocks, crop 256", dict(ngf=32, n_res_blocks=9, crop_size=256)),
               ("small: ngf 16, 4 blocks, crop 128", dict(ngf=16, n_res_blocks=4, crop_size=128))]
    for name, config in configs:
        for gan_weight in (0.0, 1.0):
            options = dict(base, **config, gan_weight=gan_weight)
            seconds, flops = time_training(options, args.steps)
            rate = flops / seconds / 1e9
            print(f"{name}, discriminator {'on ' if gan_weight else 'off'}: "
                  f"{1 / seconds:6.2f} steps/s, {flops / 1e9:6.1f} GFLOP/step, "
                  f"{rate:5.1f} GFLOP/s = {rate / peak:4.0%} of matmul (median of {args.steps})")


if __name__ == "__main__":
    main()

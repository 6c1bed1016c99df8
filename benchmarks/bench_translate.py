"""Training speed of translate.py's pix2pix on this machine, against its float32 matmul rate.

For the thesis configuration (ResNet, ngf 32, 9 blocks, 256 x 256 crops, batch 1) and a
small one (ngf 16, 4 blocks, 128 crops), with the discriminator off (--gan_weight 0, the
thesis setting) and on, this times the real training step (the trainer's tf.function and
tf.data pipeline) and reports steps/s and achieved GFLOP/s.  FLOPs are counted from the
layers (2 x multiply-adds of every convolution; a training step ~ 3 x forward).  The
reference is a large float32 matmul timed in the same run: CPU training is compute-bound,
so that rate is the practical ceiling.

Prediction (``--mode test``): slices per second of 512 x 512 and 1024 x 1024 slices through
``inference.predict_batch`` (one compiled function for any size, batches of 1 and 4), against
the generator called eagerly per slice.

    python -m benchmarks.bench_translate [--seconds 8] [--xla] [--skip_training] [--layers]

``--layers`` also times every convolution of the small generator on its own (forward and
backward at its shapes), the ceiling the library's kernels set for that configuration.
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
    return sum(layer_flops(layer) for layer in fixed.layers if is_conv(layer))


def is_conv(layer):
    import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))


def layer_flops(layer):
    """Forward multiply-add FLOPs (x2) of one convolution of a model with a fixed input size
    (a transposed convolution's multiply-adds are counted per input pixel)."""
    import keras

    transposed = isinstance(layer, keras.layers.Conv2DTranspose)
    _, h, w, _ = (layer.input if transposed else layer.output).shape
    return 2 * h * w * int(np.prod(layer.kernel.shape))


def median_seconds(run, seconds, minimum):
    """Median seconds of ``run()`` over calls for about ``seconds`` (at least ``minimum``
    calls), after one untimed call."""
    run()
    times, spent = [], 0.0
    while spent < seconds or len(times) < minimum:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times)


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


def time_training(options, seconds, warmup=3):
    """Median seconds per step of the trainer's real loop (tf.data pipeline, augmentation
    and the host sync of the losses included), in rounds of about 1 s for ``seconds``."""
    from imagetranslation import data as D
    from imagetranslation.model import Model
    from imagetranslation.runtime import configure

    configure(options)
    rng = np.random.default_rng(0)
    size = options["crop_size"]
    images = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    options = dict(options, max_steps=None, scale_size=size)
    model = Model(options)
    step_fn = model.train_step_fn()
    batches = iter(D.training_dataset(images, images, options))
    for _ in range(warmup):
        float(step_fn(*next(batches))["gen_loss_classic"])
    rounds, spent = [], 0.0
    while spent < seconds or len(rounds) < 3:
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < 1.0:
            float(step_fn(*next(batches))["gen_loss_classic"])
            count += 1
        elapsed = time.perf_counter() - start
        rounds.append(elapsed / count)
        spent += elapsed
    flops = 3 * conv_flops(model.generator, size, [3])
    if model.discriminator is not None:
        flops += 8 * conv_flops(model.discriminator, size, [3, 3])
    return statistics.median(rounds), flops


def time_prediction(generator, size, batch, seconds, compiled=True):
    """Slices per second of ``--mode test``'s prediction of (size x size) slices, ``batch``
    at a time: inference.predict_batch (compiled), or the generator called eagerly per call
    (the naive reference)."""
    from imagetranslation.inference import predict_batch

    images = np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    if compiled:
        def run():
            return predict_batch(generator, images, 4)
    else:
        def run():
            return np.asarray(generator(images, training=False))
    return batch / median_seconds(run, seconds, 3)


def time_layers(options, seconds):
    """Each convolution of the generator on its own: (name, input shape, kernel shape, median
    seconds of its forward and backward pass, training FLOPs) for a crop of the run's size,
    batch 1.  This is the ceiling of the library's kernels at those shapes, beside the step's
    rate: what the step cannot pass without other convolution kernels."""
    import keras
    import tensorflow as tf

    from imagetranslation.models import build_generator

    size = options["crop_size"]
    model = keras.models.clone_model(build_generator(options),
                                     input_tensors=keras.Input((size, size, 3)))
    rows = []
    for layer in filter(is_conv, model.layers):
        shape = (1, *layer.input.shape[1:])
        inputs = tf.random.normal(shape)

        @tf.function
        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            grad_x, grad_k = tape.gradient(loss, [x, layer.kernel])
            return tf.reduce_sum(grad_x) + tf.reduce_sum(grad_k)

        rows.append((layer.name, shape, tuple(layer.kernel.shape),
                     median_seconds(lambda x=inputs: float(step(x)), seconds, 5),
                     3 * layer_flops(layer)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="timed seconds per configuration (medians of ~1 s rounds)")
    parser.add_argument("--xla", action="store_true", help="compile the step with XLA")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--skip_prediction", action="store_true")
    parser.add_argument("--layers", action="store_true",
                        help="also time each convolution of the small generator on its own "
                             "(forward + backward, batch 1)")
    args = parser.parse_args()
    import tensorflow as tf

    from imagetranslation.models import build_generator

    peak = matmul_gflops()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    gpus = tf.config.list_physical_devices("GPU")
    print(f"float32 matmul 2048^2 on {threads} threads: {peak:.1f} GFLOP/s (reference ceiling)"
          f"; GPUs: {len(gpus)}")
    from imagetranslation.translate import build_parser

    defaults = vars(build_parser().parse_args(["--mode", "train", "--input_dir", "-",
                                               "--output_dir", "-"]))  # augmentation etc.
    base = dict(defaults, seed=0, batch_size=1, generator="resnet", Y_loss="square",
                loss="log", classic_weight=100.0, lr=2e-4, beta1=0.5, fliplr=True,
                flipud=True, transpose=True, ndf=64, u_depth=8, xla=args.xla)
    thesis = dict(ngf=32, n_res_blocks=9, crop_size=256)
    small = dict(ngf=16, n_res_blocks=4, crop_size=128)
    configs = [("thesis: ngf 32, 9 blocks, crop 256", thesis, (0.0, 1.0)),
               ("small: ngf 16, 4 blocks, crop 128", small, (0.0, 1.0)),
               # experiment_8.sh --quick on the demo (its crop: 128) and --recipe real there
               ("recipe quick (demo)", dict(small, lr=1e-3), (0.0,)),
               ("recipe real (demo)", dict(ngf=32, n_res_blocks=6, crop_size=128, lr=1e-3,
                                           augment="elastic,intensity,blur"), (0.0,))]
    if not args.skip_training:
        for name, config, gan_weights in configs:
            for gan_weight in gan_weights:
                options = dict(base, **config, gan_weight=gan_weight)
                seconds, flops = time_training(options, args.seconds)
                rate = flops / seconds / 1e9
                print(f"{name}, discriminator {'on ' if gan_weight else 'off'}: "
                      f"{1 / seconds:6.2f} steps/s, {flops / 1e9:6.1f} GFLOP/step, "
                      f"{rate:5.1f} GFLOP/s = {rate / peak:4.0%} of matmul", flush=True)
    if args.layers:
        rows = time_layers(dict(base, **small), args.seconds / 8)
        total = sum(r[3] for r in rows)
        for name, shape, kernel, seconds, flops in rows:
            rate = flops / seconds / 1e9
            print(f"layer {name:20s} input {'x'.join(map(str, shape[1:])):>11s} kernel "
                  f"{'x'.join(map(str, kernel)):>9s}: {seconds * 1e3:5.2f} ms "
                  f"({seconds / total:4.0%}), {rate:5.1f} GFLOP/s = {rate / peak:4.0%} of matmul",
                  flush=True)
        rate = sum(r[4] for r in rows) / total / 1e9
        print(f"small generator's convolutions alone: {total * 1e3:.1f} ms, {rate:.1f} GFLOP/s "
              f"= {rate / peak:.0%} of matmul", flush=True)
    if not args.skip_prediction:
        for name, config in (("thesis generator", thesis), ("small generator", small)):
            generator = build_generator(dict(base, **config))
            for size in (512, 1024):
                flops = conv_flops(generator, size, [3])
                naive = time_prediction(generator, size, 1, args.seconds / 2, compiled=False)
                for batch in (1, 4):
                    rate = time_prediction(generator, size, batch, args.seconds / 2)
                    print(f"predict, {name}, {size} x {size}, batch {batch}: {rate:6.2f} "
                          f"slices/s, {rate * flops / 1e9:5.1f} GFLOP/s = "
                          f"{rate * flops / 1e9 / peak:4.0%} of matmul; eager per slice "
                          f"{naive:6.2f} slices/s (x{rate / naive:.2f})", flush=True)


if __name__ == "__main__":
    main()

"""The trainer's fused kernels equal Keras' own layers: models.BatchNormalization (outputs,
gradients, moving averages, inference, weights' names), models.Conv2D's phase split (outputs
and gradients) and trainer.FusedAdam (weights and state after several steps)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from imagetranslation import models  # noqa: E402
from imagetranslation.models import BatchNormalization, Conv2D  # noqa: E402


def pair(seed=0, channels=5):
    kwargs = dict(epsilon=1e-5, momentum=0.9,
                  gamma_initializer=keras.initializers.RandomNormal(1.0, 0.3, seed=seed),
                  beta_initializer=keras.initializers.RandomNormal(0.0, 0.3, seed=seed + 1))
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build((None, None, None, channels))
    theirs.build((None, None, None, channels))
    theirs.set_weights(ours.get_weights())
    return ours, theirs


@pytest.mark.parametrize("shape", [(2, 9, 7, 5), (1, 16, 16, 5), (1, 1, 1, 5)])
def test_training_step_equals_keras(shape):
    ours, theirs = pair()
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, shape).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        results.append((y.numpy(), [g.numpy() for g in grads],
                        layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    (y1, g1, m1, v1), (y2, g2, m2, v2) = results
    if np.prod(shape[:-1]) == 1:  # x - mean is 0: y is beta (Keras' moments round, by 4e-5)
        np.testing.assert_allclose(y1.ravel(), ours.beta.numpy(), rtol=1e-6)
        np.testing.assert_allclose(y2.ravel(), ours.beta.numpy(), atol=1e-4)
    else:
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # The moving averages: the batch mean and the variance without Bessel's correction.
    flat = x.numpy().reshape(-1, shape[-1]).astype(np.float64)
    np.testing.assert_allclose(m1, 0.1 * flat.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, 0.9 + 0.1 * flat.var(0), rtol=1e-5)
    np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)


def test_inference_uses_the_moving_averages_as_keras_does():
    ours, theirs = pair(3)
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (2, 6, 6, 5)).astype(np.float32))
    for _ in range(3):
        ours(x, training=True)
        theirs(x, training=True)
    np.testing.assert_allclose(ours(x, training=False).numpy(),
                               theirs(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    assert [w.path.split("/")[-1] for w in ours.weights] == \
        ["gamma", "beta", "moving_mean", "moving_variance"]


def test_a_built_generator_trains_through_the_fused_kernel():
    from imagetranslation.models import resnet_generator

    model = resnet_generator(ngf=4, n_res_blocks=1)
    assert all(type(layer) is BatchNormalization for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    graph = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec((1, 8, 8, 3), tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in ops


def stepper(optimizer, variable):
    return lambda g: optimizer.apply_gradients([(g, variable)])


def test_fused_adam_equals_keras_adam():
    from imagetranslation.trainer import FusedAdam

    rng = np.random.default_rng(5)
    start = rng.normal(size=(6, 7)).astype(np.float32)
    gradients = [rng.normal(size=(6, 7)).astype(np.float32) for _ in range(6)]
    states, kernels = [], []
    for kind in (FusedAdam, keras.optimizers.Adam):
        variable = keras.Variable(start)
        optimizer = kind(1e-2, beta_1=0.5)
        optimizer.build([variable])

        step = tf.function(stepper(optimizer, variable))
        for g in gradients:
            step(tf.constant(g))
        graph = step.get_concrete_function(tf.constant(gradients[0])).graph
        kernels.append("ResourceApplyAdam" in {op.type for op in graph.get_operations()})
        states.append([variable.numpy(), optimizer._momentums[0].numpy(),
                       optimizer._velocities[0].numpy(), int(optimizer.iterations.numpy())])
    ours, theirs = states
    assert kernels == [True, False]
    assert ours[3] == theirs[3] == len(gradients)
    assert np.abs(ours[0] - start).max() > 1e-2  # it moved
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prediction_is_one_compiled_function_for_any_size_and_batch():
    from imagetranslation import trainer
    from imagetranslation.models import resnet_generator

    generator = resnet_generator(ngf=4, n_res_blocks=1)
    rng = np.random.default_rng(6)
    images = rng.uniform(-1, 1, (3, 20, 28, 3)).astype(np.float32)
    batch = trainer.predict_batch(generator, images, 4)
    assert batch.shape == (3, 20, 28, 3) and batch.dtype == np.float32
    for image, output in zip(images, batch):  # an image's output ignores the rest of the batch
        np.testing.assert_allclose(trainer.predict(generator, image, 4), output, atol=1e-5)
        eager = np.asarray(generator(image[None], training=False))[0]
        np.testing.assert_allclose(output, eager, atol=1e-5)
    trainer.predict(generator, rng.uniform(-1, 1, (13, 9, 3)).astype(np.float32), 4)
    trainer.predict_tta(generator, rng.uniform(-1, 1, (16, 16, 3)).astype(np.float32), 4)
    function = trainer._inference(generator)
    assert function.experimental_get_tracing_count() == 1  # no retracing per size or batch


def test_mixed_precision_inputs_are_normalised_in_float32():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        ours, theirs = pair(7)
    finally:
        keras.config.set_dtype_policy(previous)
    x = tf.constant(np.random.default_rng(8).normal(1.0, 2.0, (2, 6, 6, 5)), tf.float16)
    y1, y2 = ours(x, training=True), theirs(x, training=True)
    assert y1.dtype == y2.dtype == tf.float16
    np.testing.assert_allclose(y1.numpy().astype(np.float32), y2.numpy().astype(np.float32),
                               atol=2e-2)
    np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(),
                               rtol=1e-3)


def test_tta_batches_and_the_compiled_function_do_not_keep_the_generator(monkeypatch):
    import gc
    import weakref

    from imagetranslation import inference, trainer
    from imagetranslation.models import resnet_generator

    generator = resnet_generator(ngf=4, n_res_blocks=1)
    image = np.random.default_rng(9).uniform(-1, 1, (16, 16, 3)).astype(np.float32)
    together = trainer.predict_tta(generator, image, 4)
    monkeypatch.setattr(inference, "TTA_BATCH_PIXELS", 3 * 16 * 16)  # batches of 3, 3 and 2
    np.testing.assert_allclose(trainer.predict_tta(generator, image, 4), together, atol=1e-6)
    alone = np.mean([trainer.dihedral_inverse(trainer.predict(
        generator, np.ascontiguousarray(trainer.dihedral(image, t)), 4), t)
        for t in trainer.DIHEDRAL], axis=0)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    gone = weakref.ref(generator)
    del generator
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("size, channels_in, filters, shape", [
    (7, 3, 16, (2, 12, 10)), (7, 16, 3, (1, 8, 8)), (5, 2, 6, (1, 6, 14)), (7, 4, 4, (1, 2, 2)),
])
def test_phase_split_convolution_equals_keras(size, channels_in, filters, shape, monkeypatch):
    monkeypatch.setattr(models, "PHASE_SPLIT_PIXELS", 4)
    kwargs = dict(padding="same", kernel_initializer=keras.initializers.RandomNormal(seed=3),
                  bias_initializer=keras.initializers.RandomNormal(seed=4))
    ours, theirs = Conv2D(filters, size, **kwargs), keras.layers.Conv2D(filters, size, **kwargs)
    x = tf.constant(np.random.default_rng(5).normal(size=(shape[0], shape[1], shape[2],
                                                          channels_in)).astype(np.float32))
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    assert ours._phase_split(x)
    upstream = tf.constant(np.random.default_rng(6).normal(size=(*shape, filters)), tf.float32)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
    scale = float(tf.reduce_max(tf.abs(results[1][0])))
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * max(scale, 1), rtol=1e-5)
    graph = tf.function(ours).get_concrete_function(tf.TensorSpec(x.shape)).graph
    assert "SpaceToDepth" in {op.type for op in graph.get_operations()}


def test_phase_split_only_where_it_applies(monkeypatch):
    """Odd, unknown or small sizes, strides, small kernels and many channels take Keras'
    path."""
    def split(layer, shape):
        layer.build(shape)
        return layer._phase_split(keras.KerasTensor(shape))

    assert models.PHASE_SPLIT_PIXELS == 128 * 128
    assert split(Conv2D(8, 7, padding="same"), (1, 128, 128, 3))
    assert not split(Conv2D(8, 7, padding="same"), (1, 64, 128, 3))
    monkeypatch.setattr(models, "PHASE_SPLIT_PIXELS", 4)

    assert split(Conv2D(8, 7, padding="same"), (1, 16, 16, 3))
    assert not split(Conv2D(8, 7, padding="same"), (1, 15, 16, 3))
    assert not split(Conv2D(8, 7, padding="same"), (1, None, None, 3))
    assert not split(Conv2D(8, 7, padding="valid"), (1, 16, 16, 3))
    assert not split(Conv2D(8, 7, strides=2, padding="same"), (1, 16, 16, 3))
    assert not split(Conv2D(8, 3, padding="same"), (1, 16, 16, 3))
    assert not split(Conv2D(8, 7, padding="same"), (1, 16, 16, 8))
    odd = Conv2D(3, 7, padding="same")
    odd.build((1, 15, 16, 8))
    x = tf.constant(np.random.default_rng(9).normal(size=(1, 15, 16, 8)).astype(np.float32))
    np.testing.assert_allclose(odd(x).numpy(), tf.nn.bias_add(
        tf.nn.conv2d(x, odd.kernel, 1, "SAME"), odd.bias).numpy(), atol=1e-5)

"""Losses and the optimizer of pix2pix: the regression ("classic") loss, the GAN losses,
and Keras' Adam with TensorFlow's fused update (:class:`FusedAdam`)."""

from __future__ import annotations

import keras

#: Added inside logarithms.
EPS = 1e-12


def classic_loss(kind, output, target, replica_sum=None, pos_weight=1.0):
    """The regression ("classic") loss between output and target in [-1, 1].

    ``replica_sum``: under several replicas, a function that sums a tensor over
    them; dice then uses the sums of the global batch (the other losses are
    means of their own, averaged over the replicas by the caller).
    ``pos_weight`` (``--pos_weight``): hinge, square and logistic weigh each pixel's
    term by 1 + (pos_weight - 1) x its target in [0, 1] (white 1 -> pos_weight,
    black -1 -> 1) and take the mean of the weighted terms.
    """
    import tensorflow as tf

    p, t = (output + 1.0) / 2.0, (target + 1.0) / 2.0

    def mean(terms):
        if pos_weight == 1:
            return tf.reduce_mean(terms)
        return tf.reduce_mean(terms * (1.0 + (pos_weight - 1.0) * t))

    if kind == "hinge":  # the thesis trainer's name for L1
        return mean(tf.abs(output - target))
    if kind == "square":
        return mean(tf.square(output - target))
    if kind == "dice" and replica_sum is not None:
        sums = replica_sum(tf.stack([tf.reduce_sum(p * t), tf.reduce_sum(p), tf.reduce_sum(t)]))
        return 1.0 - (2.0 * sums[0] + 1.0) / (sums[1] + sums[2] + 1.0)
    if kind == "dice":
        overlap = 2.0 * tf.reduce_sum(p * t) + 1.0
        return 1.0 - overlap / (tf.reduce_sum(p) + tf.reduce_sum(t) + 1.0)
    if kind == "logistic":
        p = tf.clip_by_value(p, EPS, 1.0 - 1e-7)
        return -mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))
    raise ValueError(f"unknown Y_loss {kind!r}")


def gan_losses(kind, real, fake):
    """(generator GAN loss, discriminator loss) from the discriminator's outputs.

    Parameters
    ----------
    kind : str
        ``log`` (``--loss log``, the discriminator's outputs are probabilities):
        generator ``mean(-log(fake + EPS))``, discriminator
        ``mean(-(log(real + EPS) + log(1 - fake + EPS)))``; ``square`` (least
        squares): generator ``mean((fake - 1)^2)``, discriminator
        ``0.5 mean((real - 1)^2 + fake^2)``.
    real, fake : tf.Tensor
        The discriminator's outputs on (input, target) and on (input, output).

    Returns
    -------
    (tf.Tensor, tf.Tensor)
        Two float scalars.
    """
    import tensorflow as tf

    if kind == "log":
        gen = tf.reduce_mean(-tf.math.log(fake + EPS))
        disc = tf.reduce_mean(-(tf.math.log(real + EPS) + tf.math.log(1.0 - fake + EPS)))
    else:  # least squares
        gen = tf.reduce_mean(tf.square(fake - 1.0))
        disc = 0.5 * tf.reduce_mean(tf.square(real - 1.0) + tf.square(fake))
    return gen, disc


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam with TensorFlow's fused update (``ResourceApplyAdam``): one op per
    variable instead of about ten, the same formula, state variables and checkpoints.
    Keras' own update for AMSGrad, sparse gradients and dtypes other than float32."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        var = variable.value if isinstance(variable, keras.Variable) else variable
        if (self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or var.dtype != tf.float32 or not hasattr(var, "handle")):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1, beta2=beta_2, epsilon=tf.constant(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32), use_locking=False)

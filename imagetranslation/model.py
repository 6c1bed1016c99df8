"""The pix2pix model being trained: generator (+ discriminator), optimizers, the moving
average of the generator's weights (``--ema``), the checkpoint, and the training step."""

from __future__ import annotations

from .config import as_config
from .losses import FusedAdam, classic_loss, gan_losses
from .models import build_generator, patch_discriminator
from .runtime import all_finite


class Model:
    """Generator (+ discriminator) with optimizers and a checkpoint.

    Parameters
    ----------
    options : Config or Mapping
        The run's options (network, losses, ``lr``, ``beta1``, ``xla``, ``ema``); see
        :class:`~imagetranslation.config.Config`.
    strategy : tf.distribute.Strategy or None
        Where the variables live and the step runs (see :func:`device_strategy`);
        None: TensorFlow's default device.  With several replicas batch
        normalisation is synchronized (statistics of the global batch).  The
        checkpoint's contents do not depend on it: a run saved under one
        strategy resumes under another.
    """

    def __init__(self, options, strategy=None):
        import contextlib

        import tensorflow as tf

        self.options = options = as_config(options)
        self.strategy = strategy
        self.replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        synchronized = self.replicas > 1
        with contextlib.nullcontext() if strategy is None else strategy.scope():
            self.generator = build_generator(options, synchronized=synchronized)
            self.g_opt = FusedAdam(options.lr, beta_1=options.beta1)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            tracked = {"generator": self.generator, "gen_optimizer": self.g_opt,
                       "step": self.step}
            self.discriminator = None
            if options.gan_weight > 0:
                self.discriminator = patch_discriminator(ndf=options.ndf,
                                                         sigmoid=options.loss == "log",
                                                         synchronized=synchronized)
                self.d_opt = FusedAdam(options.lr, beta_1=options.beta1)
                tracked.update(discriminator=self.discriminator, disc_optimizer=self.d_opt)
            self.g_opt.build(self.generator.trainable_variables)
            if self.discriminator is not None:
                self.d_opt.build(self.discriminator.trainable_variables)
            self.generator_ema = None
            if options.ema:
                self.generator_ema = build_generator(options, synchronized=synchronized)
                tracked["generator_ema"] = self.generator_ema
                self.reset_ema()
            self.checkpoint = tf.train.Checkpoint(**tracked)

    @property
    def averaged(self):
        """The generator a user gets: the moving average with ``--ema``, else the generator."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def _ema_pairs(self):
        """(average, variable) of every float variable; the two generators are built alike,
        so their variables (in the order of the layers) pair up."""
        averages, weights = self.generator_ema.variables, self.generator.variables
        if len(averages) != len(weights) or any(
                tuple(e.shape) != tuple(w.shape) or e.dtype != w.dtype
                for e, w in zip(averages, weights)):
            raise AssertionError("the moving-average generator does not mirror the generator")
        return [(e, w) for e, w in zip(averages, weights) if "float" in str(w.dtype)]

    def reset_ema(self):
        """Start the moving average at the generator's weights (a new or transferred run)."""
        if self.generator_ema is not None:
            for average, weight in self._ema_pairs():
                average.assign(weight.value)

    def update_ema(self):
        """One step of the moving average of every generator variable (the weights and batch
        norm's statistics), with TensorFlow's warm-up: after ``t`` steps the decay is
        ``min(ema, (1 + t) / (10 + t))``, so the first steps are not averaged with the
        initial weights for long.  Called after the weights moved, before the step counter
        does."""
        import tensorflow as tf

        t = tf.cast(self.step, tf.float32)
        decay = tf.minimum(tf.constant(self.options.ema, tf.float32), (1.0 + t) / (10.0 + t))
        for average, weight in self._ema_pairs():
            average.assign_sub((1.0 - decay) * (average.value - weight.value))

    def train_step_fn(self):
        """A ``tf.function`` that trains one batch and adds 1 to the step counter.

        Called with a batch of inputs and targets (under a strategy: the
        elements of ``strategy.experimental_distribute_dataset``); returns the
        losses (of the whole batch), the outputs (under several replicas: the
        first replica's share) and the new step.
        """
        import tensorflow as tf

        o = self.options
        gen, disc = self.generator, self.discriminator
        strategy, replicas = self.strategy, self.replicas
        # bfloat16 on one device: skip non-finite steps (below).  Under several replicas the
        # optimizers' merge_call cannot run inside a tf.cond, so there it is not guarded.
        guarded = o.mixed_precision == "bf16" and replicas == 1
        replica_sum = None
        if replicas > 1:
            def replica_sum(value):
                return tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, value)

        def share(value):
            # Each replica's losses are means over its share of the global batch (dice and
            # batch statistics: over the whole batch), and the optimizers sum the replicas'
            # gradients: 1/replicas of each gives the gradient of the global batch's mean,
            # so the learning rate stays that of one device.
            return value if replicas == 1 else value / replicas

        def update(inputs, targets):
            # read before the forward pass updates them (batch norm's moving statistics)
            kept = [(v, tf.identity(v.value)) for net in (gen, disc) if net is not None
                    for v in net.non_trainable_variables if "float" in str(v.dtype)
                    ] if guarded else []
            with tf.GradientTape(persistent=True) as tape:
                outputs = gen(inputs)
                classic = classic_loss(o.Y_loss, outputs, targets, replica_sum, o.pos_weight)
                loss = o.classic_weight * classic
                gan = d_loss = tf.constant(0.0)
                if disc is not None:
                    real = disc([inputs, targets])
                    fake = disc([inputs, outputs])
                    gan, d_loss = gan_losses(o.loss, real, fake)
                    loss = loss + o.gan_weight * gan
                shared_loss, shared_d_loss = share(loss), share(d_loss)  # on the tape
            losses = {"gen_loss_classic": classic, "gen_loss_GAN": gan, "discrim_loss": d_loss}
            updates = [(self.g_opt, tape.gradient(shared_loss, gen.trainable_variables),
                        gen.trainable_variables)]
            if disc is not None:
                updates.insert(0, (self.d_opt, tape.gradient(
                    shared_d_loss, disc.trainable_variables), disc.trainable_variables))
            del tape

            def apply():
                for optimizer, grads, variables in updates:
                    optimizer.apply_gradients(zip(grads, variables))
                return tf.constant(0.0)

            if not guarded:
                apply()
                return losses, outputs
            # bfloat16 on AMX now and then gives a non-finite loss or gradient (at random, a
            # step in hundreds or thousands); one applied would make every weight NaN for good.
            # Such a step is skipped, its moving statistics put back, and it is counted.
            finite = all_finite([loss, d_loss, *(g for _, grads, _ in updates for g in grads)])

            def skip():
                for variable, value in kept:
                    variable.assign(value)
                return tf.constant(1.0)

            skipped = tf.cond(finite, apply, skip)
            return {**losses, "skipped": skipped}, outputs

        def step(inputs, targets):
            if strategy is None:
                losses, outputs = update(inputs, targets)
            else:
                losses, outputs = strategy.run(update, args=(inputs, targets))
                losses = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                          for k, v in losses.items()}
                outputs = strategy.experimental_local_results(outputs)[0]
            if self.generator_ema is not None:
                self.update_ema()
            # The step counter moves in the same graph call as the weights, so an
            # interrupt (Ctrl-C) never separates them.
            step = self.step.assign_add(1)
            return {**losses, "outputs": outputs, "step": step}

        return tf.function(step, jit_compile=bool(o.xla), reduce_retracing=True)

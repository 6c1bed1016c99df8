"""The training loop: steps, checkpoints, summaries, display images, validation, the
learning-rate schedule, the time budget and Ctrl-C (:class:`Loop`, :func:`fit`)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from neuron3d.io import write_image
from neuron3d.progress import StepProgress

from . import data as D
from .config import as_config
from .inference import predict_batch
from .losses import classic_loss
from .models import stride_of
from .rundir import index_html, previous_seconds, write_training_record

PROG = "translate.py"
#: The clock of the time budget (``max_minutes``); tests replace it.
_clock = time.monotonic
#: Why a training run stopped, as recorded in training.json.
STOPPED_BY = ("max_steps", "max_minutes", "interrupted")


def learning_rate_at(lr, decay, step, max_steps=None, elapsed=None, budget=None):
    """``--lr_decay``: the learning rate of the step after ``step`` steps.

    The run's progress is the larger of ``step / max_steps`` and ``elapsed / budget``
    (seconds), each where known, clipped to [0, 1]: the schedule ends where the run
    ends, by steps or by its time budget, whichever comes first.  ``none`` keeps
    ``lr``; ``cosine`` is ``lr (1 + cos(pi p)) / 2``; ``linear`` is ``lr (1 - p)``.
    Without a known end (neither given) the rate stays ``lr``.
    """
    if decay == "none":
        return lr
    progress = []
    if max_steps:
        progress.append(step / max_steps)
    if budget:
        progress.append((elapsed or 0.0) / budget)
    p = min(max(max(progress, default=0.0), 0.0), 1.0)
    if decay == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if decay == "linear":
        return lr * (1.0 - p)
    raise ValueError(f"--lr_decay must be one of none, cosine, linear; got {decay!r}")


def validation_subset(count, size, options):
    """``--validation_share``: the indices of the validation images each validation predicts.

    A training step runs the generator forward and backward over ``batch_size`` crops of
    ``crop_size``; a prediction is one forward pass, about a third of that per pixel.  So
    validating ``n`` images of ``size`` (y, x) every ``validation_freq`` steps costs about
    ``n * y * x / (3 * validation_freq * batch_size * crop_size**2)`` of the training, and
    ``n`` is the largest count within ``validation_share`` (at least 1, at most ``count``),
    spread evenly over the images (always the same ones, so the losses compare).

    Parameters
    ----------
    count : int
        The number of validation images.
    size : tuple of int
        Their (y, x) size in pixels.
    options : Config
        ``validation_share``, ``validation_freq``, ``batch_size``, ``crop_size``.

    Returns
    -------
    numpy.ndarray of int
        Sorted, distinct indices into the images.
    """
    options = as_config(options)
    trained = 3 * options.validation_freq * options.batch_size * options.crop_size ** 2
    n = int(options.validation_share * trained // (int(size[0]) * int(size[1])))
    n = min(max(n, 1), count)
    return np.unique(np.round(np.linspace(0, count - 1, n)).astype(int))


class Validation:
    """``--validation_dir``: the generator's ``--Y_loss`` on held-out images, and its best
    weights in ``<output_dir>/best`` (a checkpoint of the generator alone).

    The images are predicted whole with batch norm's moving averages (and with ``--ema``
    by the weights' moving average), as ``--mode test`` predicts them, so the loss is that
    of the network a user would get.  A resumed run in the same
    folder keeps the best of before (from its training.json).
    """

    def __init__(self, model, images, options, out):
        import tensorflow as tf

        self.generator = model.averaged
        options = as_config(options)
        self.count = len(images[0])
        self.chosen = validation_subset(self.count, images[0].shape[1:3], options)
        self.inputs = D.to_model_range(images[0][self.chosen])
        self.targets = D.to_model_range(images[1][self.chosen])
        self.seconds = 0.0
        self.kind, self.stride = options.Y_loss, stride_of(options)
        self.pos_weight = options.pos_weight
        self.folder = Path(out) / "best"
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=self.generator),
                                                  str(self.folder), max_to_keep=1)
        self.best_loss, self.best_step, self.history = math.inf, None, []
        previous = Path(out) / "training.json"
        if self.manager.latest_checkpoint and previous.is_file():
            try:
                earlier = json.loads(previous.read_text()).get("validation") or {}
            except (OSError, ValueError):
                earlier = {}
            if earlier.get("best_loss") is not None:
                self.best_loss, self.best_step = earlier["best_loss"], earlier["best_step"]
                self.history = list(earlier.get("history", []))

    def loss(self):
        import tensorflow as tf

        outputs = np.concatenate([predict_batch(self.generator, self.inputs[i:i + 8],
                                                self.stride)
                                  for i in range(0, len(self.inputs), 8)])
        return float(classic_loss(self.kind, tf.constant(outputs), tf.constant(self.targets),
                                  pos_weight=self.pos_weight))

    def __call__(self, step):
        """Validate at ``step``; save the weights if they are the best so far."""
        began = _clock()
        loss = self.loss()
        self.seconds += _clock() - began
        self.history.append([int(step), loss])
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, int(step)
            self.manager.save(checkpoint_number=step)
        return loss

    def record(self, options):
        options = as_config(options)
        return {"dir": str(options.validation_dir), "freq": options.validation_freq,
                "loss": options.Y_loss, "pos_weight": self.pos_weight,
                "share": options.validation_share, "images": len(self.chosen),
                "of": self.count, "seconds": round(self.seconds, 3),
                "best_step": self.best_step,
                "best_loss": self.best_loss if self.best_step is not None else None,
                "history": self.history}


class Loop:
    """One invocation of the training loop from step ``start`` (see :func:`fit`).

    The state the steps share is explicit: ``step`` (reached), ``losses`` (the last
    step's), ``saved`` (the step of the last checkpoint this loop wrote), ``validated``
    (the step of the last validation), ``rate`` (the learning rate), ``began`` (the
    clock at the start).  :meth:`after_step` is called after every step with the step
    reached (a hook for tests: it does nothing).
    """

    def __init__(self, model, dataset, options, start, validation=None):
        import tensorflow as tf

        self.model, self.options, self.start = model, as_config(options), start
        options = self.options
        self.out = Path(options.output_dir)
        self.manager = tf.train.CheckpointManager(model.checkpoint, str(self.out), max_to_keep=3)
        self.writer = tf.summary.create_file_writer(str(self.out))
        self.total, self.minutes = options.max_steps, options.max_minutes
        self.budget = None if self.minutes is None else 60.0 * self.minutes
        self.earlier = previous_seconds(options)
        self.strategy = getattr(model, "strategy", None)
        if self.strategy is not None:  # each global batch split evenly over the replicas
            dataset = self.strategy.experimental_distribute_dataset(dataset)
        self.dataset = dataset
        self.validator = None if validation is None else \
            Validation(model, validation, options, self.out)
        self.decay = options.lr_decay
        self.optimizers = [model.g_opt] + ([model.d_opt] if model.discriminator is not None
                                           else [])
        self.step, self.losses, self.saved, self.validated = start, {}, None, None
        self.skipped = 0  # steps of this session skipped for a non-finite loss (bf16 only)
        self.rate, self.began = None, None

    def elapsed(self):
        return _clock() - self.began

    def record(self, why):
        """Write and return training.json's record (see :func:`fit`)."""
        seconds = max(self.elapsed(), 0.0)
        result = {"steps_reached": self.step, "start_step": self.start, "stopped_by": why,
                  "seconds": round(seconds, 3),
                  "seconds_total": round(self.earlier + seconds, 3),
                  "max_steps": self.total, "max_minutes": self.minutes}
        if self.validator is not None:
            result["validation"] = self.validator.record(self.options)
        if self.options.mixed_precision == "bf16":
            result["skipped_steps"] = self.skipped
        write_training_record(self.out, result)
        return result

    def save(self):
        """A checkpoint at the step reached, unless this loop wrote it already."""
        if self.saved != self.step:
            self.manager.save(checkpoint_number=self.step)
            self.saved = self.step

    def validate(self):
        import tensorflow as tf

        value, self.validated = self.validator(self.step), self.step
        with self.writer.as_default(step=self.step):
            tf.summary.scalar("validation_loss", value)

    def schedule(self):
        """Set the optimizers' learning rate for the next step (``--lr_decay``)."""
        elapsed = self.elapsed() if self.decay != "none" and self.budget is not None else None
        self.rate = learning_rate_at(self.options.lr, self.decay, self.step, self.total,
                                     elapsed, self.budget)
        for optimizer in self.optimizers:
            optimizer.learning_rate.assign(self.rate)

    def after_step(self, step):
        """Called after every step with the step reached (a hook; does nothing)."""

    def log(self, batch_inputs, batch_targets, result):
        """The summaries, display images, checkpoint and validation due at this step."""
        import tensorflow as tf

        o, step = self.options, self.step
        if o.summary_freq and step % o.summary_freq == 0 or step == self.total:
            with self.writer.as_default(step=step):
                for key, value in self.losses.items():
                    tf.summary.scalar(key, value)
                if self.decay != "none":
                    tf.summary.scalar("learning_rate", self.rate)
        if o.display_freq and step % o.display_freq == 0:
            if self.strategy is not None:  # the first replica's share, as result["outputs"]
                batch_inputs, batch_targets = (self.strategy.experimental_local_results(b)[0]
                                               for b in (batch_inputs, batch_targets))
            display(self.out, step, batch_inputs, result["outputs"], batch_targets, self.writer)
        if o.save_freq and step % o.save_freq == 0:
            self.save()
        if self.validator is not None and step % o.validation_freq == 0:
            self.validate()

    def run(self):
        """Train until the end (see :func:`fit`); returns (step, losses, record)."""
        step_fn = self.model.train_step_fn()
        progress = StepProgress(self.total, self.start, desc=PROG,
                                every_steps=self.options.progress_freq, final_line=True,
                                unit="step")
        stopped_by = "max_steps"
        self.began = _clock()
        self.schedule()  # also on a resume: the checkpoint holds the rate it stopped at
        try:
            for batch_inputs, batch_targets in self.dataset:
                if self.decay != "none":
                    self.schedule()
                result = step_fn(batch_inputs, batch_targets)
                self.step = int(result["step"])
                losses = {k: float(v) for k, v in result.items() if k not in ("outputs", "step")}
                self.skipped += int(losses.pop("skipped", 0.0))
                if self.model.discriminator is None:
                    losses = {"gen_loss_classic": losses["gen_loss_classic"]}
                self.losses = losses
                self.log(batch_inputs, batch_targets, result)
                progress.update(self.step, " ".join(f"{k}={v:.4g}" for k, v in losses.items()))
                self.after_step(self.step)
                if (self.budget is not None and self.step != self.total
                        and self.elapsed() >= self.budget):
                    stopped_by = "max_minutes"
                    break
            progress.close()
            self.finish()
        except KeyboardInterrupt:
            progress.close()
            self.step = int(self.model.step.numpy())
            self.save()
            self.writer.flush()
            self.record("interrupted")
            print(f"{PROG}: interrupted at step {self.step}; saved checkpoint "
                  f"{self.manager.latest_checkpoint} (resume with --checkpoint {self.out})",
                  file=sys.stderr)
            raise
        self.writer.flush()
        return self.step, self.losses, self.record(stopped_by)

    def finish(self):
        """The final checkpoint and validation."""
        if self.skipped:
            print(f"{PROG}: {self.skipped} of {self.step - self.start} steps skipped: their "
                  "loss or gradients were not finite in bfloat16 (training.json: "
                  "skipped_steps)", file=sys.stderr)
        if self.step > self.start or self.manager.latest_checkpoint is None:
            self.save()
        validator = self.validator
        if validator is not None and self.validated != self.step:
            self.validate()
        if validator is not None:
            print(f"{PROG}: validation {self.options.Y_loss} loss {validator.best_loss:.5g} at "
                  f"step {validator.best_step} (of {len(validator.history)} checks): its "
                  f"generator in {validator.folder}", file=sys.stderr)


def fit(model, dataset, options, start, validation=None):
    """Run the training loop from step ``start``.

    Writes checkpoints every ``save_freq`` steps and at the end, TensorBoard
    scalars every ``summary_freq`` steps, display images every
    ``display_freq`` steps, progress lines every ``progress_freq`` steps.
    Stops after step ``max_steps`` or, with ``max_minutes``, after the first
    step that ends ``max_minutes`` or more after the loop began (the clock is
    read after each step, so the run overshoots its budget by less than one
    step, plus the final checkpoint save), whichever comes first; without
    ``max_steps`` only the budget ends it.  The budget applies to this call:
    a run resumed with ``--checkpoint`` gets ``max_minutes`` more.  It counts
    the training loop, including the tracing of the first step, not
    TensorFlow's start-up and the loading of the images before it.  On Ctrl-C
    it saves a checkpoint at the step reached, writes training.json, then re-raises.

    Returns
    -------
    step : int
        The step reached.
    losses : dict
        The last step's losses.
    record : dict
        What ``output_dir/training.json`` holds (written atomically):
        ``steps_reached`` (int, the global step of the last checkpoint),
        ``start_step`` (int, where this invocation began), ``stopped_by``
        (``"max_steps"``, ``"max_minutes"`` or ``"interrupted"``), ``seconds``
        (float, wall time of this invocation's training loop, final
        checkpoint included), ``seconds_total`` (``seconds`` plus the
        ``seconds_total`` of the training.json of the run resumed, if any),
        ``max_steps`` (int or None), ``max_minutes`` (float or None); in bfloat16,
        ``skipped_steps`` (int: steps of this invocation whose loss or gradients were not
        finite, so their update was not applied).
    """
    return Loop(model, dataset, options, start, validation).run()


def display(out, step, inputs, outputs, targets, writer):
    """Save the first image of the batch to images/ and TensorBoard; rewrite index.html."""
    import tensorflow as tf

    for kind, batch in (("inputs", inputs), ("outputs", outputs), ("targets", targets)):
        image = D.from_model_range(np.asarray(batch[0], dtype=np.float32))
        write_image(out / "images" / f"{step:08d}-{kind}.png", image)
        with writer.as_default(step=step):
            tf.summary.image(kind, image[None], step=step)
    rows = []
    for path in sorted((out / "images").glob("*-inputs.png")):
        number = path.name.split("-")[0]
        if number.isdigit():
            rows.append([int(number)] + [f"images/{number}-{kind}.png"
                                         for kind in ("inputs", "outputs", "targets")])
    index_html(out / "index.html", ["step", "input", "output", "target"], rows)

"""Training, testing and export of pix2pix models (used by ``translate.py``).

Train: loss = classic_weight x Y_loss(output, target) + gan_weight x GAN loss,
Adam for generator and discriminator; with ``gan_weight == 0`` the
discriminator is never built (the thesis setting: a supervised fully
convolutional regressor).  Outputs in ``output_dir``: ``options.json``,
checkpoints (``tf.train.CheckpointManager``), TensorBoard event files and,
with ``display_freq``, ``images/`` and ``index.html``.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import data as D
from .models import build_generator, patch_discriminator, stride_of

#: Options that define the network; test mode takes them from the checkpoint.
ARCH_KEYS = ("which_direction", "model", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
             "encoder_activation", "Y_loss", "loss", "gan_weight", "classic_weight",
             "mixed_precision")
#: Options that shape the weights; a resumed run keeps the checkpoint's.
NETWORK_KEYS = ("which_direction", "generator", "ngf", "ndf", "n_res_blocks", "u_depth",
                "encoder_activation", "loss", "mixed_precision")
EPS = 1e-12


def configure(options):
    """Seeds, mixed precision and device logging for a run."""
    import keras

    keras.utils.set_random_seed(int(options["seed"]))
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(options.get("mixed_precision"))
    keras.mixed_precision.set_global_policy(policy or "float32")


def device_summary():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)}: {', '.join(g.name for g in gpus)})" if gpus else "CPU"


def classic_loss(kind, output, target):
    """The regression ("classic") loss between output and target in [-1, 1]."""
    import tensorflow as tf

    if kind == "hinge":  # the thesis trainer's name for L1
        return tf.reduce_mean(tf.abs(output - target))
    if kind == "square":
        return tf.reduce_mean(tf.square(output - target))
    p, t = (output + 1.0) / 2.0, (target + 1.0) / 2.0
    if kind == "dice":
        overlap = 2.0 * tf.reduce_sum(p * t) + 1.0
        return 1.0 - overlap / (tf.reduce_sum(p) + tf.reduce_sum(t) + 1.0)
    if kind == "logistic":
        p = tf.clip_by_value(p, EPS, 1.0 - 1e-7)
        return -tf.reduce_mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))
    raise ValueError(f"unknown Y_loss {kind!r}")


def gan_losses(kind, real, fake):
    """(generator GAN loss, discriminator loss) from discriminator outputs."""
    import tensorflow as tf

    if kind == "log":
        gen = tf.reduce_mean(-tf.math.log(fake + EPS))
        disc = tf.reduce_mean(-(tf.math.log(real + EPS) + tf.math.log(1.0 - fake + EPS)))
    else:  # least squares
        gen = tf.reduce_mean(tf.square(fake - 1.0))
        disc = 0.5 * tf.reduce_mean(tf.square(real - 1.0) + tf.square(fake))
    return gen, disc


class Model:
    """Generator (+ discriminator) with optimizers and a checkpoint."""

    def __init__(self, options):
        import keras
        import tensorflow as tf

        self.options = options
        self.generator = build_generator(options)
        self.g_opt = keras.optimizers.Adam(options["lr"], beta_1=options["beta1"])
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        tracked = {"generator": self.generator, "gen_optimizer": self.g_opt, "step": self.step}
        self.discriminator = None
        if options["gan_weight"] > 0:
            self.discriminator = patch_discriminator(ndf=options["ndf"],
                                                     sigmoid=options["loss"] == "log")
            self.d_opt = keras.optimizers.Adam(options["lr"], beta_1=options["beta1"])
            tracked.update(discriminator=self.discriminator, disc_optimizer=self.d_opt)
        self.g_opt.build(self.generator.trainable_variables)
        if self.discriminator is not None:
            self.d_opt.build(self.discriminator.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(**tracked)

    def train_step_fn(self):
        import tensorflow as tf

        o = self.options
        gen, disc = self.generator, self.discriminator

        def step(inputs, targets):
            with tf.GradientTape(persistent=True) as tape:
                outputs = gen(inputs)
                classic = classic_loss(o["Y_loss"], outputs, targets)
                loss = o["classic_weight"] * classic
                gan = d_loss = tf.constant(0.0)
                if disc is not None:
                    real = disc([inputs, targets])
                    fake = disc([inputs, outputs])
                    gan, d_loss = gan_losses(o["loss"], real, fake)
                    loss = loss + o["gan_weight"] * gan
            if disc is not None:
                d_grads = tape.gradient(d_loss, disc.trainable_variables)
                self.d_opt.apply_gradients(zip(d_grads, disc.trainable_variables))
            grads = tape.gradient(loss, gen.trainable_variables)
            self.g_opt.apply_gradients(zip(grads, gen.trainable_variables))
            del tape
            return {"gen_loss_classic": classic, "gen_loss_GAN": gan, "discrim_loss": d_loss,
                    "outputs": outputs}

        return tf.function(step, jit_compile=bool(o.get("xla")), reduce_retracing=True)


def write_options(path, options):
    path.write_text(json.dumps(options, indent=2, sort_keys=True) + "\n")


def _save_image(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)


def _index_html(path, header, rows):
    """A simple table of images; rows are lists of cells (text or image file names)."""
    cells = []
    for row in rows:
        parts = []
        for cell in row:
            if str(cell).endswith((".png", ".jpg", ".jpeg")):
                parts.append(f'<td><img src="{html.escape(str(cell))}" width="256"></td>')
            else:
                parts.append(f"<td>{html.escape(str(cell))}</td>")
        cells.append("<tr>" + "".join(parts) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    path.write_text(f"<html><body><table border=1>\n<tr>{head}</tr>\n" + "\n".join(cells)
                    + "\n</table></body></html>\n")


class Progress:
    """tqdm bar on a terminal; plain lines every ``every`` steps otherwise."""

    def __init__(self, start, total, every):
        self.start, self.total, self.every = start, total, max(1, every)
        self.t0 = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", file=sys.stderr)

    def update(self, step, losses):
        text = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
        if self.bar is not None:
            self.bar.update(1)
            if step % self.every == 0:
                self.bar.set_postfix_str(text)
            return
        if step % self.every and step != self.total:
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        left = (self.total - step) / rate if rate else float("nan")
        print(f"step {step}/{self.total}  {text}  {rate:.2f} steps/s  {left:.0f} s left",
              file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(options):
    """Train a model; returns the final losses.  ``options`` as translate.py makes them."""
    import tensorflow as tf

    configure(options)
    out = Path(options["output_dir"])
    inputs, targets, _ = D.load_pairs(options["input_dir"], options["which_direction"])
    height, width = D.scaled_size(*inputs.shape[1:3], options["scale_size"])
    if options["crop_size"] > min(height, width):
        raise ValueError(f"crop_size {options['crop_size']} is larger than the scaled image "
                         f"({height} x {width}) from {options['input_dir']}")
    if options["crop_size"] % stride_of(options):
        raise ValueError(f"crop_size {options['crop_size']} must be a multiple of "
                         f"{stride_of(options)} for the {options['generator']} generator")
    if options["gan_weight"] > 0 and options["crop_size"] < 32:
        raise ValueError(f"crop_size {options['crop_size']} is too small for the PatchGAN "
                         "discriminator (needs >= 32; or train with --gan_weight 0)")
    steps_per_epoch = math.ceil(len(inputs) / options["batch_size"])
    if options.get("max_steps") is None:
        options["max_steps"] = options["max_epochs"] * steps_per_epoch
    resumed_with_gan = None
    if options.get("checkpoint"):
        saved = _saved_options(options["checkpoint"])
        changed = {k: saved[k] for k in NETWORK_KEYS if k in saved and saved[k] != options[k]}
        if changed:
            print(f"translate.py: resuming with the checkpoint's network options {changed}",
                  file=sys.stderr)
            options.update(changed)
        resumed_with_gan = saved.get("gan_weight", 0) > 0
    model = Model(options)
    start = 0
    if options.get("checkpoint"):
        latest = tf.train.latest_checkpoint(options["checkpoint"])
        if latest is None:
            raise ValueError(f"no checkpoint to resume from in {options['checkpoint']}")
        status = model.checkpoint.restore(latest)
        if resumed_with_gan or model.discriminator is None:
            try:
                status.assert_existing_objects_matched()
            except AssertionError:
                raise ValueError(f"checkpoint {latest} does not match the network being "
                                 "trained") from None
        else:  # a discriminator joins a generator trained without one
            status.expect_partial()
        start = int(model.step.numpy())
    out.mkdir(parents=True, exist_ok=True)
    write_options(out / "options.json", options)
    manager = tf.train.CheckpointManager(model.checkpoint, str(out), max_to_keep=3)
    writer = tf.summary.create_file_writer(str(out))
    total = options["max_steps"]
    print(f"translate.py: training {options['generator']} (ngf {options['ngf']}) on "
          f"{len(inputs)} images, steps {start}..{total} ({steps_per_epoch} per epoch), "
          f"device {device_summary()}", file=sys.stderr)
    dataset = D.training_dataset(inputs, targets, options, start)
    step_fn = model.train_step_fn()
    progress = Progress(start, total, options["progress_freq"])
    display_rows = []
    losses = {}
    step = start
    for batch_inputs, batch_targets in dataset:
        result = step_fn(batch_inputs, batch_targets)
        step = int(model.step.assign_add(1).numpy())
        losses = {k: float(v) for k, v in result.items() if k != "outputs"}
        if model.discriminator is None:
            losses = {"gen_loss_classic": losses["gen_loss_classic"]}
        if options["summary_freq"] and step % options["summary_freq"] == 0 or step == total:
            with writer.as_default(step=step):
                for key, value in losses.items():
                    tf.summary.scalar(key, value)
        if options["display_freq"] and step % options["display_freq"] == 0:
            display_rows.append(_display(out, step, batch_inputs, result["outputs"],
                                         batch_targets, writer))
            _index_html(out / "index.html", ["step", "input", "output", "target"], display_rows)
        if options["save_freq"] and step % options["save_freq"] == 0:
            manager.save(checkpoint_number=step)
        progress.update(step, losses)
    progress.close()
    if step > start or manager.latest_checkpoint is None:
        manager.save(checkpoint_number=step)
    writer.flush()
    print(f"translate.py: trained to step {step}; checkpoint, options.json and TensorBoard logs "
          f"in {out}", file=sys.stderr)
    return losses


def _display(out, step, inputs, outputs, targets, writer):
    import tensorflow as tf

    images = out / "images"
    images.mkdir(exist_ok=True)
    row = [step]
    for kind, batch in (("inputs", inputs), ("outputs", outputs), ("targets", targets)):
        image = D.to_uint8(np.asarray(batch[0], dtype=np.float32))
        name = f"{step:08d}-{kind}.png"
        _save_image(images / name, image)
        row.append(f"images/{name}")
        with writer.as_default(step=step):
            tf.summary.image(kind, image[None], step=step)
    return row


def _saved_options(checkpoint_dir):
    """The options.json of a training output folder."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder does not exist: {checkpoint_dir}")
    options_file = checkpoint_dir / "options.json"
    if not options_file.exists():
        raise ValueError(f"checkpoint folder {checkpoint_dir} has no options.json "
                         "(is it the output_dir of a training run?)")
    return json.loads(options_file.read_text())


def load_for_inference(checkpoint_dir, overrides=None):
    """Generator restored from ``checkpoint_dir`` with its saved architecture options."""
    import tensorflow as tf

    saved = _saved_options(checkpoint_dir)
    options = dict(overrides or {})
    options.update({k: saved[k] for k in ARCH_KEYS if k in saved})
    configure({"seed": options.get("seed", 0), "mixed_precision": options.get("mixed_precision")})
    generator = build_generator(options)
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise ValueError(f"no checkpoint files in {checkpoint_dir}")
    tf.train.Checkpoint(generator=generator).restore(latest).expect_partial()
    return generator, options


def predict(generator, image, stride):
    """Run ``generator`` on one (y, x, c) float image of any size (padded, then cropped)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % stride, -width % stride
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(
        height, width) > max(pad_h, pad_w) else "edge")
    output = np.asarray(generator(padded[None], training=False), dtype=np.float32)[0]
    return output[:height, :width]


def test(options):
    """Translate every combined image of input_dir; writes images/ and index.html."""
    from PIL import Image

    generator, options = load_for_inference(options["checkpoint"], options)
    inputs, targets, names = D.load_pairs(options["input_dir"], options["which_direction"])
    out = Path(options["output_dir"])
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    write_options(out / "options.json", options)
    size = (options.get("image_height") or inputs.shape[1], options.get("image_width")
            or inputs.shape[2])
    stride = stride_of(options)
    suffix = "." + options.get("output_filetype", "png")
    rows = []
    t0 = time.perf_counter()
    for count, (a, b, name) in enumerate(zip(inputs, targets, names), 1):
        if a.shape[:2] != size:
            a = np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR))
            b = np.asarray(Image.fromarray(b).resize(size[::-1], Image.BILINEAR))
        output = D.to_uint8(predict(generator, D.to_float(a), stride))
        row = [name]
        for kind, image in (("inputs", a), ("outputs", output), ("targets", b)):
            file = f"{name}-{kind}{suffix}"
            _save_image(images / file, image)
            row.append(f"images/{file}")
        rows.append(row)
        if count % 10 == 0 or count == len(names):
            rate = count / (time.perf_counter() - t0)
            print(f"translate.py: {count}/{len(names)} images ({rate:.1f}/s)", file=sys.stderr)
    _index_html(out / "index.html", ["name", "input", "output", "target"], rows)
    print(f"translate.py: wrote {len(rows)} outputs to {images}", file=sys.stderr)
    return len(rows)


def export(options):
    """Write a TensorFlow SavedModel that predicts without this code."""
    generator, options = load_for_inference(options["checkpoint"], options)
    out = Path(options["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    target = out / "saved_model"
    generator.export(str(target), format="tf_saved_model", verbose=False)
    write_options(out / "options.json", options)
    print(f"translate.py: exported SavedModel to {target} (input: float32 (batch, y, x, 3) in "
          f"[-1, 1], sizes multiple of {stride_of(options)})", file=sys.stderr)
    return target

"""Training, testing and export of pix2pix models (used by ``translate.py``).

Train: loss = classic_weight x Y_loss(output, target) + gan_weight x GAN loss,
Adam for generator and discriminator; with ``gan_weight == 0`` the
discriminator is never built (the thesis setting: a supervised fully
convolutional regressor).  Outputs in ``output_dir``: ``options.json`` (the
options the run used and the TensorFlow settings in effect, see
:func:`~imagetranslation.runtime.runtime_settings`), ``training.json`` (how far
the run got and why it stopped, see :func:`~imagetranslation.loop.fit`),
checkpoints (``tf.train.CheckpointManager``), TensorBoard event files and, with
``display_freq``, ``images/`` and ``index.html``.  Every file the trainer writes
itself goes through the atomic writers of :mod:`neuron3d.io`.

Data safety: training refuses an output folder that already holds a run unless
it resumes from that folder (``checkpoint == output_dir``) or ``force`` starts
over; test and export refuse to write into a training run's folder; Ctrl-C
saves a checkpoint at the current step before stopping.

The parts, one concern each: :mod:`~imagetranslation.config` (the options),
:mod:`~imagetranslation.runtime` (TensorFlow's threads, determinism, devices),
:mod:`~imagetranslation.losses`, :mod:`~imagetranslation.model` (networks,
optimizers, the training step), :mod:`~imagetranslation.rundir` (the run's
folder), :mod:`~imagetranslation.checkpoints` (resume, transfer, restore),
:mod:`~imagetranslation.loop` (the training loop), :mod:`~imagetranslation.inference`
(prediction, TTA).  This module puts them together, and re-exports their public
names for the callers of the single module it used to be.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from neuron3d.io import write_folder
from neuron3d.progress import StepProgress

from . import data as D
from .checkpoints import (  # noqa: F401
    _latest_checkpoint,
    restore,
    restore_weights,
    resume_options,
    saved_options,
    transfer_options,
)
from .config import (  # noqa: F401
    ARCH_KEYS,
    GENERATOR_SHAPE_KEYS,
    NETWORK_KEYS,
    as_config,
    check_mode,
    parse_augment,
)
from .inference import (  # noqa: F401
    DIHEDRAL,
    TTA_BATCH_PIXELS,
    _inference,
    dihedral,
    dihedral_inverse,
    load_for_inference,
    predict,
    predict_batch,
    predict_tta,
    predict_views,
)
from .loop import STOPPED_BY, Loop, Validation, display, fit, learning_rate_at  # noqa: F401
from .losses import EPS, FusedAdam, classic_loss, gan_losses  # noqa: F401
from .model import Model
from .models import GENERATOR_DEFAULTS, build_generator, patch_discriminator, stride_of  # noqa: F401
from .rundir import (  # noqa: F401
    _RUN_IMAGES,
    check_inference_output,
    check_train_output,
    index_html,
    remove_run_files,
    remove_tf_temporaries,
    write_options,
    write_training_record,
)
from .runtime import (  # noqa: F401
    _STRATEGIES,
    configure,
    configure_runtime,
    device_strategy,
    device_summary,
    resolve_mixed_precision,
    runtime_settings,
)

PROG = "translate.py"


def check_sizes(options, height, width):
    """Check that the crop fits the (scaled) ``height`` x ``width`` images and the networks.

    Raises
    ------
    ValueError
        If ``crop_size`` is larger than the scaled images, not a multiple of
        the generator's stride, or too small for the PatchGAN discriminator; or if
        the blur of ``--augment blur`` needs a kernel wider than the crop.
    """
    o = as_config(options)
    height, width = D.scaled_size(height, width, o.scale_size)
    crop = o.crop_size
    if crop > min(height, width):
        raise ValueError(f"--crop_size {crop} is larger than the scaled image "
                         f"({height} x {width}) from {o.input_dir}")
    if crop % stride_of(o):
        raise ValueError(f"--crop_size {crop} must be a multiple of "
                         f"{stride_of(o)} for the {o.generator} generator")
    if o.gan_weight > 0 and crop < 32:
        raise ValueError(f"--crop_size {crop} is too small for the PatchGAN "
                         "discriminator (needs >= 32; or train with --gan_weight 0)")
    if "blur" in o.augment:
        radius = D.blur_radius(o.blur_sigma)
        if radius >= crop:
            raise ValueError(f"--blur_sigma {o.blur_sigma} needs a kernel of radius {radius}, "
                             f"which must be smaller than --crop_size {crop}")


def _where(devices, batch_size):
    """The devices of the training line: ``device CPU``, ``devices GPU:0, GPU:1 (2 images
    each)``."""
    if not devices:
        return f"device {device_summary()}"
    share = batch_size // len(devices)
    return (f"device{'s' if len(devices) > 1 else ''} {', '.join(devices)}"
            + (f" ({share} image{'s' if share > 1 else ''} each)" if len(devices) > 1 else ""))


def train(options):
    """Train a model as ``translate.py --mode train`` does.

    Parameters
    ----------
    options : Config or Mapping
        The run's options (:class:`~imagetranslation.config.Config`, as
        :func:`imagetranslation.translate.resolve` makes them).

    Returns
    -------
    dict
        ``options`` (the Config the run used, as written to options.json,
        ``max_steps`` resolved, a resumed checkpoint's network options applied,
        and ``training_devices``: the devices of
        :func:`~imagetranslation.runtime.device_strategy`, empty for TensorFlow's
        default one), ``step`` (the step reached), ``losses`` (the last step's)
        and ``training``: the record written to ``training.json`` (see
        :func:`~imagetranslation.loop.fit`).

    Raises
    ------
    ValueError, FileNotFoundError
        Bad options, input data, sizes, output folder or checkpoint, or a resumed
        checkpoint already past ``max_steps``; nothing is written then.
    KeyboardInterrupt
        On Ctrl-C, after saving a checkpoint at the step reached.
    """
    options = as_config(options)
    check_mode(options, "train")
    configure_runtime(options.deterministic, options.threads)
    check_train_output(options)
    strategy, devices = device_strategy(options.devices, options.batch_size)
    if options.xla and len(devices) > 1:
        raise ValueError(f"--xla compiles the step for one device; --devices "
                         f"{options.devices} trains on {len(devices)} "
                         f"({', '.join(devices)}): pass --devices {devices[0]} or leave out --xla")
    inputs, targets, _ = D.load_pairs(options.input_dir, options.which_direction)
    check_sizes(options, *inputs.shape[1:3])
    validation = None
    if options.validation_dir:
        validation = D.load_pairs(options.validation_dir, options.which_direction,
                                  what="--validation_dir")[:2]  # RGB, as the inputs
    steps_per_epoch = math.ceil(len(inputs) / options.batch_size)
    max_steps = options.max_steps
    if max_steps is None and options.max_epochs is not None:
        max_steps = options.max_epochs * steps_per_epoch
    options = options.replace(training_devices=tuple(devices), max_steps=max_steps)
    two_slice = {"missing_slice", "misalign"} & set(options.augment)
    if two_slice and np.array_equal(inputs[..., 0], inputs[..., 1]):
        print(f"{PROG}: warning: --augment {','.join(sorted(two_slice))} changes the red or "
              f"the green channel, but the inputs of {options.input_dir} have equal red "
              "and green channels (one slice, not a consecutive pair)", file=sys.stderr)
    saved_with_gan = None
    resuming = bool(options.checkpoint) and options.restore == "all"
    if resuming:
        options, saved_with_gan = resume_options(options)
    elif options.checkpoint:
        transfer_options(options)
    if options.mixed_precision == "auto":
        chosen = resolve_mixed_precision("auto", options.deterministic, devices,
                                         options.crop_size)
        print(f"{PROG}: --mixed_precision auto: {chosen or 'float32'} on this machine",
              file=sys.stderr)
        options = options.replace(mixed_precision=chosen)
    configure(options)
    model = Model(options, strategy)
    if resuming:
        restore(model.checkpoint, options.checkpoint,
                partial=not saved_with_gan and model.discriminator is not None)
    start = int(model.step.numpy())
    if options.max_steps is not None and start > options.max_steps:
        raise ValueError(f"--max_steps {options.max_steps} is below the step of --checkpoint "
                         f"{options.checkpoint} (step {start}): nothing to train; pass "
                         f"--max_steps above {start} to train on")
    if not resuming and options.checkpoint:
        restored = restore_weights(model, options.checkpoint, options.restore)
        parts = {"generators": "generator", "both": "generator and discriminator"}
        print(f"{PROG}: a new training from the {parts[options.restore]} weights of "
              f"{restored}", file=sys.stderr)
    out = Path(options.output_dir)
    if options.force:
        remove_run_files(out)
    remove_tf_temporaries(out)
    write_options(out / "options.json", options)
    end = "" if options.max_steps is None else options.max_steps
    budget = "" if options.max_minutes is None else f", at most {options.max_minutes:g} minutes"
    print(f"{PROG}: training {options.generator} (ngf {options.ngf}) on "
          f"{len(inputs)} images, steps {start}..{end}{budget} "
          f"({steps_per_epoch} per epoch), {_where(devices, options.batch_size)}",
          file=sys.stderr)
    dataset = D.training_dataset(inputs, targets, options, start)
    step, losses, record = fit(model, dataset, options, start, validation)
    print(f"{PROG}: trained to step {step} in {record['seconds']:.1f} s (stopped by "
          f"{record['stopped_by']}); checkpoint, options.json, training.json and TensorBoard "
          f"logs in {out}", file=sys.stderr)
    return {"options": options, "step": step, "losses": losses, "training": record}


def test(options):
    """Translate every combined image of input_dir (``translate.py --mode test``).

    Writes ``images/<name>-{inputs,outputs,targets}.<png|jpeg>``, then
    ``index.html`` and ``options.json`` into ``output_dir``.  With ``tta`` the
    outputs are :func:`predict_tta`'s average over the 8 flips and transposes; with ``views``
    the images are taken as one volume's slices and the outputs are
    :func:`predict_views`'s mean of its three orthogonal views.  ``images/`` is
    written atomically (:func:`neuron3d.io.write_folder`): on any error nothing
    is written, not even an empty ``output_dir``.  Returns the number of images.

    Raises
    ------
    ValueError, FileNotFoundError
        Bad checkpoint, input folder, or an ``output_dir`` that is a training
        run's folder (see :func:`check_inference_output`).
    """
    from PIL import Image

    options = as_config(options)
    check_inference_output(options)
    configure_runtime(options.deterministic, options.threads)
    generator, options = load_for_inference(options.checkpoint, options)
    inputs, targets, names = D.load_pairs(options.input_dir, options.which_direction)
    out = Path(options.output_dir)
    size = (options.image_height or inputs.shape[1], options.image_width or inputs.shape[2])
    stride = stride_of(options)
    predictor = predict_tta if options.tta else predict
    suffix = "." + options.output_filetype
    rows = []
    views = None
    if options.views:  # the images are one volume's slices: predict its three views first
        if size != inputs.shape[1:3]:
            raise ValueError("--views predicts the volume the images make up; it takes no "
                             "--image_height / --image_width")
        views = D.from_model_range(predict_views(generator, D.to_model_range(inputs), stride,
                                                 predictor))

    def fill(tmp):
        progress = StepProgress(len(names), desc=PROG, every_seconds=10.0, final_line=True,
                                unit="image")
        with progress:
            for count, (a, b, name) in enumerate(zip(inputs, targets, names), 1):
                if a.shape[:2] != size:
                    a = np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR))
                    b = np.asarray(Image.fromarray(b).resize(size[::-1], Image.BILINEAR))
                if views is not None:
                    output = views[count - 1]
                else:
                    output = D.from_model_range(predictor(generator, D.to_model_range(a),
                                                          stride))
                row = [name]
                for kind, image in (("inputs", a), ("outputs", output), ("targets", b)):
                    file = f"{name}-{kind}{suffix}"
                    Image.fromarray(image).save(tmp / file)
                    row.append(f"images/{file}")
                rows.append(row)
                progress.update(count)

    write_folder(out / "images", fill, owned=lambda name: _RUN_IMAGES.match(name) is not None)
    index_html(out / "index.html", ["name", "input", "output", "target"], rows)
    write_options(out / "options.json", options)
    print(f"{PROG}: wrote {len(rows)} outputs to {out / 'images'}", file=sys.stderr)
    return len(rows)


def export(options):
    """Write a TensorFlow SavedModel that predicts without this code (``--mode export``)."""
    options = as_config(options)
    check_inference_output(options)
    generator, options = load_for_inference(options.checkpoint, options)
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "saved_model"
    generator.export(str(target), format="tf_saved_model", verbose=False)
    write_options(out / "options.json", options)
    print(f"{PROG}: exported SavedModel to {target} (input: float32 (batch, y, x, 3) in "
          f"[-1, 1], sizes multiple of {stride_of(options)})", file=sys.stderr)
    return target

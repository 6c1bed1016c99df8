"""A run's folder: what marks it, what may be written into it, and the files the trainer
writes there itself (options.json, training.json, index.html), each atomically.

Training refuses an output folder that already holds a run unless it resumes from that
folder or ``force`` starts over (:func:`check_train_output`); test and export refuse to
write into a training run's folder (:func:`check_inference_output`).
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from pathlib import Path

from neuron3d.io import same_path, write_file

from .config import as_config

#: Files of a run folder that mark it as holding a run (checkpoints, options).
_RUN_MARKERS = re.compile(r"^(checkpoint|ckpt-\d+.*|options\.json)$")
#: Files a training run writes into its folder (``--force`` removes them), including
#: TensorFlow's temporaries of a killed save (``ckpt-N_temp``, ``checkpoint.tmp...``).
_RUN_FILES = re.compile(r"^(checkpoint|checkpoint\.tmp.*|ckpt-\d+.*|events\.out\.tfevents\..*"
                        r"|options\.json|training\.json|index\.html|best)$")
#: Images that training (display_freq) and test write into ``images/``.
_RUN_IMAGES = re.compile(r"^.+-(inputs|outputs|targets)\.(png|jpeg)$")
#: Temporaries TensorFlow leaves when killed while saving a checkpoint.
_TF_TEMPORARIES = re.compile(r"^(ckpt-\d+_temp.*|checkpoint\.tmp[0-9a-f]+)$")


def write_options(path, options):
    """Write ``options`` (a Config's :meth:`~imagetranslation.config.Config.record`, or a
    dict) plus :func:`~imagetranslation.runtime.runtime_settings` as ``"runtime"`` to
    ``path`` atomically (sorted keys, indented)."""
    from .runtime import runtime_settings

    record = options.record() if hasattr(options, "record") else dict(options)
    record = {**record, "runtime": runtime_settings()}
    write_file(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def index_html(path, header, rows):
    """Write a table of images atomically; rows are lists of cells (text or image file names)."""
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
    write_file(path, f"<html><body><table border=1>\n<tr>{head}</tr>\n" + "\n".join(cells)
               + "\n</table></body></html>\n")


def _holds_run(folder):
    """Whether ``folder`` holds a run (checkpoints or an options.json)."""
    folder = Path(folder)
    return folder.is_dir() and any(_RUN_MARKERS.match(p.name) for p in folder.iterdir())


def _holds_checkpoints(folder):
    folder = Path(folder)
    return folder.is_dir() and any(p.name == "checkpoint" or p.name.endswith(".index")
                                   for p in folder.iterdir())


def check_train_output(options):
    """Refuse to train into a folder holding another run, unless resuming it or ``force``.

    Raises
    ------
    ValueError
        If ``output_dir`` holds checkpoints or an options.json and is not the
        ``checkpoint`` folder being resumed and ``force`` is not set; if
        ``force`` would remove the checkpoint being resumed; or if ``restore``
        (``generators``, ``both``) would start a new run in the ``checkpoint``
        folder it reads.
    """
    options = as_config(options)
    out, checkpoint = Path(options.output_dir), options.checkpoint
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is an existing file, expected a folder")
    what = options.restore
    if checkpoint is not None and what != "all" and same_path(checkpoint, out):
        raise ValueError(f"--restore {what} starts a new training from the weights of "
                         f"--checkpoint {checkpoint}: --output_dir must be another folder (to "
                         "resume that run, leave out --restore)")
    resuming_here = checkpoint is not None and same_path(checkpoint, out)
    if options.force and resuming_here:
        raise ValueError(f"--force would remove the checkpoints of --checkpoint {checkpoint} "
                         f"(the same folder as --output_dir {out}): pass one of them")
    if _holds_run(out) and not resuming_here and not options.force:
        raise ValueError(f"--output_dir {out} already holds a run (checkpoints/options.json): "
                         f"pass --checkpoint {out} to resume it or --force to start over")


def remove_run_files(folder):
    """Remove what a run wrote into ``folder``: checkpoints, events, options, images.

    Other files are kept.  Returns the paths removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _RUN_FILES.match(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    images = folder / "images"
    if images.is_dir():
        for entry in images.iterdir():
            if _RUN_IMAGES.match(entry.name) and entry.is_file():
                entry.unlink()
                removed.append(entry)
        if not any(images.iterdir()):
            images.rmdir()
    return removed


def remove_tf_temporaries(folder):
    """Remove the temporaries a checkpoint save killed by SIGKILL left in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for entry in folder.iterdir():
            if _TF_TEMPORARIES.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry)
            elif _TF_TEMPORARIES.match(entry.name):
                entry.unlink()

def write_training_record(out, record):
    """Write ``record`` to ``out/training.json`` atomically (sorted keys, indented)."""
    write_file(Path(out) / "training.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def previous_seconds(options):
    """``seconds_total`` of the training.json in the folder being resumed (0 if none)."""
    options = as_config(options)
    if not options.checkpoint or options.restore != "all":
        return 0.0
    try:
        path = Path(options.checkpoint) / "training.json"
        total = float(json.loads(path.read_text(encoding="utf-8"))["seconds_total"])
    except (OSError, ValueError, TypeError, KeyError):
        return 0.0
    return total if math.isfinite(total) and total >= 0 else 0.0


def check_inference_output(options):
    """Refuse a test/export ``output_dir`` that is a training run's folder.

    Raises
    ------
    ValueError
        If ``output_dir`` is the ``checkpoint`` folder or holds checkpoints:
        the outputs would overwrite that run's options.json.
    """
    options = as_config(options)
    out, checkpoint = Path(options.output_dir), options.checkpoint
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is an existing file, expected a folder")
    if same_path(out, checkpoint) or _holds_checkpoints(out):
        what = (f"the --checkpoint folder {checkpoint}" if same_path(out, checkpoint)
                else "a training run's folder (it holds checkpoints)")
        raise ValueError(f"--output_dir {out} is {what}: --mode {options.mode or 'test'} "
                         "would overwrite its options.json; choose another --output_dir")


def paths_of(options, zarr=False):
    """What a translate.py command reads and what it creates or replaces, keyed by flag.

    For :func:`neuron3d.io.check_outputs_apart`.  Train reads ``--input_dir``,
    ``--validation_dir`` and ``--checkpoint`` (unless it resumes the run in place) and
    writes ``--output_dir``; test reads ``--input_dir`` and ``--checkpoint`` and writes
    ``images/``, ``index.html`` and ``options.json`` in ``--output_dir`` (a ``.zarr``
    test writes the ``--output_dir`` store); export reads ``--checkpoint`` and writes
    ``saved_model/`` and ``options.json`` in ``--output_dir``.

    Returns
    -------
    (dict, dict)
        Inputs and outputs, flag (or description) -> path; None paths left out.
    """
    options = as_config(options)
    out = None if options.output_dir is None else Path(options.output_dir)
    inputs = {"--input_dir": options.input_dir, "--checkpoint": options.checkpoint}
    if options.mode == "train":
        inputs["--validation_dir"] = options.validation_dir
        if options.checkpoint is not None and out is not None and \
                same_path(options.checkpoint, out):
            del inputs["--checkpoint"]  # resuming the run in place
        outputs = {"--output_dir": out}
    elif options.mode == "export":
        del inputs["--input_dir"]
        outputs = {} if out is None else {
            "the saved_model/ of --output_dir": out / "saved_model",
            "the options.json of --output_dir": out / "options.json"}
    elif zarr:
        outputs = {"--output_dir": out}
    else:
        outputs = {} if out is None else {
            "the images/ of --output_dir": out / "images",
            "the index.html of --output_dir": out / "index.html",
            "the options.json of --output_dir": out / "options.json"}
    return ({k: v for k, v in inputs.items() if v is not None},
            {k: v for k, v in outputs.items() if v is not None})

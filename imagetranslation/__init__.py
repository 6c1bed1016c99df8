"""imagetranslation: a TensorFlow 2 / Keras 3 pix2pix trainer (Isola et al. 2017).

Reimplements the image-to-image translation trainer the thesis used
(imagetranslation-tensorflow, TF 1) with today's TensorFlow: ResNet and U-Net
generators, a PatchGAN discriminator, L1/L2 ("hinge"/"square") regression
losses and optional adversarial loss.  ``translate.py`` is the command line.

Modules: ``config`` (every option, declared once), ``trainer`` (train, test,
export) and its parts ``runtime``, ``losses``, ``model``, ``rundir``,
``checkpoints``, ``loop``, ``inference``; ``models`` (the networks), ``data``
(pairs and the training pipeline), ``tiled`` (prediction of zarr volumes).
"""

import contextlib as _contextlib
import os as _os
import re as _re
import sys as _sys
import tempfile as _tempfile

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) hides real messages.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_ABSL_BANNER = ("WARNING: All log messages before absl::InitializeLog() is called are written "
                "to STDERR")
_GLOG_LINE = _re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ \S+:\d+\] (.*)$")


def _is_noise(line, level):
    if line == _ABSL_BANNER:
        return True
    match = _GLOG_LINE.match(line)
    if not match:
        return False
    severity, text = match.groups()
    return ((severity == "I" and level >= 1) or (severity == "W" and level >= 2)
            or (severity == "E" and level >= 2 and "failed call to cuInit" in text))


@_contextlib.contextmanager
def quiet_tensorflow_start():
    """Hide TensorFlow's start-up log lines that ``TF_CPP_MIN_LOG_LEVEL`` should hide.

    TensorFlow 2.20+ writes INFO lines (oneDNN, CUDA stubs) and, without a GPU
    driver, a "failed call to cuInit" error to stderr while it loads, before
    its log level applies; a one-line error message then drowns in them.
    Within this context, file descriptor 2 goes to a temporary file; on exit
    every line that is not such chatter is written back to ``sys.stderr``.
    Use it around ``import tensorflow`` and the first device query only (the
    context delays all stderr output until it ends).
    """
    try:
        level = int(_os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    _sys.stderr.flush()
    saved = _os.dup(2)
    with _tempfile.TemporaryFile() as capture:
        _os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _sys.stderr.flush()
            _os.dup2(saved, 2)
            _os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines()
            kept = [line for line in lines if not _is_noise(line, level)]
            if kept:
                _sys.stderr.write("\n".join(kept) + "\n")
                _sys.stderr.flush()

"""Checks of translate.py's option values (kept for callers of the old module).

The schema and its checks live in :mod:`imagetranslation.config`; this module
re-exports the names it used to define.
"""

from __future__ import annotations

from .config import (  # noqa: F401
    AUGMENTATIONS,
    DEVICE_WORDS,
    GENERATORS,
    LR_DECAYS,
    MAX_BLUR_SIGMA,
    RESTORE,
    check_values,
    parse_augment,
    parse_devices,
)

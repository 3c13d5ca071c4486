"""What the person who starts the server decides: environment variables (`make app` passes its
variables through; README "Running the app for a group").

    RMT_LENS_CHECKPOINT_DIRS  folders the sidebar's local-checkpoint box may read, separated by
                              os.pathsep (default: the shipped checkpoints/ and the Hugging Face cache)
    RMT_LENS_ALLOW_PICKLE     1: the box offers to read pickled .bin/.pth weights (default 0: never)
    RMT_LENS_STORE_MB         memory kept for users' documents and last traces (default 2048 MiB)
    RMT_LENS_STORE_HOURS      how long a user's work is kept after its last use (default 24 h)
    RMT_LENS_WORKERS          traces running at once; the rest wait in a queue (default: CPUs // 2, at least 1)

A value that is not what its variable takes raises rmt_core.ConfigError naming it.
"""
from __future__ import annotations

import os
from pathlib import Path

from rmt_core.errors import ConfigError

CHECKPOINT_DIRS = "RMT_LENS_CHECKPOINT_DIRS"
ALLOW_PICKLE = "RMT_LENS_ALLOW_PICKLE"
STORE_MB = "RMT_LENS_STORE_MB"
STORE_HOURS = "RMT_LENS_STORE_HOURS"
WORKERS = "RMT_LENS_WORKERS"


def _number(name: str, default: float, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} is not a positive {'whole ' if integer else ''}number; "
                          "fix or unset it and start the app again.")
    return value


def store_bytes() -> int:
    """The memory (bytes) the run store may hold for users' work."""
    return int(_number(STORE_MB, 2048) * 2**20)


def store_seconds() -> float:
    """How long (s) a user's work is kept after it was last used."""
    return _number(STORE_HOURS, 24) * 3600


def workers() -> int:
    """How many traces run at once (the others queue)."""
    return int(_number(WORKERS, max(1, (os.cpu_count() or 2) // 2), integer=True))


def allow_pickle() -> bool:
    """Whether the server's operator allowed reading pickled weights from the app."""
    return os.environ.get(ALLOW_PICKLE, "").strip().lower() in ("1", "true", "yes", "on")


def default_checkpoint_dirs() -> list[Path]:
    """The shipped checkpoints folder and the local Hugging Face cache."""
    from rmt_core.io import hub
    from rmt_core.io.checkpoint import SHIPPED_DIR

    return [SHIPPED_DIR, hub.cache_dir()]


def checkpoint_dirs() -> list[Path]:
    """The folders (resolved) the app may read checkpoints from."""
    raw = os.environ.get(CHECKPOINT_DIRS, "").strip()
    folders = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()] if raw else default_checkpoint_dirs()
    return [f.resolve() for f in folders]

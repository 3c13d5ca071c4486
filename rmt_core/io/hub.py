"""Hugging Face Hub names ("org/name") resolved to local folders through huggingface_hub.

Offline by default: a name resolves from the local Hugging Face cache only. A download
happens only when the caller passes ``download=True`` and ``HF_HUB_OFFLINE`` is not set;
RMT Lens itself never asks for one (the app never downloads, at start or later).
The cache folder and the offline switch are read from the environment at each call
(``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``), so they can change while running.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError

# A repository id as the Hub spells it: "name" or "org/name" (letters, digits, - _ .).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files a checkpoint or a backbone needs; the rest of a repository (other frameworks' weights,
# images, training logs) is never fetched.
CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.pth", "*.pt", "*.txt", "*.model", "README.md")


def looks_like_repo_id(name: str) -> bool:
    """True for strings shaped like a Hub repository id ("gpt2", "org/name")."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in values)


def cache_dir() -> Path:
    """The Hugging Face hub cache folder as the environment says now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_repo(repo_id: str, download: bool = False, revision: str | None = None) -> Path:
    """The local snapshot folder of a Hub repository.

    download: fetch the repository's checkpoint files when it is not cached (never when
        HF_HUB_OFFLINE is set). Default False: the local cache only.
    Raises CheckpointError naming the cache looked in and how to fill it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    local_only = offline() or not download
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache_dir()), local_files_only=local_only,
            allow_patterns=list(CHECKPOINT_PATTERNS),
        )
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        why = "HF_HUB_OFFLINE is set" if offline() else "downloads are off (pass download=True to fetch it)"
        raise CheckpointError(
            f"'{repo_id}' is not a folder here and is not in the local Hugging Face cache ({cache_dir()}); "
            f"{why}. Download it first with `hf download {repo_id}`, or give a local folder."
        ) from exc
    except HFValidationError as exc:
        raise CheckpointError(f"'{repo_id}' is neither a folder nor a Hugging Face model name ({exc}).") from exc
    except Exception as exc:  # network and HTTP errors of every kind when downloading
        raise CheckpointError(f"'{repo_id}' could not be fetched from the Hugging Face Hub ({exc}).") from exc
    return Path(folder)

"""Exception types of RMT Lens: each names what is wrong and what to do about it."""
from __future__ import annotations


class RMTLensError(Exception):
    """Base class: every error RMT Lens raises on purpose derives from it."""


class ConfigError(RMTLensError, ValueError):
    """An RMT configuration is invalid or does not fit the backbone."""


class CheckpointError(RMTLensError):
    """A checkpoint folder is missing, incomplete, corrupt or does not fit its config."""


class TraceError(RMTLensError):
    """A trace cannot be made, saved, loaded or re-attached."""


class TraceCancelled(RMTLensError):
    """Raised inside a progress callback to stop a trace; the segments done are kept."""


class DocumentError(RMTLensError):
    """A document cannot be read as text."""


class QuestionError(RMTLensError, ValueError):
    """A question cannot be asked of this model (empty, not in its training form, too long)."""

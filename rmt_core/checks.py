"""Argument checks for public functions: each failure is an ArgumentError that names the
argument, what it may be and how to fix the call."""
from __future__ import annotations

import difflib
import numbers
from typing import Any, Sequence

import numpy as np

from .errors import ArgumentError


def _range_text(low: int | float | None, high: int | float | None) -> str:
    if low is not None and high is not None:
        return f"in {low}..{high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return "any value"


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None, fix: str = "",
              error: type[ArgumentError] = ArgumentError) -> int:
    """`value` as an int when it is a whole number (not a bool) with low <= value <= high.

    Raises `error` (an ArgumentError) naming `name`, the allowed range and `fix`."""
    whole = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not whole or (low is not None and value < low) or (high is not None and value > high):
        bound = _range_text(low, high) if low is not None or high is not None else ""
        kind = f"{bound} (an integer)" if whole else f"an integer {bound}".rstrip()
        raise error(f"{name} must be {kind}, got {value!r}." + (f" {fix}" if fix else ""))
    return int(value)


def check_float(value: Any, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, fix: str = "") -> float:
    """`value` as a float when it is a finite real number in [low, high] (low excluded if low_open)."""
    real = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, bool)
    ok = real and np.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) <= high
    if not ok:
        bound = (f"> {low}" if low_open else f">= {low}") if low is not None else ""
        if high is not None:
            bound = f"{bound} and <= {high}" if bound else f"<= {high}"
        raise ArgumentError(f"{name} must be a finite number{' ' + bound if bound else ''}, got {value!r}."
                            + (f" {fix}" if fix else ""))
    return float(value)


def check_choice(value: Any, name: str, choices: Sequence[str], fix: str = "") -> str:
    """`value` when it is one of `choices`; otherwise ArgumentError listing them (and the closest one)."""
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ArgumentError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}.{hint}"
                        + (f" {fix}" if fix else ""))


def check_token_id(value: Any, name: str, vocab_size: int) -> int:
    """A token id of a vocabulary of `vocab_size` entries."""
    return check_int(value, name, 0, vocab_size - 1,
                     fix=f"Token ids index the model's vocabulary of {vocab_size} entries; encode a token with the "
                         "model's tokenizer to get its id.")


__all__ = ["check_choice", "check_float", "check_int", "check_token_id"]

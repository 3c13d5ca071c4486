"""Where models run: CUDA when present (bf16 there), then MPS, else the CPU."""
from __future__ import annotations

import torch

from ..errors import ArgumentError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one when None.

    Raises ArgumentError for a name that is not a device ("tpu") or a CUDA / MPS device this machine
    does not have (before, torch's own error surfaced later as an "unexpected error")."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ArgumentError(f"{device!r} is not a device: use cpu, cuda (or cuda:N) or mps.") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ArgumentError(f"device {device!r}: CUDA is not available on this machine; use cpu.")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ArgumentError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
        if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available()):
            raise ArgumentError(f"device {device!r}: MPS is not available on this machine; use cpu.")
        if chosen.type not in ("cpu", "cuda", "mps"):
            raise ArgumentError(f"device {device!r} is not supported: use cpu, cuda (or cuda:N) or mps.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA GPUs that support it; float32 elsewhere (CPU numerics stay exact)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32

"""Models bigger than one device: the backbone's layers spread over devices (or offloaded to
the CPU or disk) by Hugging Face accelerate; RMT memory stays on the first layer's device.

    model = rmt_core.load("big-rmt", device_map="auto")                        # every GPU, then CPU, then disk
    model = rmt_core.load("big-rmt", device_map={"transformer.wte": 0, ...})   # explicit, accelerate's format
    model = rmt_core.load("big-rmt", device_map="auto", max_memory={0: "20GiB", "cpu": "60GiB"},
                          offload_folder="offload/")
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .devices import default_dtype, pick_device
from ..errors import CheckpointError

AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
ACCELERATE_HINT = "pip install accelerate==1.15.0"


def dispatch(model, device_map: str | dict[str, Any], dtype: torch.dtype | None = None,
             max_memory: dict[int | str, int | str] | None = None,
             offload_folder: str | os.PathLike | None = None):
    """Place `model` (an RMTModel on the CPU) with accelerate and return it.

    device_map: "auto" / "balanced" / "balanced_low_0" / "sequential" (accelerate fills the GPUs
        in order, then the CPU, then disk, within max_memory), or an explicit map of backbone
        module names (as in model.backbone.named_modules(), e.g. "transformer.h.3") to a GPU
        index, "cpu" or "disk".
    dtype: None = bf16 when a GPU is there, else float32.
    offload_folder: where "disk" modules keep their weights (needed when any are on disk).

    The weights hash (a trace's model identity) is computed before the weights move. Raises
    CheckpointError for a map that misses modules, names unknown ones, sends modules to disk
    without offload_folder, or when accelerate is not installed.
    """
    try:
        from accelerate import dispatch_model, infer_auto_device_map
        from accelerate.utils import get_balanced_memory
    except ImportError as exc:
        raise CheckpointError(f"device_map needs Hugging Face accelerate ({ACCELERATE_HINT}).") from exc
    dtype = dtype or default_dtype(pick_device(None))
    model.to(dtype=dtype)
    model.weights_hash()  # cached: offloaded weights are not readable afterwards
    backbone = model.backbone
    no_split = list(getattr(backbone, "_no_split_modules", None) or [])
    if isinstance(device_map, str):
        if device_map not in AUTO_MAPS:
            raise CheckpointError(f"device_map={device_map!r} is not known: give one of {', '.join(AUTO_MAPS)} "
                                  "or a dict of module names to devices.")
        if device_map != "sequential":
            max_memory = get_balanced_memory(backbone, max_memory=max_memory, no_split_module_classes=no_split,
                                             dtype=dtype, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(backbone, max_memory=max_memory, no_split_module_classes=no_split,
                                           dtype=dtype)
    device_map = dict(device_map)
    if set(device_map.values()) <= {"disk"}:
        raise CheckpointError("Nothing fits on any device within max_memory (every module would go to disk): "
                              "raise max_memory or give an explicit device_map.")
    _check_map(backbone, device_map)
    if "disk" in device_map.values() and offload_folder is None:
        raise CheckpointError("The device map sends modules to disk: give offload_folder=... for their weights.")
    main = _main_device(device_map)
    try:
        dispatch_model(backbone, device_map=device_map, main_device=main, offload_dir=offload_folder)
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"accelerate could not place the model with this device map ({exc}).") from exc
    first = _execution_device(device_map, _module_name(backbone, backbone.get_input_embeddings()), main)
    for name, parameter in model.named_parameters():  # the memory type's own parameters (TokenMemory: initial_memory)
        if not name.startswith("backbone."):
            parameter.data = parameter.data.to(first)
    model.eval()
    return model


def _check_map(backbone: torch.nn.Module, device_map: dict[str, Any]) -> None:
    """Every parameter covered by exactly the map's prefixes; no unknown names."""
    modules = dict(backbone.named_modules())
    unknown = [name for name in device_map if name and name not in modules]
    if unknown:
        raise CheckpointError(f"device_map names modules this backbone does not have: {unknown[:5]}. "
                              f"Top-level modules: {[n for n in modules if n and '.' not in n]}.")
    uncovered = [name for name, _ in backbone.named_parameters()
                 if not any(key == "" or name == key or name.startswith(key + ".") for key in device_map)]
    if uncovered:
        raise CheckpointError(f"device_map leaves parameters without a device: {uncovered[:5]}"
                              + (f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else "") + ".")


def _main_device(device_map: dict[str, Any]) -> torch.device:
    """Where offloaded ("cpu"/"disk") modules execute: the first GPU in the map, else the CPU."""
    for value in device_map.values():
        if value not in ("cpu", "disk"):
            return torch.device(f"cuda:{value}" if isinstance(value, int) else value)
    return torch.device("cpu")


def _module_name(root: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, sub in root.named_modules() if sub is module)


def _execution_device(device_map: dict[str, Any], module_name: str, main: torch.device) -> torch.device:
    """Device that runs `module_name` (its own entry, or the longest prefix in the map)."""
    keys = [k for k in device_map if k == "" or module_name == k or module_name.startswith(k + ".")]
    value = device_map[max(keys, key=len)]
    if value in ("cpu", "disk"):
        return main
    return torch.device(f"cuda:{value}" if isinstance(value, int) else value)

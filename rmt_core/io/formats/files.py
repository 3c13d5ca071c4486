"""Finding and reading the weight files of a checkpoint folder (or one weights file).

Layouts, in the order a folder is searched:
    model.safetensors                                        accelerate / transformers, one file
    model.safetensors.index.json + model-0000k-of-0000n.safetensors   the same, sharded
    pytorch_model.bin                                        pickled (torch.save), one file
    pytorch_model.bin.index.json + pytorch_model-0000k-of-0000n.bin   pickled, sharded
    one *.pth / *.pt file                                    a training dict (model_state_dict,
                                                             optimizer state, metrics) or a state dict
Pickled files are read only behind trust_pickle=True, and then with
torch.load(weights_only=True): tensors, plain containers and numpy scalars only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import CheckpointArgumentError, CheckpointError, CheckpointNeed

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
TRAINING_DICT_SUFFIXES = (".pth", ".pt")
PICKLE_SUFFIXES = (".bin", *TRAINING_DICT_SUFFIXES, ".pckl", ".pkl")
# Keys under which training scripts store the model's state dict in a checkpoint dict.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
TRUST = CheckpointNeed("trust_pickle", "the opt-in to read a pickled file", "trust_pickle=True", "--trust-pickle",
                       "the pickle tick box")
TRUST_HINT = TRUST.hint  # "trust_pickle=True (command line: --trust-pickle; in the app: the pickle tick box)"


@dataclass
class WeightFiles:
    """Where a checkpoint's tensors are: one file or the shards an index names."""

    layout: str  # "safetensors", "safetensors-sharded", "pickle", "pickle-sharded", "training-dict"
    files: list[Path]
    index: Path | None = None  # the sharded layouts' index file
    missing: list[str] = field(default_factory=list)  # shards the index names that are not there

    @property
    def pickled(self) -> bool:
        return not self.layout.startswith("safetensors")

    @property
    def source(self) -> Path:
        """The file to name in messages: the index, else the weights file."""
        return self.index or self.files[0]

    def describe(self) -> str:
        names = {
            "safetensors": "safetensors weights",
            "safetensors-sharded": f"sharded safetensors weights ({len(self.files)} shards)",
            "pickle": "pickled PyTorch weights",
            "pickle-sharded": f"sharded pickled PyTorch weights ({len(self.files)} shards)",
            "training-dict": "a pickled PyTorch training checkpoint",
        }
        return f"{names[self.layout]} ({self.source.name})"


def _sharded(index: Path, layout: str) -> WeightFiles:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index} is not a valid shard index ({exc}). Re-copy the checkpoint.") from exc
    if not shards or not all(isinstance(s, str) and "/" not in s and "\\" not in s for s in shards):
        raise CheckpointError(f"{index} names no usable shard files. Re-copy the checkpoint.")
    files = [index.parent / s for s in shards]
    missing = [f.name for f in files if not f.is_file()]
    return WeightFiles(layout, files, index=index, missing=missing)


def find_weights(path: Path) -> WeightFiles | None:
    """The weights of a folder (see the module doc for the order) or of one file; None if there are none."""
    if path.is_file():
        if path.name.endswith(".index.json"):
            return _sharded(path, "safetensors-sharded" if ".safetensors" in path.name else "pickle-sharded")
        if path.suffix == ".safetensors":
            return WeightFiles("safetensors", [path])
        if path.suffix in TRAINING_DICT_SUFFIXES:
            return WeightFiles("training-dict", [path])
        if path.suffix in PICKLE_SUFFIXES:
            return WeightFiles("pickle", [path])
        return None
    if (path / SAFETENSORS).is_file():
        return WeightFiles("safetensors", [path / SAFETENSORS])
    if (path / SAFETENSORS_INDEX).is_file():
        return _sharded(path / SAFETENSORS_INDEX, "safetensors-sharded")
    if (path / PICKLE).is_file():
        return WeightFiles("pickle", [path / PICKLE])
    if (path / PICKLE_INDEX).is_file():
        return _sharded(path / PICKLE_INDEX, "pickle-sharded")
    dicts = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TRAINING_DICT_SUFFIXES)
    if len(dicts) == 1:
        return WeightFiles("training-dict", dicts)
    if len(dicts) > 1:
        raise CheckpointError(
            f"{path} holds several training checkpoints ({', '.join(p.name for p in dicts)}): "
            "give the path of the one to load."
        )
    return None


def _check_complete(weights: WeightFiles) -> None:
    if weights.missing:
        raise CheckpointError(
            f"{weights.index} names {len(weights.files)} shard files but {len(weights.missing)} are missing "
            f"({', '.join(weights.missing[:3])}{' ...' if len(weights.missing) > 3 else ''}): the copy is incomplete. "
            "Copy every shard beside the index."
        )


def tensor_shapes(weights: WeightFiles) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape read from safetensors headers only (no tensor data); None for pickled files."""
    if weights.pickled:
        return None
    from safetensors import SafetensorError, safe_open

    _check_complete(weights)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weights.files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{file} is truncated or corrupt ({exc}). Re-copy or re-download the checkpoint."
            ) from exc
    return shapes


def read_tensors(weights: WeightFiles, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by name (shards merged; a training dict's model state dict).

    Raises CheckpointError for a pickled file without trust_pickle, a missing shard, a
    truncated file, or a pickle holding anything but tensors, containers and numpy scalars.
    """
    _check_complete(weights)
    if weights.pickled and not trust_pickle:
        problem = f"{weights.source} is {weights.describe()}: a pickled file can run code when loaded."
        raise CheckpointArgumentError(
            f"{problem} Load it only if you trust its source, with {TRUST_HINT}; it is then read with "
            "torch.load(weights_only=True), which admits tensors and plain values only.", problem=problem,
            needs=(TRUST,))
    tensors: dict[str, torch.Tensor] = {}
    for file in weights.files:
        part = _read_safetensors(file) if not weights.pickled else _read_pickle(file)
        tensors.update(part)
    return tensors


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{file} is truncated or corrupt ({exc}). Re-copy or re-download the checkpoint.") from exc


def _numpy_scalar_globals() -> list:
    """numpy scalar and dtype constructors for torch's weights_only unpickler (training metrics use them)."""
    import numpy as np
    from numpy._core.multiarray import scalar

    dtypes = [getattr(np.dtypes, name) for name in np.dtypes.__all__
              if name.endswith("DType") and name not in ("ObjectDType", "VoidDType")]
    # Files written with numpy 1.x name the scalar constructor by its old module path.
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _read_pickle(file: Path) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler refuses anything but plain data, in many ways
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{file} could not be read as plain tensors: it holds objects other than tensors, containers and "
            f"numpy scalars, or is truncated ({first}). It is not loaded."
        ) from exc
    if isinstance(payload, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"{file} holds no state dict (found {type(payload).__name__}).")
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(payload):
        other = sorted(str(k) for k, v in payload.items() if not isinstance(v, torch.Tensor))
        raise CheckpointError(
            f"{file} is a dict with entries that are not tensors ({other[:5]}) and no "
            f"{' / '.join(STATE_DICT_KEYS)} entry: it is not a model state dict."
        )
    return tensors

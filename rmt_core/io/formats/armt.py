"""The authors' ARMT (RodkinIvan/associative-recurrent-memory-transformer, modeling_amt/): its
state dicts read into RMT Lens's names (memory="associative", rmt_core/engine/memory/associative.py).

Two layouts (Rodkin et al. 2024, arXiv 2407.04841; the code's two wrappers):
    AssociativeRecurrentWrapper   "<p>memory_cell.memory" (M, d); every backbone block wrapped as
        "<p>memory_cell.model.<layers>.{i}.layer.*" with "<p>memory_cell.model.<layers>.{i}.W_mq /
        W_mk / W_mv / W_mb" beside it; the framework_accel / experimental cells also register the
        blocks as "<p>memory_cell.layers.{i}.*" (a duplicate of every block: a .bin keeps it,
        accelerate's model.safetensors drops it and a tied lm_head). No config file.
    ARMTForCausalLM (modeling_amt/model.py)   the same under "armt.", with a config.json of
        model_type "armt" (num_mem_tokens, d_mem, segment_size, n_heads, use_denom, gating,
        correction, wrap_pos, layers_attr, base_model_config or base_model_name, ...).

What the weights show: M and d (memory), d_mem (W_mq), heads (W_mb: 1 x d one head, h x d h heads,
d x d gating, which hides the heads), wrap_pos (GPT-2's wpe with n_positions + M rows). What the
wrapper's files do not store: the segment size and the backbone's config (asked for by name, as
for the authors' RMT), and the maths switches no tensor shows: `normalize_features` (the
experimental branch L2-normalises the DPFP features, framework_accel does not), `correction`,
`use_denom`. Their defaults are the framework_accel maths of the published GPT-2 BABILong
checkpoints, except where only the experimental code could have written the file (heads or
gating in the weights; every ARMTForCausalLM, whose code normalises) — and they are stated
(ArmtReading.assumed), never silently chosen. Variants RMT Lens does not run are refused by
name: ACT ("act." modules), the sink token ("memory_cell.sink"), and, from an ARMTForCausalLM
config, act_on, sliding_window, attend_to_previous_input, use_sink, a segment alignment other
than left.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ...engine.memory.associative import OPTIONS
from ...errors import CheckpointArgumentError, CheckpointError, CheckpointNeed
from .detect import memory_keys

MODEL_TYPE = "armt"  # ARMTForCausalLM's config
PARTS = ("W_mq.weight", "W_mk.weight", "W_mv.weight", "W_mb.weight", "W_mb.bias")
NU = 3  # DPFP order: fixed in both branches of their code
FA_MATHS = {"normalize_features": False, "correction": True, "use_denom": True}
EXP_MATHS = {"normalize_features": True, "correction": True, "use_denom": True}
SHOWN = tuple(name for name, option in OPTIONS.items() if option.by_weights)  # d_mem, n_heads, gating, wrap_pos
N_HEADS = CheckpointNeed("memory_options.n_heads", "the number of heads, which gating hides (W_mb is d x d)",
                         "rmt_config={'memory_options': {'n_heads': H}}", "--memory-option n_heads=H", "the n_heads box")
N_HEADS_HINT = N_HEADS.hint
REFUSED_CONFIG = {  # ARMTForCausalLM config field -> the variant it switches on
    "act_on": "adaptive computation time (ACT)",
    "sliding_window": "the sliding-window attention over the previous segment",
    "attend_to_previous_input": "attention to the previous segment's input",
    "use_sink": "a sink token",
}
_LAYER_KEY = re.compile(r"^(?P<attr>.+)\.(?P<i>\d+)\.(?P<part>W_m[qkvb])\.(weight|bias)$")


@dataclass
class ArmtLayout:
    """What an ARMT state dict's tensor names and shapes show (no tensor data needed).

    prefix: what precedes "memory_cell." ("", "armt.", "module.").
    layers_attr: the backbone's block list ("transformer.h", "model.layers", "gpt_neox.layers").
    n_heads: None where gating hides it (W_mb is d x d for any number of heads).
    wpe_rows: rows of GPT-2's position table (wrap_pos adds num_mem_tokens), None without one.
    """

    prefix: str
    layers_attr: str
    n_layers: int
    num_mem_tokens: int
    d_model: int
    d_mem: int
    n_heads: int | None
    gating: bool
    duplicates: bool
    wpe_rows: int | None

    @property
    def written_by_experimental(self) -> bool:
        """Heads or gating: only the experimental (and later) code has them."""
        return self.gating or (self.n_heads or 1) > 1

    def describe(self) -> str:
        heads = "gating (per-channel write strength)" if self.gating else f"{self.n_heads} head(s)"
        return (f"{self.num_mem_tokens} memory tokens, {self.n_layers} layers with associative memory "
                f"(d_mem {self.d_mem}, {heads})")


@dataclass
class ArmtReading:
    """The RMT settings of an ARMT checkpoint, and which of them were assumed.

    fields: RMTConfig fields (memory="associative", num_mem_tokens, segment_size, memory_options ...).
    assumed: the memory options neither the file nor the caller gave, and why those values
        ("normalize_features=False, ... (framework_accel maths, ...)"); "" when none.
    """

    fields: dict[str, Any]
    assumed: str = ""


def _refuse(source: object, variant: str, evidence: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: this ARMT uses {variant} ({evidence}). RMT Lens runs the plain ARMT (associative memory "
        "read into every layer, written from the memory tokens): not loaded."
    )


def read_layout(shapes: Mapping[str, Sequence[int]], source: object) -> ArmtLayout:
    """The layout of an ARMT state dict from its names and shapes (a safetensors header is enough).

    Raises CheckpointError naming a refused variant (ACT, sink token), tensors the ARMT's memory
    cell does not have, or per-layer shapes that contradict each other.
    """
    keys = memory_keys(shapes)
    if len(keys) != 1:
        raise CheckpointError(f"{source}: expected one memory_cell.memory tensor (the ARMT's memory tokens), "
                              f"found {keys or 'none'}.")
    prefix = keys[0][: -len("memory_cell.memory")]
    cell = prefix + "memory_cell."
    memory = tuple(shapes[keys[0]])
    if len(memory) != 2:
        raise CheckpointError(f"{source}: memory_cell.memory has shape {memory}; the ARMT's memory is (M, d).")
    outside = sorted(k for k in shapes if not k.startswith(cell))
    if outside:
        raise CheckpointError(f"{source}: tensors outside the ARMT's memory cell ({', '.join(outside[:3])}): "
                              "not a state dict their AssociativeRecurrentWrapper or ARMTForCausalLM writes.")
    if cell + "sink" in shapes:
        raise _refuse(source, "a sink token", f"'{cell}sink'")
    if any(k.startswith(cell + "act.") for k in shapes):
        raise _refuse(source, "adaptive computation time over the whole model (ACT, act_type='model')",
                      f"'{cell}act.*'")
    model = cell + "model."
    attrs = {m["attr"] for k in shapes if k.startswith(model) and (m := _LAYER_KEY.match(k[len(model):]))}
    if len(attrs) != 1:
        raise CheckpointError(f"{source}: the W_mq / W_mk / W_mv / W_mb projections sit under "
                              f"{sorted(attrs) or 'no block list'}; an ARMT wraps exactly one list of blocks.")
    attr = attrs.pop()
    blocks = model + attr + "."
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if key.startswith(blocks) and (rest := key[len(blocks):]).split(".")[0].isdigit():
            index, _, sub = rest.partition(".")
            if sub.startswith("act."):
                raise _refuse(source, "adaptive computation time (ACT) in every layer", f"'{key}'")
            if not sub.startswith("layer."):
                if sub not in PARTS:
                    raise CheckpointError(f"{source}: '{key}' is not part of an ARMT layer (the block under "
                                          "'.layer.' and W_mq / W_mk / W_mv / W_mb): not loaded.")
                layers.setdefault(int(index), {})[sub] = tuple(shape)
        elif key.startswith(cell) and not key.startswith((model, cell + "layers.")) and key != keys[0]:
            raise CheckpointError(f"{source}: '{key}' is not part of the ARMT's memory cell: not loaded.")
    n_layers = len(layers)
    if sorted(layers) != list(range(n_layers)):
        raise CheckpointError(f"{source}: associative projections for layers {sorted(layers)}: some layers lack them.")
    m, d = memory
    first = layers[0]
    missing = [f"{attr}.{i}.{p}" for i in range(n_layers) for p in PARTS if p not in layers[i]]
    if missing:
        raise CheckpointError(f"{source}: the ARMT layer tensors {missing[:3]} are missing: the copy is incomplete.")
    d_mem = first["W_mq.weight"][0]
    k = first["W_mb.weight"][0]
    expected = {"W_mq.weight": (d_mem, d), "W_mk.weight": (d_mem, d), "W_mv.weight": (d, d),
                "W_mb.weight": (k, d), "W_mb.bias": (k,)}
    for i in range(n_layers):
        for part, shape in expected.items():
            if layers[i][part] != shape:
                raise CheckpointError(f"{source}: '{blocks}{i}.{part}' has shape {layers[i][part]}, but the memory "
                                      f"(M={m}, d={d}) and layer 0 imply {shape}: the weights contradict each other.")
    gating = k == d and d > 1
    n_heads = None if gating else k
    if n_heads is not None and (d_mem % n_heads or d % n_heads):
        raise CheckpointError(f"{source}: W_mb has {n_heads} rows (heads) that divide neither d_mem={d_mem} nor "
                              f"d={d}: not an ARMT their code builds.")
    duplicates = any(key.startswith(cell + "layers.") for key in shapes)
    wpe = shapes.get(model + "transformer.wpe.weight")
    return ArmtLayout(prefix, attr, n_layers, m, d, d_mem, n_heads, gating, duplicates,
                      None if wpe is None else int(wpe[0]))


def rmt_lens_tensors(state: Mapping[str, torch.Tensor], layout: ArmtLayout,
                     source: object) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the ARMT's own tensors in RMT Lens's names, the backbone's state dict).

    RMT Lens names: "memory_tokens" (M, d) and "associative_layers.{i}.W_mq.weight" ...; the
    backbone's keys lose the wrapper's ".layer." level. The memory_cell.layers.* duplicates must
    equal the tensors they duplicate (CheckpointError otherwise: which copy their code used is
    not knowable); a duplicate without its original stands in for it.
    """
    cell = layout.prefix + "memory_cell."
    model, duplicates = cell + "model.", cell + "layers."
    blocks = layout.layers_attr + "."
    own = {"memory_tokens": state[cell + "memory"]}
    backbone: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(duplicates):
            original = model + blocks + key[len(duplicates):]
            if original in state:
                if state[original].shape != tensor.shape or not torch.equal(state[original], tensor):
                    raise CheckpointError(f"{source}: '{key}' differs from '{original}', which it duplicates: "
                                          "the file is not one their code wrote. Not loaded.")
                continue
            key = original
        if not key.startswith(model):
            continue
        rest = key[len(model):]
        if rest.startswith(blocks) and rest[len(blocks):].split(".")[0].isdigit():
            index, _, sub = rest[len(blocks):].partition(".")
            if sub in PARTS:
                own[f"associative_layers.{index}.{sub}"] = tensor
                continue
            rest = f"{blocks}{index}.{sub[len('layer.'):]}"
        backbone[rest] = tensor
    return own, backbone


def wrap_pos_from_weights(layout: ArmtLayout, backbone_config: Mapping[str, Any], source: object) -> bool:
    """wrap_pos read off GPT-2's position table: n_positions rows (no) or n_positions + M rows (yes).

    Raises CheckpointError for any other row count (the backbone config does not belong here).
    """
    if layout.wpe_rows is None:
        return False
    n_positions = backbone_config.get("n_positions", backbone_config.get("max_position_embeddings"))
    if not isinstance(n_positions, int) or layout.wpe_rows == n_positions:
        return False
    if layout.wpe_rows == n_positions + layout.num_mem_tokens:
        return True
    raise CheckpointError(
        f"{source}: wpe has {layout.wpe_rows} rows; the backbone config's n_positions {n_positions} allows "
        f"{n_positions} (wrap_pos off) or {n_positions + layout.num_mem_tokens} (wrap_pos: one row per memory "
        "token). The backbone config does not belong to these weights."
    )


def causal_lm_config(config: Mapping[str, Any] | None, source: object) -> dict[str, Any] | None:
    """An ARMTForCausalLM config.json's settings (None when the config is not model_type "armt").

    Returns {"rmt": stored RMT fields, "memory_options": stored options, "backbone": the backbone's
    config dict or None, "base_model_name": str or None, "layers_attr": str or None}. Raises
    CheckpointError naming a refused variant (act_on, sliding_window, attend_to_previous_input,
    use_sink, segment_alignment other than left).
    """
    if not config or config.get("model_type") != MODEL_TYPE:
        return None
    for name, variant in REFUSED_CONFIG.items():
        if config.get(name):
            raise _refuse(source, variant, f"{name}={config[name]!r} in config.json")
    if config.get("segment_alignment", "left") not in ("left", None):
        raise _refuse(source, f"segments aligned {config['segment_alignment']!r}",
                      "segment_alignment in config.json; RMT Lens splits left-aligned")
    rmt = {k: config[k] for k in ("num_mem_tokens", "segment_size") if isinstance(config.get(k), int)}
    options = {k: config[k] for k in ("d_mem", "n_heads", "gating", "use_denom", "correction", "wrap_pos")
               if k in config}
    backbone = config.get("base_model_config")
    if backbone is not None and not (isinstance(backbone, dict) and "model_type" in backbone):
        raise CheckpointError(f"{source}: base_model_config is not a backbone config with a model_type.")
    return {"rmt": rmt, "memory_options": options, "backbone": dict(backbone) if backbone else None,
            "base_model_name": config.get("base_model_name"), "layers_attr": config.get("layers_attr")}


def shown_options(layout: ArmtLayout, backbone_config: Mapping[str, Any] | None, source: object) -> dict[str, Any]:
    """The memory options the weights decide (SHOWN): d_mem, gating, n_heads (unless gating hides it) and,
    given the backbone's config, wrap_pos (wrap_pos_from_weights)."""
    shown: dict[str, Any] = {"d_mem": layout.d_mem, "gating": layout.gating}
    if backbone_config is not None:
        shown["wrap_pos"] = wrap_pos_from_weights(layout, backbone_config, source)
    if layout.n_heads is not None:
        shown["n_heads"] = layout.n_heads
    return shown


def check_against_weights(shown: Mapping[str, Any], options: Mapping[str, Any], source: object, given: bool) -> None:
    """Refuse memory options that contradict what the weights show (shown_options): the caller's
    (given=True: CheckpointArgumentError, argument "memory_options") or an ARMTForCausalLM config's
    (given=False: CheckpointError, the file contradicts itself)."""
    where = "rmt_config's memory_options" if given else "config.json"
    for name in SHOWN:
        if name in options and name in shown and options[name] != shown[name]:
            message = (f"{source}: {where} says {name}={options[name]!r} but the weights show "
                       f"{name}={shown[name]!r}. Leave {name} out: it is read from the weights.")
            if not given:
                raise CheckpointError(message)
            raise CheckpointArgumentError(
                message, argument="memory_options", option=name, value=options[name],
                problem=f"the weights show {name}={shown[name]!r}: leave {name} out, it is read from the weights.")


def rmt_fields(layout: ArmtLayout, explicit: Mapping[str, Any], stored: Mapping[str, Any] | None,
               backbone_config: Mapping[str, Any], source: object) -> ArmtReading:
    """The RMTConfig fields of an ARMT checkpoint: the weights first, then an ARMTForCausalLM config
    (`stored`, from causal_lm_config), then the caller (explicit fields; memory_options merged).

    Raises CheckpointError where the caller or the config contradicts the weights, where the
    segment size or (with gating) the number of heads is nowhere, or for another memory type.
    """
    from .authors import SEGMENT_SIZE, SEGMENT_SIZE_HINT

    causal_lm = stored is not None
    stored = stored or {"rmt": {}, "memory_options": {}, "layers_attr": None}
    if explicit.get("memory", "associative") != "associative":
        raise CheckpointArgumentError(
            f"{source}: rmt_config says memory={explicit['memory']!r}, but this is an ARMT checkpoint (associative "
            "memory). Leave memory out: it is read from the weights.", argument="memory", value=explicit["memory"],
            problem=f"this is an ARMT checkpoint (associative memory), not memory={explicit['memory']!r}: leave memory "
                    "out, it is read from the weights.")
    if stored.get("layers_attr") not in (None, layout.layers_attr):
        raise CheckpointError(f"{source}: config.json says layers_attr={stored['layers_attr']!r} but the weights "
                              f"wrap '{layout.layers_attr}'.")
    shown = shown_options(layout, backbone_config, source)
    given = dict(explicit.get("memory_options") or {})
    check_against_weights(shown, stored["memory_options"], source, given=False)
    check_against_weights(shown, given, source, given=True)
    for where, fields in (("config.json", stored["rmt"]), ("rmt_config", explicit)):
        if fields.get("num_mem_tokens", layout.num_mem_tokens) != layout.num_mem_tokens:
            message = (f"{source}: {where} says num_mem_tokens={fields['num_mem_tokens']!r} but the weights hold "
                       f"{layout.num_mem_tokens} memory tokens (memory_cell.memory). Leave it out: it is read from the "
                       "weights.")
            if fields is stored["rmt"]:
                raise CheckpointError(message)
            raise CheckpointArgumentError(
                message, argument="num_mem_tokens", value=fields["num_mem_tokens"],
                problem=f"the weights hold {layout.num_mem_tokens} memory tokens: leave num_mem_tokens out, it is read "
                        "from the weights.")
    options = {"nu": NU, **shown}
    options.update({k: v for k, v in stored["memory_options"].items() if k not in shown})
    options.update({k: v for k, v in given.items() if k not in shown})
    if "n_heads" not in options:
        problem = f"{source} is an ARMT with gating (W_mb is d x d), which hides its number of heads."
        raise CheckpointArgumentError(f"{problem[:-1]}: pass {N_HEADS_HINT}.", problem=problem, needs=(N_HEADS,))
    defaults, assumed = default_maths(causal_lm, layout.written_by_experimental, options)
    options = {**defaults, **options}
    fields = {"reset_positions": True, **stored["rmt"],
              **{k: v for k, v in explicit.items() if k != "memory_options"},
              "memory": "associative", "num_mem_tokens": layout.num_mem_tokens, "memory_options": options}
    if "segment_size" not in fields:
        problem = (f"{source} is an ARMT ({layout.describe()}) whose files do not store the segment size it was "
                   "trained with.")
        raise CheckpointArgumentError(f"{problem[:-1]}: pass {SEGMENT_SIZE_HINT}.", problem=problem,
                                      needs=(SEGMENT_SIZE,))
    return ArmtReading(fields, assumed)


def default_maths(causal_lm: bool, experimental_features: bool,
                  options: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The maths switches no tensor shows, for those `options` (stored or given) leave out:
    (defaults, "name=value, ... (why)" or "" when none is assumed). causal_lm: an ARMTForCausalLM
    checkpoint; experimental_features: its weights have heads or gating (ArmtLayout.written_by_experimental).

    framework_accel's maths (no feature normalisation) for the AssociativeRecurrentWrapper's files,
    whose published GPT-2 BABILong checkpoints predate the experimental branch; experimental maths
    (normalised DPFP features) where only that code could have written the file: heads or gating in
    the weights, or an ARMTForCausalLM (its code normalises).
    """
    if causal_lm:
        maths, why = EXP_MATHS, "experimental-branch maths: ARMTForCausalLM's code normalises"
    elif experimental_features:
        maths, why = EXP_MATHS, "experimental-branch maths: only that code has heads or gating"
    else:
        maths, why = FA_MATHS, "framework_accel maths, that of the published GPT-2 BABILong checkpoints"
    defaults = {k: v for k, v in maths.items() if k not in options}
    note = f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())} ({why})" if defaults else ""
    return defaults, note

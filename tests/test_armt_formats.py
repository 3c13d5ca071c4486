"""The authors' ARMT checkpoints open in RMT Lens: every layout their tools write, what the files do
not store asked for by name, the variants RMT Lens does not run refused by name.

Weights are the fixtures their own code wrote (tests/fixtures/armt, scripts/make_armt_oracle.py:
their AssociativeRecurrentWrapper's state dict as accelerate saves it, and gpt2_fa's full state
dict with the memory_cell.layers.* duplicates); the other layouts (shards, a pickle, the
ARMTForCausalLM "armt." prefix with its config.json) are rewritten here from those tensors.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import rmt_core
from rmt_core import CheckpointError
from rmt_core.io.checkpoint import inspect_checkpoint
from rmt_core.io.formats.convert import convert_checkpoint

from test_formats import SEGMENT, authors_state, write_backbone_folder
from conftest import make_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "armt"
ORACLE = json.loads((FIXTURES / "oracle.json").read_text())
S = ORACLE["segment_size"]


def load_case(name: str, path: Path | None = None, **memory_options) -> rmt_core.RMTModel:
    """A fixture through the checkpoint loader, with what their files do not store."""
    rmt_config = {"segment_size": S, **({"memory_options": memory_options} if memory_options else {})}
    return rmt_core.load(str(path or FIXTURES / name), device="cpu", dtype=torch.float32, rmt_config=rmt_config,
                         backbone=str(FIXTURES / name / "backbone"))


def fixture_logits(model: rmt_core.RMTModel, name: str) -> torch.Tensor:
    """RMT Lens's logits for row 0 of the fixture's input (row 0 has no padding)."""
    ids = load_file(str(FIXTURES / name / "outputs.safetensors"))["input_ids"][:1]
    with torch.no_grad():
        return model(ids).logits


def their_logits(name: str) -> torch.Tensor:
    return load_file(str(FIXTURES / name / "outputs.safetensors"))["logits"][:1]


def copy_case(tmp_path: Path, name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A fresh folder with nothing in it, and the case's accelerate-saved tensors."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    return folder, load_file(str(FIXTURES / name / "model.safetensors"))


# ---------------------------------------------------------------------- layouts
def test_accelerate_file_and_full_state_dict_load_the_same_armt():
    with safe_open(str(FIXTURES / "gpt2_fa" / "full_state_dict.safetensors"), "pt") as handle:
        full_keys = set(handle.keys())
    assert any(k.startswith("memory_cell.layers.") for k in full_keys)  # their duplicates are in it
    assert "memory_cell.model.lm_head.weight" in full_keys  # and the tied lm_head
    accelerate = load_case("gpt2_fa")
    full = load_case("gpt2_fa", FIXTURES / "gpt2_fa" / "full_state_dict.safetensors")
    cfg = accelerate.config
    assert (cfg.memory, cfg.num_mem_tokens, cfg.segment_size) == ("associative", ORACLE["num_mem_tokens"], S)
    shown = {k: cfg.memory_options[k] for k in ("d_mem", "n_heads", "gating", "wrap_pos")}
    assert shown == {"d_mem": 4, "n_heads": 1, "gating": False, "wrap_pos": False}
    assert cfg.memory_options["normalize_features"] is False and cfg.memory_options["correction"] is True
    names = set(accelerate.state_dict())
    assert {"memory_tokens", "associative_layers.0.W_mq.weight", "associative_layers.1.W_mb.bias"} <= names
    for name, tensor in accelerate.state_dict().items():
        torch.testing.assert_close(full.state_dict()[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(fixture_logits(full, "gpt2_fa"), fixture_logits(accelerate, "gpt2_fa"), rtol=0, atol=0)


def test_a_duplicate_that_differs_from_its_original_is_refused(tmp_path):
    state = load_file(str(FIXTURES / "gpt2_fa" / "full_state_dict.safetensors"))
    state["memory_cell.layers.1.W_mv.weight"] = state["memory_cell.layers.1.W_mv.weight"] + 1.0
    folder = tmp_path / "edited"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="memory_cell.layers.1.W_mv.weight' differs from "
                                              "'memory_cell.model.transformer.h.1.W_mv.weight'"):
        load_case("gpt2_fa", folder)


def test_sharded_safetensors_and_pickles_behind_the_opt_in(tmp_path, monkeypatch):
    folder, state = copy_case(tmp_path / "sharded", "llama_fa")
    keys = sorted(state)
    weight_map = {}
    for k, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:]), start=1):
        name = f"model-0000{k}-of-00002.safetensors"
        save_file({key: state[key] for key in part}, str(folder / name))
        weight_map.update({key: name for key in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    reference = fixture_logits(load_case("llama_fa"), "llama_fa")
    torch.testing.assert_close(fixture_logits(load_case("llama_fa", folder), "llama_fa"), reference, rtol=0, atol=0)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    full = load_file(str(FIXTURES / "gpt2_fa" / "full_state_dict.safetensors"))
    torch.save(full, pickled / "pytorch_model.bin")
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without the opt-in"))
    with pytest.raises(CheckpointError, match="pickled.*trust_pickle=True \\(command line: --trust-pickle"):
        load_case("gpt2_fa", pickled)
    info = inspect_checkpoint(str(pickled))
    assert info.format == "pickled" and info.needs_pickle_opt_in
    monkeypatch.setattr(torch, "load", real_load)
    model = rmt_core.load(str(pickled), device="cpu", dtype=torch.float32, trust_pickle=True,
                          rmt_config={"segment_size": S}, backbone=str(FIXTURES / "gpt2_fa" / "backbone"))
    torch.testing.assert_close(fixture_logits(model, "gpt2_fa"), fixture_logits(load_case("gpt2_fa"), "gpt2_fa"),
                               rtol=0, atol=0)


def causal_lm_folder(tmp_path: Path, name: str, **config) -> Path:
    """The case as ARMTForCausalLM saves it: "armt." before every key, and its config.json."""
    folder, state = copy_case(tmp_path, name)
    save_file({f"armt.{k}": v for k, v in state.items()}, str(folder / "model.safetensors"))
    case = ORACLE["cases"][name]
    cell = case["cell"]
    stored = {
        "model_type": "armt", "architectures": ["ARMTForCausalLM"],
        "base_model_name": None,
        "base_model_config": json.loads((FIXTURES / name / "backbone" / "config.json").read_text()),
        "num_mem_tokens": cell["num_mem_tokens"], "d_mem": cell["d_mem"], "segment_size": S,
        "segment_alignment": "left", "sliding_window": False, "attend_to_previous_input": False, "use_sink": False,
        "layers_attr": case["layers_attr"], "wrap_pos": cell["wrap_pos"], "correction": cell["correction"],
        "n_heads": cell.get("n_heads", 1), "use_denom": cell.get("use_denom", True), "gating": cell.get("gating", False),
        "freeze_mem": False, "act_on": False, "max_hop": 4, "act_type": "associative", "time_penalty": 0.0,
    }
    (folder / "config.json").write_text(json.dumps({**stored, **config}))
    return folder


def test_armt_for_causal_lm_opens_from_its_config_alone(tmp_path):
    name = "llama_exp_heads_no_denom"  # experimental maths, 2 heads, no denominator: all read from config.json
    folder = causal_lm_folder(tmp_path, name)
    info = inspect_checkpoint(str(folder))
    assert info.format == "armt" and info.missing() == [] and info.num_mem_tokens == 4
    assert "ARMTForCausalLM" in info.describe()
    assert "assumed unless given in memory_options: normalize_features=True (experimental-branch maths: " \
        "ARMTForCausalLM's code normalises)" in info.describe()  # the rest is in its config.json
    model = rmt_core.load(str(folder), device="cpu", dtype=torch.float32)
    options = model.config.memory_options
    assert (options["n_heads"], options["use_denom"], options["normalize_features"]) == (2, False, True)
    assert model.config.segment_size == S
    assert (fixture_logits(model, name) - their_logits(name)).abs().max() <= 1e-4


@pytest.mark.parametrize("field, value, named", [
    ("act_on", True, "adaptive computation time \\(ACT\\) \\(act_on=True in config.json\\)"),
    ("sliding_window", True, "the sliding-window attention over the previous segment"),
    ("attend_to_previous_input", True, "attention to the previous segment's input"),
    ("use_sink", True, "a sink token"),
    ("segment_alignment", "right", "segments aligned 'right'"),
])
def test_armt_for_causal_lm_variants_are_refused_by_name(tmp_path, field, value, named):
    folder = causal_lm_folder(tmp_path, "gpt2_fa", **{field: value})
    with pytest.raises(CheckpointError, match=f"this ARMT uses {named}.*not loaded"):
        rmt_core.load(str(folder), device="cpu")


def test_armt_for_causal_lm_naming_only_its_base_model_asks_for_the_backbone(tmp_path):
    folder = causal_lm_folder(tmp_path, "gpt2_fa", base_model_config=None, base_model_name="openai-community/gpt2")
    info = inspect_checkpoint(str(folder))
    (need,) = info.missing()
    assert "the backbone's config" in need and "base_model_name 'openai-community/gpt2'" in need
    with pytest.raises(CheckpointError, match="--backbone NAME_OR_DIR.*base_model_name 'openai-community/gpt2'"):
        rmt_core.load(str(folder), device="cpu")
    model = rmt_core.load(str(folder), device="cpu", dtype=torch.float32, backbone=str(FIXTURES / "gpt2_fa" / "backbone"))
    assert model.config.memory_options["normalize_features"] is True  # ARMTForCausalLM: the code that normalises


# ---------------------------------------------------------------------- what the files do not store
def test_missing_segment_size_and_backbone_are_asked_for_by_name(tmp_path):
    with pytest.raises(CheckpointError) as err:
        rmt_core.load(str(FIXTURES / "gpt2_fa"), device="cpu")
    message = str(err.value)
    assert "the authors' ARMT" in message and "4 memory tokens" in message
    assert "the segment size it was trained with: rmt_config={'segment_size': N} (command line: --segment-size N" in message
    assert "the backbone's config: backbone='org/name'" in message
    with pytest.raises(CheckpointError, match="Loading it needs the segment size") as err:
        rmt_core.load(str(FIXTURES / "gpt2_fa"), device="cpu", backbone=str(FIXTURES / "gpt2_fa" / "backbone"))
    assert "backbone" not in str(err.value).split("Loading it needs")[1]


def test_inspect_states_the_maths_no_file_shows():
    fa = inspect_checkpoint(str(FIXTURES / "gpt2_fa"))
    assert fa.format == "armt" and fa.armt.d_mem == 4 and fa.armt.n_heads == 1 and not fa.armt.gating
    assert ("not stored, so assumed unless given in memory_options: normalize_features=False, correction=True, "
            "use_denom=True (framework_accel maths, that of the published GPT-2 BABILong checkpoints)") in fa.describe()
    assert fa.assumed({"memory_options": {"normalize_features": True, "correction": False}}) == (
        "use_denom=True (framework_accel maths, that of the published GPT-2 BABILong checkpoints)")
    assert fa.assumed({"memory_options": {"normalize_features": False, "correction": True, "use_denom": True}}) == ""
    exp = inspect_checkpoint(str(FIXTURES / "llama_exp_heads_no_denom"))
    assert exp.armt.n_heads == 2
    assert ("normalize_features=True, correction=True, use_denom=True (experimental-branch maths: only that code "
            "has heads or gating)") in exp.describe()  # this file was written with use_denom=False: no tensor says so

    explicit = load_case("gpt2_fa", normalize_features=True, correction=False)
    assert (explicit.config.memory_options["normalize_features"], explicit.config.memory_options["correction"]) == (
        True, False)


def test_gating_hides_the_heads_so_they_are_asked_for_by_name():
    info = inspect_checkpoint(str(FIXTURES / "gpt2_exp_heads_gating"))
    assert info.armt.gating and info.armt.n_heads is None
    assert any("the number of heads, which gating hides" in need for need in info.missing(rmt_config={"segment_size": S},
                                                                                         backbone="x"))
    with pytest.raises(CheckpointError, match="Loading it needs the number of heads, which gating hides \\(W_mb is d x "
                                              "d\\): rmt_config=\\{'memory_options': \\{'n_heads': H\\}\\}"):
        load_case("gpt2_exp_heads_gating")
    model = load_case("gpt2_exp_heads_gating", n_heads=2)
    assert (model.config.memory_options["gating"], model.config.memory_options["n_heads"]) == (True, 2)


def test_settings_that_contradict_the_weights_are_refused():
    with pytest.raises(CheckpointError, match="memory_options says d_mem=8 but the weights show d_mem=4"):
        load_case("gpt2_fa", d_mem=8)
    with pytest.raises(CheckpointError, match="memory_options says n_heads=2 but the weights show n_heads=1"):
        load_case("gpt2_fa", n_heads=2)
    with pytest.raises(CheckpointError, match="num_mem_tokens=5 but the weights hold 4 memory tokens"):
        rmt_core.load(str(FIXTURES / "gpt2_fa"), rmt_config={"segment_size": S, "num_mem_tokens": 5},
                      backbone=str(FIXTURES / "gpt2_fa" / "backbone"))
    with pytest.raises(CheckpointError, match="memory='tokens', but this is an ARMT"):
        rmt_core.load(str(FIXTURES / "gpt2_fa"), rmt_config={"segment_size": S, "memory": "tokens"},
                      backbone=str(FIXTURES / "gpt2_fa" / "backbone"))


def test_wrap_pos_is_read_from_the_position_table(tmp_path):
    model = load_case("gpt2_fa_wrap_pos")
    assert model.config.memory_options["wrap_pos"] is True
    folder, state = copy_case(tmp_path, "gpt2_fa_wrap_pos")
    key = "memory_cell.model.transformer.wpe.weight"
    state[key] = torch.cat([state[key], state[key][:1]])  # n_positions + M + 1 rows: no ARMT has that
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="wpe has 37 rows; the backbone config's n_positions 32 allows 32 "
                                              "\\(wrap_pos off\\) or 36"):
        load_case("gpt2_fa_wrap_pos", folder)


# ---------------------------------------------------------------------- refused by name / not mistaken
@pytest.mark.parametrize("variant", ["act_associative", "act_layer"])
def test_their_act_variants_are_refused_by_name(tmp_path, variant):
    shapes = json.loads((FIXTURES / "variants.json").read_text())[variant]  # names their experimental cell writes
    folder = tmp_path / variant
    folder.mkdir()
    save_file({k: torch.zeros(shape) for k, shape in shapes.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="this ARMT uses adaptive computation time \\(ACT\\) in every layer "
                                              "\\('memory_cell.model.transformer.h.\\d.act.p.(bias|weight)'\\)"):
        rmt_core.load(str(folder), rmt_config={"segment_size": S}, backbone=str(FIXTURES / "gpt2_fa" / "backbone"))


def test_sink_token_and_foreign_tensors_are_refused_by_name(tmp_path):
    folder, state = copy_case(tmp_path, "gpt2_fa")
    save_file({**state, "memory_cell.sink": torch.zeros(1, 32)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="this ARMT uses a sink token \\('memory_cell.sink'\\)"):
        inspect_checkpoint(str(folder))
    save_file({**state, "memory_cell.model.transformer.h.0.W_extra.weight": torch.zeros(2)},
              str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="'memory_cell.model.transformer.h.0.W_extra.weight' is not part of an ARMT"):
        load_case("gpt2_fa", folder)
    incomplete = {k: v for k, v in state.items() if k != "memory_cell.model.transformer.h.1.W_mb.bias"}
    save_file(incomplete, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="\\['transformer.h.1.W_mb.bias'\\] are missing"):
        load_case("gpt2_fa", folder)


def test_an_authors_rmt_still_loads_as_the_rmt(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    folder = tmp_path / "rmt"
    folder.mkdir()
    save_file(authors_state(model, drop_tied=True), str(folder / "model.safetensors"))
    backbone = write_backbone_folder(tmp_path / "bb", model, tokenizer=False)
    info = inspect_checkpoint(str(folder))
    assert info.format == "authors" and info.armt is None and "ARMT" not in info.describe()
    loaded = rmt_core.load(str(folder), device="cpu", rmt_config={"segment_size": SEGMENT}, backbone=str(backbone))
    assert loaded.config.memory == "tokens" and loaded.config.mask_mode == "causal"
    torch.testing.assert_close(loaded.initial_memory, model.initial_memory, rtol=0, atol=0)


def test_convert_writes_an_rmt_lens_folder_that_states_the_assumed_maths(tmp_path):
    out = tmp_path / "converted"
    result = convert_checkpoint(str(FIXTURES / "gpt2_fa"), out, rmt_config={"segment_size": S},
                                backbone=str(FIXTURES / "gpt2_fa" / "backbone"))
    assert result.max_abs_logit_diff == 0.0 and result.n_segments == 3
    card = (out / "README.md").read_text()
    assert "associative memory (ARMT)" in card and "assumed: normalize_features=False, correction=True, use_denom=True (framework_accel maths" in card
    reloaded = rmt_core.load(str(out), device="cpu", dtype=torch.float32)
    assert inspect_checkpoint(str(out)).format == "rmt-lens" and reloaded.config.memory == "associative"
    assert (fixture_logits(reloaded, "gpt2_fa") - their_logits("gpt2_fa")).abs().max() <= 1e-4
    shutil.rmtree(out)

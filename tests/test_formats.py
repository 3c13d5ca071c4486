"""Checkpoints written by other RMT code: the authors' RMT in every layout, refusals by name.

Every fixture is built here: a tiny random RMT Lens model, its tensors renamed the way the
authors' MemoryCell + RecurrentWrapper name them ("memory_cell.memory",
"memory_cell.model.<backbone>") and written the way their tools write them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import rmt_core
from rmt_core import CheckpointError, RMTConfig
from rmt_core.cli import main
from rmt_core.training.tokenizer import build_symbol_tokenizer

from conftest import VOCAB, make_model

SEGMENT = 6
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- fixture writers
def authors_state(model, prefix: str = "", drop_tied: bool = False, dtype: torch.dtype | None = None) -> dict:
    """The model's tensors under the authors' names (as RecurrentWrapper.state_dict() gives them)."""
    state = {f"{prefix}memory_cell.memory": model.initial_memory.detach().clone()}
    for name, tensor in model.backbone.state_dict().items():
        state[f"{prefix}memory_cell.model.{name}"] = tensor.detach().clone()
    if drop_tied and model.backbone.config.tie_word_embeddings:  # accelerate drops shared tensors
        state = {k: v for k, v in state.items() if not k.endswith("lm_head.weight")}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def write_backbone_folder(path: Path, model, tokenizer: bool = True) -> Path:
    """What --backbone points at: the backbone's config.json (and its tokenizer)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))
    if tokenizer:
        symbols = [f"w{i}" for i in range(VOCAB - 2)]
        build_symbol_tokenizer(symbols, ["<pad>"]).save_pretrained(str(path))
    return path


def _shards(state: dict) -> list[dict]:
    keys = sorted(state)
    return [{k: state[k] for k in keys[: len(keys) // 2]}, {k: state[k] for k in keys[len(keys) // 2:]}]


def write_layout(path: Path, model, layout: str, dtype: torch.dtype | None = None) -> Path:
    """An authors' checkpoint folder (or file, for "pth") with no config.json; returns what to load."""
    path.mkdir(parents=True, exist_ok=True)
    if layout == "bin":
        torch.save(authors_state(model, dtype=dtype), path / "pytorch_model.bin")
    elif layout == "safetensors":  # accelerate's save_model: tied lm_head dropped
        save_file(authors_state(model, drop_tied=True, dtype=dtype), str(path / "model.safetensors"))
    elif layout in ("safetensors-sharded", "bin-sharded"):
        state = authors_state(model, drop_tied=layout.startswith("safetensors"), dtype=dtype)
        weight_map = {}
        for k, shard in enumerate(_shards(state), start=1):
            name = (f"model-0000{k}-of-00002.safetensors" if layout.startswith("safetensors")
                    else f"pytorch_model-0000{k}-of-00002.bin")
            if layout.startswith("safetensors"):
                save_file(shard, str(path / name))
            else:
                torch.save(shard, path / name)
            weight_map.update({key: name for key in shard})
        index = "model.safetensors.index.json" if layout.startswith("safetensors") else "pytorch_model.bin.index.json"
        (path / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    elif layout == "pth":  # their older trainer: one training dict with optimizer state and numpy metrics
        payload = {
            "model_state_dict": authors_state(model, dtype=dtype),
            "optimizer_state_dict": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "metrics": {"loss": np.float64(1.25), "exact_match": np.float32(0.5), "n": np.int64(40)},
            "iteration": 40,
        }
        torch.save(payload, path / "model_best.pth")
        return path / "model_best.pth"
    else:
        raise ValueError(layout)
    return path


def logits(model, seed: int = 0, n: int = 2 * SEGMENT + 3) -> torch.Tensor:
    x = torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x).logits


def native_logits(model, tmp_path: Path, mask_mode: str) -> torch.Tensor:
    """Logits of the same weights saved and loaded in RMT Lens's own format with `mask_mode`."""
    folder = tmp_path / f"native-{mask_mode}"
    model.config.mask_mode = mask_mode
    try:
        rmt_core.save(model, str(folder))
    finally:
        model.config.mask_mode = "causal"
    return logits(rmt_core.load(str(folder), device="cpu"))


# ---------------------------------------------------------------------- every layout loads exactly
LAYOUTS = ["bin", "safetensors", "safetensors-sharded", "bin-sharded", "pth"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_authors_layout_matches_rmt_lens_in_both_mask_modes(tmp_path, backbone_kind, layout):
    model = make_model(backbone_kind, mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, layout)
    backbone = write_backbone_folder(tmp_path / "backbone", model)
    pickled = layout in ("bin", "bin-sharded", "pth")
    loaded = rmt_core.load(str(source), trust_pickle=pickled, backbone=str(backbone),
                           rmt_config={"segment_size": SEGMENT}, device="cpu")
    assert loaded.config.mask_mode == "causal"  # the authors' wrapper: the backbone's causal mask
    assert loaded.config.num_mem_tokens == 3 and loaded.config.segment_size == SEGMENT
    assert loaded.tokenizer is not None  # taken from the backbone folder
    causal = native_logits(model, tmp_path, "causal")
    torch.testing.assert_close(logits(loaded), causal, rtol=0, atol=1e-5)
    paper = rmt_core.load(str(source), trust_pickle=pickled, backbone=str(backbone),
                          rmt_config={"segment_size": SEGMENT, "mask_mode": "paper"}, device="cpu")
    torch.testing.assert_close(logits(paper), native_logits(model, tmp_path, "paper"), rtol=0, atol=1e-5)
    assert (logits(paper) - causal).abs().max() > 1e-2  # the mask really differs


def test_rmt_config_object_keeps_the_formats_mask_mode(tmp_path):
    """The reported bug: RMTConfig's default mask_mode="paper" silently replaced the authors' causal mask."""
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "safetensors")
    backbone = write_backbone_folder(tmp_path / "backbone", model)
    loaded = rmt_core.load(str(source), backbone=str(backbone),
                           rmt_config=RMTConfig(num_mem_tokens=3, segment_size=SEGMENT), device="cpu")
    assert loaded.config.mask_mode == "causal"
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-5)
    explicit = rmt_core.load(str(source), backbone=str(backbone),
                             rmt_config=RMTConfig(segment_size=SEGMENT, mask_mode="paper"), device="cpu")
    assert explicit.config.mask_mode == "paper"  # set by the caller: honoured
    with pytest.raises(CheckpointError, match="num_mem_tokens=4 but the weights hold 3"):
        rmt_core.load(str(source), backbone=str(backbone), rmt_config=RMTConfig(num_mem_tokens=4, segment_size=SEGMENT))


def test_rmt_config_records_the_fields_its_caller_set():
    cfg = RMTConfig(num_mem_tokens=4, segment_size=10)
    assert cfg.explicit_fields == {"num_mem_tokens", "segment_size"}
    assert cfg.explicit_dict() == {"num_mem_tokens": 4, "segment_size": 10}
    assert RMTConfig(4, 10, "causal").explicit_fields == {"num_mem_tokens", "segment_size", "mask_mode"}
    assert RMTConfig.from_dict({"num_mem_tokens": 4, "segment_size": 10, "bptt_depth": 2}).explicit_fields == {
        "num_mem_tokens", "segment_size", "bptt_depth"}
    assert cfg == RMTConfig(num_mem_tokens=4, segment_size=10, mask_mode="paper")  # equality ignores it


def test_backbone_config_json_in_the_folder_and_bf16_weights(tmp_path):
    model = make_model("llama", mask_mode="causal")  # grouped-query attention, tied embeddings
    source = write_layout(tmp_path / "authors", model, "safetensors", dtype=torch.bfloat16)
    (source / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))  # the hand-added config
    loaded = rmt_core.load(str(source), rmt_config={"segment_size": SEGMENT}, device="cpu")
    with torch.no_grad():  # the reference: the same weights rounded to bf16, in RMT Lens's format
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    torch.testing.assert_close(logits(loaded), native_logits(model, tmp_path, "causal"), rtol=0, atol=1e-5)


def test_untied_llama_keeps_its_own_lm_head(tmp_path):
    from rmt_core.engine.backbones import backbone_from_config, llama_config
    from rmt_core import RMTModel

    torch.manual_seed(1)
    cfg = llama_config(VOCAB, n_layer=2, hidden=32, n_head=4, n_kv_head=2)
    cfg.tie_word_embeddings = False
    model = RMTModel.from_backbone(backbone_from_config(cfg), RMTConfig(num_mem_tokens=2, segment_size=SEGMENT,
                                                                         mask_mode="causal")).eval()
    source = write_layout(tmp_path / "authors", model, "safetensors")
    loaded = rmt_core.load(str(source), backbone=str(write_backbone_folder(tmp_path / "bb", model, tokenizer=False)),
                           rmt_config={"segment_size": SEGMENT}, device="cpu")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-5)


def test_legacy_gpt2_buffers_and_wrapper_prefixes_are_ignored(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    state = authors_state(model, prefix="module.")  # DistributedDataParallel's prefix
    n = model.backbone.config.n_positions
    for i in range(model.backbone.config.n_layer):  # what transformers < 4.3x saved for GPT-2
        state[f"module.memory_cell.model.transformer.h.{i}.attn.bias"] = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
        state[f"module.memory_cell.model.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))
    loaded = rmt_core.load(str(folder), trust_pickle=True, rmt_config={"segment_size": SEGMENT}, device="cpu")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- what is missing is named
def test_missing_pieces_are_named_with_their_arguments(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "safetensors")
    with pytest.raises(CheckpointError) as err:
        rmt_core.load(str(source))
    message = str(err.value)
    assert "the authors' RMT" in message and "3 memory slots" in message
    assert "segment size" in message and "--segment-size" in message
    assert "backbone" in message and "--backbone" in message
    assert "trust_pickle" not in message  # safetensors need no opt-in
    with pytest.raises(CheckpointError, match="--backbone") as err:
        rmt_core.load(str(source), rmt_config={"segment_size": SEGMENT})
    assert "segment size" not in str(err.value)


def test_pickled_files_need_the_opt_in_first(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    for layout in ("bin", "bin-sharded", "pth"):
        source = write_layout(tmp_path / layout, model, layout)
        with pytest.raises(CheckpointError, match="trust_pickle=True.*--trust-pickle"):
            rmt_core.load(str(source), rmt_config={"segment_size": SEGMENT}, backbone=str(tmp_path))
    # Once trusted and read, the format is known and named with what is still missing.
    with pytest.raises(CheckpointError, match="the authors' RMT .*, 3 memory slots.*--segment-size"):
        rmt_core.load(str(tmp_path / "bin"), trust_pickle=True, backbone=str(tmp_path))
    lucid = tmp_path / "lucid.pt"
    torch.save({"token_emb.weight": torch.zeros(4, 2), "memory_tokens": torch.zeros(2, 2)}, lucid)
    with pytest.raises(CheckpointError, match="lucidrains"):  # refused by name, not asked for a segment size
        rmt_core.load(str(lucid), trust_pickle=True)


def test_pth_training_dict_in_a_folder_and_a_foreign_object_inside(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "run", model, "pth")
    backbone = write_backbone_folder(tmp_path / "bb", model, tokenizer=False)
    loaded = rmt_core.load(str(source.parent), trust_pickle=True, backbone=str(backbone),  # the folder finds it
                           rmt_config={"segment_size": SEGMENT}, device="cpu")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-5)
    torch.save({"model_state_dict": authors_state(model), "sampler": torch.Generator()}, source)
    with pytest.raises(CheckpointError, match="could not be read as plain tensors"):
        rmt_core.load(str(source), trust_pickle=True, backbone=str(backbone), rmt_config={"segment_size": SEGMENT})


def test_missing_shard_is_named(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "safetensors-sharded")
    (source / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="1 are missing \\(model-00002-of-00002.safetensors\\)"):
        rmt_core.load(str(source), rmt_config={"segment_size": SEGMENT}, backbone=str(tmp_path))


def test_wrap_pos_is_refused_by_name(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    state = authors_state(model, drop_tied=True)
    key = "memory_cell.model.transformer.wpe.weight"
    n, d = state[key].shape
    m = model.config.num_mem_tokens
    wrapped = torch.randn(n + 2 * m, d)
    wrapped[m:m + n] = state[key]  # the variant's layout: old rows moved down by m
    state[key] = wrapped
    folder = tmp_path / "wrap"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    backbone = write_backbone_folder(tmp_path / "bb", model, tokenizer=False)
    with pytest.raises(CheckpointError, match="wrap_pos.*n_positions \\+ 2m = 70 rows"):
        rmt_core.load(str(folder), backbone=str(backbone), rmt_config={"segment_size": SEGMENT})
    with pytest.raises(CheckpointError) as err:
        rmt_core.load(str(folder), backbone=str(backbone), rmt_config={"segment_size": SEGMENT})
    assert "would load it but compute the wrong positions" in str(err.value)  # no edit suggested


def _write_safetensors(folder: Path, tensors: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_lucidrains_is_refused_by_name(tmp_path):
    tensors = {"token_emb.weight": torch.zeros(VOCAB, 16), "read_memory_emb": torch.zeros(4, 16),
               "memory_tokens": torch.zeros(4, 16), "layers.0.0.norm.weight": torch.ones(16),
               "to_logits.1.weight": torch.zeros(VOCAB, 16)}
    folder = _write_safetensors(tmp_path / "lucid", {"transformer." + k: v for k, v in tensors.items()})
    with pytest.raises(CheckpointError, match="lucidrains recurrent-memory-transformer-pytorch state dict: "
                                              "not a Hugging Face backbone"):
        rmt_core.load(str(folder))
    assert "config.json" not in str(pytest.raises(CheckpointError, rmt_core.load, str(folder)).value)


def test_plain_backbone_and_unknown_state_dicts_are_named(tmp_path):
    model = make_model("gpt2")
    folder = _write_safetensors(tmp_path / "plain", {k: v.clone() for k, v in model.backbone.state_dict().items()
                                                     if k != "lm_head.weight"})
    (folder / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))
    with pytest.raises(CheckpointError, match="plain Hugging Face language model with no RMT memory"):
        rmt_core.load(str(folder))
    other = _write_safetensors(tmp_path / "other", {"encoder.w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="match no RMT format"):
        rmt_core.load(str(other))


def test_inspect_checkpoint_reads_no_pickle(tmp_path, monkeypatch):
    model = make_model("gpt2", mask_mode="causal")
    info = rmt_core.io.checkpoint.inspect_checkpoint(str(write_layout(tmp_path / "st", model, "safetensors")))
    assert (info.format, info.num_mem_tokens, info.needs_pickle_opt_in) == ("authors", 3, False)
    assert len(info.missing()) == 2 and info.missing(rmt_config={"segment_size": 6}, backbone="gpt2") == []
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("inspect must not unpickle"))
    info = rmt_core.io.checkpoint.inspect_checkpoint(str(write_layout(tmp_path / "bin", model, "bin-sharded")))
    assert info.format == "pickled" and info.needs_pickle_opt_in and "2 shards" in info.describe()
    assert rmt_core.io.checkpoint.inspect_checkpoint(str(make_saved(tmp_path, model))).format == "rmt-lens"


def make_saved(tmp_path: Path, model) -> Path:
    rmt_core.save(model, str(tmp_path / "native"))
    return tmp_path / "native"


# ---------------------------------------------------------------------- Hugging Face Hub names, offline
def _cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """A Hugging Face hub cache entry (refs/main -> snapshot folder) as huggingface_hub lays it out."""
    org, name = repo_id.split("/")
    root = cache / f"models--{org}--{name}"
    snapshot = root / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)
    for target, source in files.items():
        (snapshot / target).write_bytes(source.read_bytes())


def test_hub_names_resolve_from_the_local_cache_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = make_model("gpt2", mask_mode="causal")
    native = make_saved(tmp_path, model)
    _cache_repo(cache, "lab/rmt-native", {p.name: p for p in native.iterdir()})
    backbone = write_backbone_folder(tmp_path / "bb", model)
    _cache_repo(cache, "lab/tiny-gpt2", {p.name: p for p in backbone.iterdir()})
    authors = write_layout(tmp_path / "authors", model, "safetensors")
    _cache_repo(cache, "lab/rmt-authors", {"model.safetensors": authors / "model.safetensors"})

    loaded = rmt_core.load("lab/rmt-native", device="cpu")
    assert loaded.name == "lab/rmt-native"
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    authors_model = rmt_core.load("lab/rmt-authors", backbone="lab/tiny-gpt2", rmt_config={"segment_size": SEGMENT},
                                  device="cpu")
    torch.testing.assert_close(logits(authors_model), logits(model), rtol=0, atol=1e-5)
    assert authors_model.tokenizer is not None
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE is set"):
        rmt_core.load("lab/not-there", download=True)  # offline wins over download=True


# ---------------------------------------------------------------------- command line
def test_cli_convert_writes_a_native_folder_and_prints_the_difference(tmp_path, capsys):
    model = make_model("llama", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "bin")
    backbone = write_backbone_folder(tmp_path / "bb", model)
    out = tmp_path / "converted"
    code = main(["convert", str(source), "--out", str(out), "--trust-pickle", "--segment-size", str(SEGMENT),
                 "--backbone", str(backbone)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "max |logit difference| vs the source: 0 " in printed
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "Converted by RMT Lens" in card and "segment_size=6" in card and "`causal`" in card
    converted = rmt_core.load(str(out), device="cpu")
    assert converted.config.mask_mode == "causal" and converted.tokenizer is not None
    torch.testing.assert_close(logits(converted), native_logits(model, tmp_path, "causal"), rtol=0, atol=1e-5)
    assert main(["convert", str(source), "--out", str(out), "--trust-pickle", "--segment-size", "6",
                 "--backbone", str(backbone)]) == 1  # never overwrites
    assert "not an empty folder" in capsys.readouterr().err


def test_cli_trace_opens_an_authors_folder_with_the_flags(tmp_path, capsys):
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "safetensors")
    backbone = write_backbone_folder(tmp_path / "bb", model)
    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(f"w{i % 50}" for i in range(40)))
    code = main(["trace", str(doc), "--checkpoint", str(source), "--out", str(tmp_path / "doc.trace"),
                 "--segment-size", str(SEGMENT), "--backbone", str(backbone), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "doc.trace").is_file()


def test_every_loading_command_takes_the_load_flags():
    from rmt_core.cli import build_parser

    parser = build_parser()
    for argv in (["eval", "C"], ["trace", "F", "--checkpoint", "C", "--out", "T"], ["figures", "T", "--out", "D"],
                 ["report", "T", "--out", "R"], ["attribute", "T", "--checkpoint", "C", "--segment", "0"]):
        args = parser.parse_args(argv + ["--trust-pickle", "--segment-size", "8", "--backbone", "org/name"])
        assert (args.trust_pickle, args.segment_size, args.backbone) == (True, 8, "org/name")


def _run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rmt_core", *argv], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_bad_inputs_give_one_error_line(tmp_path):
    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "bin")
    runs = {
        "needs everything": _run_cli("convert", str(source), "--out", str(tmp_path / "o1"), cwd=tmp_path),
        "bad segment size": _run_cli("convert", str(source), "--out", str(tmp_path / "o2"), "--segment-size", "0",
                                     cwd=tmp_path),
        "unknown backbone": _run_cli("eval", str(source), "--trust-pickle", "--segment-size", "6", "--backbone",
                                     "nobody/nothing", cwd=tmp_path),
    }
    for name, run in runs.items():
        assert "Traceback" not in run.stderr, name
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        if name == "bad segment size":
            assert run.returncode == 2 and "expected a positive integer" in run.stderr
            continue
        code = 2 if name == "needs everything" else 1  # what the checkpoint needs is a usage error
        assert run.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (name, run.stderr)
    assert "--trust-pickle" in runs["needs everything"].stderr and "--segment-size" in runs["needs everything"].stderr
    assert "rmt_config" not in runs["needs everything"].stderr  # flags, not Python arguments
    assert "not in the local Hugging Face cache" in runs["unknown backbone"].stderr


# ---------------------------------------------------------------------- the app's local-folder box
@pytest.mark.slow
def test_app_asks_for_what_an_authors_folder_is_missing(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import settings, state
    from app.views.common import literal

    monkeypatch.setenv(settings.CHECKPOINT_DIRS, str(tmp_path))  # the operator allows this folder
    monkeypatch.setenv(settings.ALLOW_PICKLE, "1")  # and pickled weights (else no opt-in is offered)

    model = make_model("gpt2", mask_mode="causal")
    source = write_layout(tmp_path / "authors", model, "bin")
    backbone = write_backbone_folder(tmp_path / "bb", model)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=240)
    at.run()
    at.selectbox(key=state.CHECKPOINT).set_value("Local folder…").run()
    at.text_input(key=state.LOCAL_FOLDER).input(str(source)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(literal("pickled PyTorch weights (pytorch_model.bin)") in i.value for i in at.info), [i.value for i in at.info]
    assert any("can run code" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("Still needed" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not at.error  # nothing loaded, nothing failed: it asks
    at.number_input(key=state.LOCAL_SEGMENT_SIZE).set_value(SEGMENT).run()
    at.text_input(key=state.LOCAL_BACKBONE).input(str(backbone)).run()
    assert any(literal("Still needed: the opt-in") in c.value for c in at.caption), [c.value for c in at.caption] + [e.value for e in at.error]
    at.checkbox(key=state.LOCAL_TRUST_PICKLE).check().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Still needed" in c.value for c in at.caption)
    assert not any("Could not load" in e.value for e in at.error), [e.value for e in at.error]
    assert at.radio(key=state.SOURCE) is not None  # the document choice appears once a model is loaded
    facts = at.table[-1].value  # the sidebar's model facts: the authors' model with the settings given
    assert (facts["checkpoint"].iloc[0], facts["segment size"].iloc[0], facts["mask mode"].iloc[0]) == (
        "authors", str(SEGMENT), "causal")

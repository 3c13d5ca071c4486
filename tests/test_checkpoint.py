"""Saving and loading checkpoints, and every broken checkpoint's clear error."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

import rmt_core
from rmt_core import CheckpointError

from conftest import VOCAB, make_model


@pytest.fixture
def saved(tmp_path, backbone_kind):
    model = make_model(backbone_kind)
    path = tmp_path / "ckpt"
    rmt_core.save(model, str(path), card={"summary": "tiny test model", "data": "random"})
    return model, path


def test_save_load_gives_identical_logits(saved):
    model, path = saved
    loaded = rmt_core.load(str(path), device="cpu")
    x = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    assert loaded.config == model.config
    assert loaded.name == "ckpt"
    assert loaded.weights_hash() == model.weights_hash()
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert "3 slots" in (path / "README.md").read_text()


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint folder"):
        rmt_core.load(str(tmp_path / "nowhere"))


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        rmt_core.load(str(tmp_path))


def test_missing_weights(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights are missing"):
        rmt_core.load(str(path))


def test_truncated_weights(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        rmt_core.load(str(path))


def test_shape_mismatch_names_the_tensor(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["rmt"]["num_mem_tokens"] = 5
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'initial_memory' has shape"):
        rmt_core.load(str(path))


def test_unknown_and_missing_config_fields(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["rmt"]["memory_slots"] = 3
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Unknown RMT config field"):
        rmt_core.load(str(path))
    del config["rmt"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="lacks the field"):
        rmt_core.load(str(path))


def test_corrupt_config_json(saved):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        rmt_core.load(str(path))


def test_tokenizer_that_does_not_match_the_vocabulary(saved):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    _, path = saved
    vocab = {f"w{i}": i for i in range(VOCAB + 50)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(str(path))
    with pytest.raises(CheckpointError, match="different models"):
        rmt_core.load(str(path))


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _write_authors_checkpoint(path, model, payload_extra=None):
    path.mkdir()
    state = {"memory_cell.memory": model.initial_memory.detach().clone()}
    for name, tensor in model.backbone.state_dict().items():
        state[f"memory_cell.model.{name}"] = tensor.clone()
    if payload_extra is not None:
        state["evil"] = payload_extra
    torch.save(state, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))


def test_authors_format_needs_opt_in_and_loads_with_it(tmp_path, backbone_kind):
    model = make_model(backbone_kind, mask_mode="causal")
    path = tmp_path / "authors"
    _write_authors_checkpoint(path, model)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        rmt_core.load(str(path))
    loaded = rmt_core.load(str(path), trust_pickle=True, rmt_config={"segment_size": 6}, device="cpu")
    x = torch.randint(0, VOCAB, (1, 14))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_malicious_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_model()
    path = tmp_path / "evil"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(model.backbone.config.to_dict()))
    with open(path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"memory_cell.memory": _Boom()}, handle)
    with pytest.raises(CheckpointError):
        rmt_core.load(str(path))  # no opt-in: refused before reading
    with pytest.raises(CheckpointError, match="plain tensors"):
        rmt_core.load(str(path), trust_pickle=True, rmt_config={"segment_size": 6})
    assert not (tmp_path / "PWNED").exists()


def test_interrupted_copy_of_shipped_checkpoints_is_reported(tmp_path, saved):
    model, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / "config.json").write_text("[]")
    with pytest.raises(CheckpointError, match="JSON object"):
        rmt_core.load(str(copy))


def test_rmt_config_overrides_only_the_fields_set(saved):
    model, path = saved
    loaded = rmt_core.load(str(path), rmt_config=rmt_core.RMTConfig(segment_size=4), device="cpu")
    assert loaded.config.segment_size == 4  # set: overrides the stored 6
    assert loaded.config.num_mem_tokens == model.config.num_mem_tokens  # not set: the stored value, not the default 8
    assert loaded.config.mask_mode == model.config.mask_mode
    with pytest.raises(CheckpointError, match="Unknown RMT config field"):
        rmt_core.load(str(path), rmt_config={"segment_lenght": 4})


def test_a_weights_file_path_and_a_folder_without_weights(tmp_path, saved):
    _, path = saved
    assert rmt_core.load(str(path / "model.safetensors"), device="cpu").name == "ckpt"  # the file's folder
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="not an RMT Lens config .* no weights"):
        rmt_core.load(str(tmp_path / "hf"))

"""Shared fixtures: tiny random backbones built from configs (nothing downloaded)."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("RMT_TEST_THREADS", "1")))

from rmt_core import RMTConfig, RMTModel  # noqa: E402
from rmt_core.engine.backbones import backbone_from_config, gpt2_config, llama_config  # noqa: E402

VOCAB = 97


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def make_model(kind: str = "gpt2", impl: str = "sdpa", seed: int = 0, **rmt_fields) -> RMTModel:
    """A tiny random RMT with float64-free, deterministic weights."""
    torch.manual_seed(seed)
    fields = dict(num_mem_tokens=3, segment_size=6, attn_implementation=impl)
    fields.update(rmt_fields)
    cfg = gpt2_config(VOCAB, n_layer=2, n_embd=32, n_head=4, n_positions=64) if kind == "gpt2" else llama_config(
        VOCAB, n_layer=2, hidden=32, n_head=4, n_kv_head=2)
    model = RMTModel.from_backbone(backbone_from_config(cfg, attn_implementation=impl), RMTConfig(**fields))
    return model.eval()


@pytest.fixture(params=["gpt2", "llama"])
def backbone_kind(request) -> str:
    return request.param


@pytest.fixture(params=["sdpa", "eager"])
def attn_impl(request) -> str:
    return request.param


def traced(model: RMTModel, n_tokens: int, seed: int = 0, changed: int | None = None, **trace_options):
    """rmt_core.trace of `n_tokens` random token ids (numpy generator `seed`); changed: a position whose
    id is moved by one (one "fact" changed). trace_options go to rmt_core.trace (e.g. carry_memory)."""
    import numpy as np

    import rmt_core

    ids = np.random.default_rng(seed).integers(0, VOCAB, n_tokens)
    if changed is not None:
        ids[changed] = (ids[changed] + 1) % VOCAB
    return rmt_core.trace(model, ids, **trace_options)

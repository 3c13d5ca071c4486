"""GPU checks (skipped without CUDA): the engine, traces and attribution run on the device."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
import rmt_core.corpus
from rmt_core import attribution

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def models():
    cpu = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    gpu = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)  # CUDA picked automatically, bf16 there
    return cpu, gpu


def test_default_device_is_cuda_in_bf16(models):
    _, gpu = models
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16


def test_trace_on_gpu_matches_cpu(models):
    cpu, gpu = models
    text = rmt_core.corpus.load_corpus("heldout")[:20_000]
    a, b = cpu.trace(text), gpu.trace(text)
    assert a.num_segments == b.num_segments
    assert isinstance(b.segments[0].memory_out, np.ndarray)  # records live on the host
    losses_a, losses_b = a.losses(), b.losses()
    assert np.abs(losses_a - losses_b).max() < 0.1  # bf16 vs float32
    assert b.attention(1).shape == a.attention(1).shape


def test_forward_backward_on_gpu(models):
    _, gpu = models
    ids = torch.randint(0, gpu.vocab_size, (4, 256), device="cuda")
    out = gpu(ids, labels=ids)
    out.loss.backward()
    assert gpu.initial_memory.grad is not None and torch.isfinite(gpu.initial_memory.grad.float()).all()
    gpu.zero_grad(set_to_none=True)


def test_attribution_on_gpu(models):
    _, gpu = models
    trace = gpu.trace(rmt_core.corpus.load_corpus("heldout")[:3000])
    result = attribution.read_slots(trace, 2, 5, n_steps=16)
    assert np.isfinite(result.scores).all()

"""GPU checks (skipped without CUDA): the engine, traces and attribution run on the device.

bf16 on CUDA vs float32 on the CPU, tolerances (measured with bf16 on the CPU over the same
20,000 characters, 177 segments: memory cosine >= 0.99987, relative L2 <= 0.016; token
log-probs mean |diff| 0.014 nats, p99 0.057, max 0.14; segment losses 0.014; top-1 agreement
0.98), about 3-5x margin:
  memory written by every segment: cosine >= 0.999 per slot, relative L2 <= 0.05;
  token log-probs: mean |diff| <= 0.05 nats, 99th percentile <= 0.2, max <= 0.75;
  segment losses: |diff| <= 0.05 nats; top-1 predictions agree on >= 95% of tokens.
test_bf16_tolerances_on_the_cpu runs the same check with bf16 on the CPU (slow, no GPU needed).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
import rmt_core.training.corpus
from rmt_core.explain import attribution

gpu = pytest.mark.gpu


def assert_close_traces(ref, low) -> None:
    """low (bf16) against ref (float32): the tolerances of the module docstring."""
    assert low.num_segments == ref.num_segments
    a, b = ref.memory_states().astype(np.float64), low.memory_states().astype(np.float64)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    rel = np.linalg.norm(a - b, axis=-1) / np.linalg.norm(a, axis=-1)
    assert cos.min() >= 0.999 and rel.max() <= 0.05, (cos.min(), rel.max())
    la = np.concatenate([s.token_logprob for s in ref.segments])[1:]
    lb = np.concatenate([s.token_logprob for s in low.segments])[1:]
    diff = np.abs(la - lb)
    assert diff.mean() <= 0.05 and np.quantile(diff, 0.99) <= 0.2 and diff.max() <= 0.75, (diff.mean(), diff.max())
    assert np.abs(ref.losses() - low.losses()).max() <= 0.05
    top_a = np.concatenate([s.topk_ids[:, 0] for s in ref.segments])
    top_b = np.concatenate([s.topk_ids[:, 0] for s in low.segments])
    assert np.mean(top_a == top_b) >= 0.95


@pytest.mark.slow
def test_bf16_tolerances_on_the_cpu():
    text = rmt_core.training.corpus.load_corpus("heldout")[:20_000]
    ref = rmt_core.trace(rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu"), text)
    low = rmt_core.trace(rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu", dtype=torch.bfloat16), text)
    assert_close_traces(ref, low)


@pytest.fixture(scope="module")
def models():
    cpu = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    gpu = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)  # CUDA picked automatically, bf16 there
    return cpu, gpu


@gpu
def test_default_device_is_cuda_in_bf16(models):
    _, gpu = models
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16


@gpu
def test_trace_on_gpu_matches_cpu(models):
    cpu, gpu = models
    text = rmt_core.training.corpus.load_corpus("heldout")[:20_000]
    a, b = rmt_core.trace(cpu, text), rmt_core.trace(gpu, text)
    assert isinstance(b.segments[0].memory_out, np.ndarray)  # records live on the host
    assert_close_traces(a, b)  # bf16 on CUDA vs float32 on the CPU
    assert b.attention(1).shape == a.attention(1).shape
    np.testing.assert_allclose(b.attention(1), a.attention(1), atol=0.02)  # attention weights in [0, 1]
    for x, y in zip(a.segments[:20], b.segments[:20]):  # summaries computed on the device
        assert np.abs(x.block_attention.astype(float) - y.block_attention.astype(float)).max() <= 0.02
        assert np.abs(x.write_to_tokens.astype(float) - y.write_to_tokens.astype(float)).max() <= 0.02


@gpu
def test_forward_backward_on_gpu(models):
    _, gpu = models
    ids = torch.randint(0, gpu.vocab_size, (4, 256), device="cuda")
    out = gpu(ids, labels=ids)
    out.loss.backward()
    assert gpu.initial_memory.grad is not None and torch.isfinite(gpu.initial_memory.grad.float()).all()
    gpu.zero_grad(set_to_none=True)


@gpu
def test_attribution_on_gpu(models):
    cpu, gpu = models
    text = rmt_core.training.corpus.load_corpus("heldout")[:3000]
    on_gpu, on_cpu = rmt_core.trace(gpu, text), rmt_core.trace(cpu, text)
    result = attribution.read_slots(on_gpu, 2, 5, n_steps=16)
    reference = attribution.read_slots(on_cpu, 2, 5, n_steps=16)
    assert np.isfinite(result.scores).all()
    # the same slots matter most (bf16 gradients: rank agreement, not equality)
    assert np.corrcoef(result.scores, reference.scores)[0, 1] >= 0.9
    write = attribution.write_slots(on_gpu, 1, n_steps=8)
    assert write.scores.shape == (gpu.config.num_mem_tokens, on_gpu.segments[1].num_tokens)
    assert np.isfinite(write.scores).all()
    through = attribution.through_memory(on_gpu, 3, 5, n_steps=8)
    assert np.isfinite(through.scores[slice(*through.window)]).all()  # NaN after segment 3: not unrolled


@gpu
def test_device_map_auto_on_gpu(models, tmp_path):
    cpu, _ = models
    placed = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device_map="auto", offload_folder=tmp_path)
    assert placed.device.type == "cuda"
    ids = torch.as_tensor(np.arange(200) % cpu.vocab_size).unsqueeze(0)
    with torch.no_grad():
        a = torch.log_softmax(cpu(ids).logits, -1)
        b = torch.log_softmax(placed(ids.to(placed.device)).logits.float(), -1).cpu()
    diff = (a - b).abs()[0, 1:].gather(-1, ids[0, 1:, None])  # at the next tokens, as the trace tolerances
    assert diff.mean() <= 0.05 and diff.max() <= 0.75

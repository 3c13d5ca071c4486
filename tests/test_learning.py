"""A tiny RMT learns to carry a token across segments; with memory reset it cannot."""
from __future__ import annotations

import torch

from conftest import make_model

N_KEYS = 8  # the key is one of 8 symbols: chance is 1/8


def toy_batch(batch: int, generator: torch.Generator, segment: int = 4, segments: int = 3):
    """Segment 1 starts with a key symbol; the rest is noise; the last token must emit the key."""
    total = segment * segments
    x = torch.randint(N_KEYS, 97, (batch, total), generator=generator)
    keys = torch.randint(0, N_KEYS, (batch,), generator=generator)
    x[:, 0] = keys
    x[:, -1] = keys  # the last position's label (predicted by the one before it)
    labels = torch.full_like(x, -100)
    labels[:, -1] = keys
    return x, labels, keys


def accuracy(model, generator, reset: bool) -> float:
    x, _, keys = toy_batch(512, generator)
    with torch.no_grad():
        pred = model(x, reset_memory=reset).logits[:, -2, :N_KEYS].argmax(-1)
    return float((pred == keys).float().mean())


def test_tiny_rmt_learns_to_carry_a_token_through_memory():
    torch.manual_seed(0)
    model = make_model("gpt2", num_mem_tokens=2, segment_size=4).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        x, labels, _ = toy_batch(32, generator)
        loss = model(x, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with_memory = accuracy(model, torch.Generator().manual_seed(1), reset=False)
    reset = accuracy(model, torch.Generator().manual_seed(1), reset=True)
    assert with_memory > 0.9, with_memory
    assert reset < 1 / N_KEYS + 0.07, reset  # no better than chance (0.125) within sampling noise

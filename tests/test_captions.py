"""Captions state what their figure's data shows: property tests on random data, and a change of
the data changes the caption."""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from rmt_core.viz import captions, paper


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", text)]


def test_the_churn_caption_matches_random_data():
    rng = np.random.default_rng(0)
    for _ in range(300):
        churn = rng.random(int(rng.integers(2, 40)))
        fact = int(rng.integers(0, len(churn)))
        text = captions.churn_caption(churn, fact)
        top = int(np.argmax(churn))
        if top == fact:
            assert f"The fact segment ({fact}) moves memory most ({churn[fact]:.2f})" in text and "present" in text
        else:
            assert f"Segment {top} moves memory most ({churn[top]:.2f})" in text
            assert f"the fact segment {fact} moves it {churn[fact]:.2f}" in text and "absent" in text
            rank = int(np.sum(churn > churn[fact])) + 1
            assert f"rank {rank} of {len(churn)}" in text


def test_the_keep_rewrite_caption_matches_random_data_and_the_figure_it_reads():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 30))
        keep, new = rng.random(n), rng.random(n)
        fact = int(rng.integers(0, n))
        text = captions.keep_rewrite_caption(keep, new, fact)
        assert f"ranges {new.min():.2f}-{new.max():.2f}" in text and f"highest in segment {int(np.argmax(new))}" in text
        assert f"write→tokens is {new[fact]:.2f}" in text
        assert ("as expected" in text) == (int(np.argmax(new)) == fact) != ("absent" in text)
    fig = go.Figure([go.Scatter(y=[0.1, 0.2, 0.1], name="write → read (keep)"),
                     go.Scatter(y=[0.74, 0.80, 0.76], name="write → tokens (write new)")])
    assert "absent" in paper.keep_rewrite_caption(fig, 2)
    fig.data[1].y = [0.74, 0.76, 0.90]  # the same figure, the fact segment now reads the tokens most
    assert "as expected" in paper.keep_rewrite_caption(fig, 2)


def test_the_write_attribution_caption_matches_random_data():
    rng = np.random.default_rng(2)
    for _ in range(200):
        scores = rng.normal(size=(4, 32))
        fact = np.arange(0) if rng.random() < 0.1 else np.arange(5, 5 + int(rng.integers(1, 10)))
        text = captions.write_attribution_caption(scores, fact, 3)
        positive = np.clip(scores, 0, None).sum(0)
        if fact.size:
            share = positive[fact].sum() / positive.sum()
            assert f"{100 * share:.0f}% of the positive write attribution" in text
            assert (": most of it" in text) == (share > 0.5)
            assert ("absent" in text) == (share <= len(fact) / 32)
        else:
            assert "not in segment 3" in text


def test_changing_the_data_changes_the_caption():
    churn = np.array([0.82, 0.05, 0.04, 0.03, 0.06, 0.02, 0.03, 0.07])  # the tour: segment 0 moves most
    before = captions.churn_caption(churn, 4)
    assert "Segment 0 moves memory most (0.82); the fact segment 4 moves it 0.06" in before and "absent" in before
    churn[4] = 0.9
    after = captions.churn_caption(churn, 4)
    assert after != before and "The fact segment (4) moves memory most (0.90)" in after and "present" in after
    sharp = captions.write_pattern_caption(0.9, 1.0, 0.3, 6)
    blurred = captions.write_pattern_caption(0.2, 0.4, 0.3, 6)
    assert "attends mostly to one source token" in sharp and "absent" in blurred and "one source token" not in blurred
    assert captions.read_slots_caption(np.array([0.1, -2.0, 0.5]), ["R0", "R1", "R2"]).startswith("Slot R1")


def test_the_state_size_caption_gives_the_growth_relative_to_where_it_started():
    """A 13-fold jump at the last segment reads as +1243%, not as a share of the final value (+93%)."""
    from rmt_core.viz.captions import state_size_caption

    norms = np.array([[100.0], *[[1460.0]] * 19, [19604.0]])
    text = state_size_caption(norms)
    assert "went from 1,460 to 19,604 (+1243%)" in text
    assert "largest change in one segment is in segment 20 (+18,144)" in text
    flat = state_size_caption(np.full((8, 2), 5.0))
    assert "(+0%): it has stopped growing." in flat

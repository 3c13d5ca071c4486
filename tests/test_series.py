"""Per-trace series (computed once per trace) and figures that stay small for long traces."""
from __future__ import annotations

import rmt_core
import numpy as np
import pytest

from rmt_core.explain import analysis, series
from rmt_core.viz import figures

from conftest import VOCAB, make_model


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(2).integers(0, VOCAB, 40)


def test_series_equal_the_analysis_functions_and_are_computed_once(model, ids):
    trace = rmt_core.trace(model, ids)
    states = trace.memory_states()
    assert np.array_equal(series.memory_states(trace), states)
    assert series.memory_states(trace) is series.memory_states(trace)
    np.testing.assert_array_equal(series.slot_churn(trace), analysis.slot_churn(states))
    np.testing.assert_array_equal(series.slot_norms(trace), analysis.slot_norms(states))
    np.testing.assert_array_equal(series.pca(trace, 3).coords, analysis.pca_trajectory(states, 3).coords)
    assert series.pca(trace, 2) is series.pca(trace, 2)
    np.testing.assert_array_equal(series.block_mass(trace, "write->tokens"), analysis.block_mass(trace, "write->tokens"))


def test_lens_hover_matches_the_per_segment_logit_lens(model, ids):
    trace = rmt_core.trace(model, ids)
    hover = series.lens_hover(trace, None)  # the last layer only: the full lens is not filled in
    assert all(s.lens_ids is None for s in trace.segments)
    assert len(hover) == trace.num_segments + 1 and hover[0] == [""] * 3
    analysis.logit_lens(trace, 2)
    assert [s.lens_ids is not None for s in trace.segments] == [i == 2 for i in range(trace.num_segments)]
    for index in range(trace.num_segments):
        lens = analysis.logit_lens(trace, index)[-1]
        assert hover[index + 1] == ["decodes to: " + ", ".join(repr(t) for t in tokens[:3]) for tokens in lens]


def test_a_growing_trace_gets_fresh_series(model, ids):
    stream = rmt_core.trace_iter(model, ids)
    next(stream)
    first = series.memory_states(stream.trace)
    for _ in stream:
        pass
    assert first.shape[0] == 2 and series.memory_states(stream.trace).shape[0] == stream.trace.num_segments + 1


def test_memory_trajectory_draws_at_most_max_steps():
    rng = np.random.default_rng(0)
    projection = analysis.pca_trajectory(rng.normal(size=(3001, 4, 8)), 2)
    hover = [[f"step {s} slot {k}" for k in range(4)] for s in range(3001)]
    fig = figures.memory_trajectory(projection, hover, max_steps=600)
    assert len(fig.data) == 8 and all(len(t.x) <= 600 for t in fig.data)  # 4 lines, then their start / end marks
    line = fig.data[1]
    assert list(fig.data[5].x) == [line.x[0], line.x[-1]] and list(fig.data[5].marker.symbol) == ["circle-open", "square"]
    assert line.x[0] == projection.coords[0, 1, 0] and line.x[-1] == projection.coords[-1, 1, 0]
    assert line.text[-1].startswith("slot 1, after segment 2999") and line.text[-1].endswith("step 3000 slot 1")
    assert "of 3001 steps drawn" in fig.layout.title.text
    small = figures.memory_trajectory(analysis.pca_trajectory(rng.normal(size=(9, 4, 8)), 2))
    assert len(small.data[0].x) == 9 and "drawn" not in small.layout.title.text
    assert small.data[0].mode == "lines+markers" and line.mode == "lines"  # 2400 points: no dots on the lines


def test_pca_trajectory_equals_the_svd_of_the_centred_states():
    rng = np.random.default_rng(3)
    for shape in ((50, 4, 8), (3, 2, 8)):  # many points; fewer points than dimensions
        states = rng.normal(size=shape) * np.linspace(3, 0.1, shape[-1])
        flat = states.reshape(-1, shape[-1])
        centred = flat - flat.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        proj = analysis.pca_trajectory(states, 3)
        signs = np.sign(np.sum(proj.components * vt[:3], axis=1))
        assert np.all(np.abs(signs) == 1)
        np.testing.assert_allclose(proj.components, vt[:3] * signs[:, None], atol=1e-9)
        np.testing.assert_allclose(proj.coords.reshape(-1, 3), centred @ (vt[:3] * signs[:, None]).T, atol=1e-9)
        np.testing.assert_allclose(proj.explained_variance_ratio, singular[:3] ** 2 / (singular**2).sum())
    single = analysis.pca_trajectory(rng.normal(size=(1, 1, 8)), 3)  # one point: nothing varies
    assert single.coords.shape == (1, 1, 3) and not single.coords.any() and not single.explained_variance_ratio.any()


def test_lens_hover_at_computes_only_the_steps_asked_for(model, ids, monkeypatch):
    trace = rmt_core.trace(model, ids)
    asked = []
    real = series._last_layer_lens
    monkeypatch.setattr(series, "_last_layer_lens", lambda t, idx, top: asked.append(list(idx)) or real(t, idx, top))
    part = series.lens_hover_at(trace, [5, 0, 2], None)
    assert asked == [[1, 4]] and sorted(part) == [0, 2, 5]  # step s = the memory written by segment s - 1
    full = series.lens_hover(trace, None)
    assert asked[1] == [i for i in range(trace.num_segments) if i not in (1, 4)]  # only the steps not done yet
    assert all(part[s] == full[s] for s in part) and part[0] == [""] * 3
    series.lens_hover_at(trace, [3, 7], None)
    assert len(asked) == 2  # kept with the trace
    with pytest.raises(IndexError):
        series.lens_hover_at(trace, [trace.num_segments + 1], None)


def test_memory_trajectory_window_draws_every_step_of_a_part():
    rng = np.random.default_rng(1)
    projection = analysis.pca_trajectory(rng.normal(size=(3001, 4, 8)), 2)
    coords = projection.coords
    shown = figures.trajectory_steps(3001, 600, (1000, 1400))
    assert shown.tolist() == list(range(1000, 1401))
    hover = {s: [f"step {s} slot {k}" for k in range(4)] for s in shown.tolist()}  # only the steps drawn
    fig = figures.memory_trajectory(projection, hover, max_steps=600, window=(1000, 1400))
    line = fig.data[2]
    assert len(line.x) == 401 and line.x[0] == coords[1000, 2, 0] and line.x[-1] == coords[1400, 2, 0]
    assert line.text[0] == "slot 2, after segment 999<br>step 1000 slot 2"
    ends = fig.data[4 + 2]  # slot 2's first and last drawn step
    assert list(ends.x) == [coords[1000, 2, 0], coords[1400, 2, 0]] and list(ends.text) == [line.text[0], line.text[-1]]
    assert list(ends.marker.symbol) == ["circle-open", "square"] and ends.legendgroup == line.legendgroup
    assert line.marker.size == 4 and ends.marker.size == 11 and ends.showlegend is False
    assert "steps 1000–1400" in fig.layout.title.text and "drawn" not in fig.layout.title.text
    assert fig.layout.annotations[0].text.startswith("○ start (step 1000) · ■ end (step 1400)")
    three = figures.memory_trajectory(analysis.pca_trajectory(rng.normal(size=(9, 4, 8)), 3), dims=3, window=(2, 6))
    assert len(three.data[0].z) == 5 and list(three.data[4].z) == [three.data[0].z[0], three.data[0].z[-1]]
    with pytest.raises(ValueError, match="not a range of steps"):
        figures.trajectory_steps(3001, 600, (5, 3001))


def test_standard_figures_are_built_one_at_a_time(model, ids):
    trace = rmt_core.trace(model, ids)
    builders = figures.standard_figure_builders(trace, 1, layer=0, head=1)
    every = figures.standard_figures(trace, 1, layer=0, head=1)
    assert list(builders) == list(every) and "attention" in builders
    for name in ("timeline", "attention", "memory_pca_3d", "write_to_tokens_attention"):
        assert builders[name]().to_json() == every[name].to_json()


def test_the_template_as_plotly_default_gives_the_same_figures():
    import json

    import plotly.io as pio

    weights = np.random.default_rng(4).random((10, 10))
    build = lambda: json.loads(figures.attention_heatmap(weights, [f"t{i}" for i in range(10)], 2, "x").to_json())  # noqa: E731
    before = build()
    old = pio.templates.default
    try:
        figures.use_template_by_default()
        after = build()
    finally:
        pio.templates.default = old
    assert after == before and after["layout"]["template"]["layout"]["plot_bgcolor"] == "white"


@pytest.mark.parametrize("selected", [None, 2])
def test_stacked_lines_are_the_figure_make_subplots_builds(selected):
    """The quick build (a layout made once per shape, no validation again) gives the same figure as
    make_subplots + add_trace + add_vline + update_layout, with the data as given (numpy arrays)."""
    import json

    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.subplots import make_subplots

    x = np.arange(5)
    rows = [("loss <b>", [{"x": x, "y": x * 1.5, "name": "one", "mode": "lines", "line": {"color": "#000000"}}]),
            ("mass", [{"x": x, "y": -x, "name": "two", "hovertemplate": "%{y}"},
                      {"x": x, "y": x ** 2.0, "name": "three", "showlegend": False}])]
    quick = figures.stacked_lines(rows, "Summary & <i>more</i>", height=300, x_title="segment", spacing=0.05,
                                  selected=selected, y_format=".3~g", layout={"showlegend": False})
    reference = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                              subplot_titles=["loss <b>", "mass"])
    for row, (_, lines) in enumerate(rows, start=1):
        for line in lines:
            reference.add_trace(go.Scatter(**line), row=row, col=1)
    if selected is not None:
        reference.add_vline(x=selected, line={"color": "#D55E00", "dash": "dash"})
    reference.update_xaxes(title_text="segment", row=2, col=1)
    reference.update_yaxes(tickformat=".3~g")
    reference.update_layout(showlegend=False)
    reference.update_layout(figures._layout("Summary & <i>more</i>", 300))
    reference.update_layout(template=figures.TEMPLATE)
    assert json.loads(pio.to_json(quick, validate=False)) == json.loads(pio.to_json(reference, validate=False))
    assert isinstance(quick.data[2].y, np.ndarray) and np.array_equal(quick.data[2].y, x ** 2.0)
    assert quick.layout.title.text == "Summary &amp; &lt;i&gt;more&lt;/i&gt;"  # plain text, escaped
    quick.update_layout(title_text="changed")  # a figure of its own: the next one is untouched
    assert figures.stacked_lines(rows, "T", 300, "segment", 0.05).layout.title.text == "T"

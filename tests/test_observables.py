"""One vocabulary: the observables table agrees with SegmentRecord, recorded traces, the trace file
and the README."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import rmt_core
from rmt_core.tracing import observables
from rmt_core.tracing.observables import (BY_NAME, OBSERVABLES, ON_DEMAND, PER_SEGMENT, PER_TOKEN, PER_TRACE,
                                          Observable)
from rmt_core.tracing.records import BLOCK_PAIRS, LENS_K, SegmentRecord

from conftest import VOCAB, make_model

README = Path(__file__).resolve().parents[1] / "README.md"
PLACE = ("index", "start", "end")  # where a segment lies: not an observable


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def trace(model):
    trace = rmt_core.trace(model, np.random.default_rng(1).integers(0, VOCAB, 16), top_k=4)  # 3 segments, last short
    trace.compute_lens(list(range(trace.num_segments)))
    return trace


def test_the_table_names_every_field_of_a_segment_record_and_nothing_else():
    fields = [f.name for f in dataclasses.fields(SegmentRecord) if f.name not in PLACE]
    assert sorted(observables.names(PER_TOKEN) + observables.names(PER_SEGMENT)) == sorted(fields)
    assert observables.names(PER_TRACE) == ("initial_memory",)
    assert len(BY_NAME) == len(OBSERVABLES)  # no name twice


def axis_sizes(trace, record) -> dict[str, int]:
    info = trace.model_info
    return {"token": record.num_tokens, "slot": trace.num_slots, "hidden": info["hidden_size"],
            "layer": info["num_layers"], "layer+1": info["num_layers"] + 1, "head": info["num_heads"],
            "top_k": trace.settings["top_k"], "lens_k": LENS_K, "block_pair": len(BLOCK_PAIRS), "span": 2,
            "memory_token": trace.num_mem_tokens}


def assert_as_the_table_says(trace):
    """Every observable a trace of this memory type records has the table's dtype and axes (named
    state / write arrays: the memory type's own axes); the others are None."""
    for observable in OBSERVABLES:
        owners = [trace] if observable.scope == PER_TRACE else trace.segments
        for owner in owners:
            value = getattr(owner, observable.name)
            if not observable.recorded_for(trace.memory_type):
                assert value is None, observable.name
                continue
            if observable.stored in (observables.ON_USE, ON_DEMAND) and value is None:  # not computed yet
                continue
            sizes = axis_sizes(trace, owner if owner is not trace else trace.segments[0])
            if observable.stored in (observables.STATE, observables.WRITES):  # named arrays of the memory type
                spec = {observables.STATE: trace.initial_state is not None and not trace.stores_writes,
                        observables.WRITES: trace.stores_writes}[observable.stored]
                if not spec:
                    assert value is None, observable.name
                    continue
                axes = trace.settings["state_write"] if observable.stored == observables.WRITES else None
                for name, array in value.items():
                    assert array.dtype == np.float32, (observable.name, name)
                    if axes is not None:
                        assert array.shape == tuple(sizes[a] for a in axes[name]), (observable.name, name)
                continue
            expected = tuple(sizes[axis] for axis in observable.axes)
            if observable.dtype == "str":
                assert isinstance(value, list) and all(isinstance(v, str) for v in value), observable.name
                assert (len(value),) == expected, observable.name
                continue
            value = np.asarray(value)
            assert value.dtype == np.dtype(observable.dtype), (observable.name, value.dtype)
            assert value.shape == expected, (observable.name, value.shape, expected)


def test_a_recorded_trace_has_the_table_s_dtypes_and_axes(trace):
    assert_as_the_table_says(trace)


def test_a_loaded_trace_has_the_table_s_dtypes_and_axes(trace, tmp_path):
    assert_as_the_table_says(rmt_core.Trace.load(trace.save(tmp_path / "t.rmtrace")))


def test_an_associative_trace_has_the_table_s_dtypes_and_axes(tmp_path):
    """The associative memory's own rows (and the slot rows, empty: m = 0), recorded and loaded."""
    model = make_model("gpt2", num_mem_tokens=2, segment_size=5, memory="associative", memory_options={"d_mem": 4})
    trace = rmt_core.trace(model, np.random.default_rng(2).integers(0, VOCAB, 13))
    assert_as_the_table_says(trace)
    trace.state_ranks()
    assert_as_the_table_says(trace)
    loaded = rmt_core.Trace.load(trace.save(tmp_path / "a.rmtrace"))
    assert_as_the_table_says(loaded)
    assert all(s.state_write is not None and s.state_out is None for s in loaded.segments)


def test_the_file_stores_each_observable_as_the_table_says(trace, tmp_path):
    from safetensors import safe_open

    path = trace.save(tmp_path / "t.rmtrace")
    with safe_open(str(path), framework="numpy") as handle:
        layout = json.loads(handle.metadata()["rmt_lens_trace"])["arrays"]
    encoding = {"exact": "exact", "on demand": "exact", "on use": "exact", "int8": "int8-vector-absmax",
                "uint8": "uint8-unit"}
    stored = {name: entry["encoding"] for name, entry in layout.items()
              if name != "bounds" and not name.endswith(".scale") and "." not in name}
    assert stored == {o.name: encoding[o.stored] for o in OBSERVABLES
                      if o.stored in encoding and o.recorded_for(trace.memory_type)
                      and (o.stored != "on use" or all(getattr(s, o.name) is not None for s in trace.segments))}
    for o in OBSERVABLES:  # per token: all tokens, token axis first; per segment: one per segment
        if o.scope == PER_TOKEN and o.name in layout:
            assert layout[o.name]["shape"][0] == trace.num_tokens and len(layout[o.name]["shape"]) == len(o.axes)
        elif o.scope == PER_SEGMENT and o.name in layout:
            assert layout[o.name]["shape"][0] == trace.num_segments and len(layout[o.name]["shape"]) == len(o.axes) + 1


def test_the_logit_lens_is_stored_when_computed_and_else_left_to_compute_on_demand(model, tmp_path):
    trace = rmt_core.trace(model, np.arange(10) % VOCAB)
    with_lens = rmt_core.Trace.load(trace.save(tmp_path / "a.rmtrace"))  # the model is attached: lens computed
    assert all(s.lens_ids is not None for s in with_lens.segments)
    for s in with_lens.segments[1:]:
        s.lens_ids = None  # as if only segment 0 had been looked at
    without = rmt_core.Trace.load(with_lens.save(tmp_path / "b.rmtrace"), model=model)  # saved without a model
    assert BY_NAME["lens_ids"].stored == ON_DEMAND and all(s.lens_ids is None for s in without.segments)
    assert without.lens_ids(1).shape == (model.num_layers + 1, 3, LENS_K)


def test_the_readme_shows_the_table_rendered_from_observables_py():
    assert observables.markdown() in README.read_text(encoding="utf-8"), (
        "README's table of observables differs from tracing/observables.py: paste observables.markdown() "
        "under 'Traces'")


def test_the_table_refuses_rows_that_break_its_own_rules():
    with pytest.raises(ValueError, match="token axis"):
        Observable("x", ("slot",), "float32", PER_TOKEN, "", "exact")
    with pytest.raises(ValueError, match="unknown axes"):
        Observable("x", ("pixels",), "float32", PER_SEGMENT, "", "exact")
    assert observables.block_pair_meaning("write->tokens") == "how much the write slots W_k attend to the segment's tokens"
    with pytest.raises(ValueError, match="pair must be one of"):
        observables.block_pair_meaning("read->write")

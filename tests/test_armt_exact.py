"""RMT Lens's associative memory is exactly the ARMT of the authors' own code.

The fixtures (tests/fixtures/armt, written once by scripts/make_armt_oracle.py) hold what their
unmodified modeling_amt/language_modeling.py (framework_accel and experimental branches, under
transformers 4.51.3) computed on tiny random GPT-2 and Llama backbones: their weights in their
key layout, a 2-row batch (row 1 left-padded), the logits, and their per-layer state (A = their
W_mem, z) after every segment. Each case is loaded THROUGH the checkpoint loader (the format is
part of what is tested) and run by RMT Lens; logits must agree within 1e-4 where
attention_mask == 1, and A and z within 1e-4 for every layer and segment.

Row 1: their code segments the padded row as it stands, so its segment boundaries move with its
pads (their batch row differs from the row alone by ~5 in logits, oracle.json); RMT Lens gives
each row the results it has alone, so row 1 is compared with their code run on it alone.

Negative controls (each must FAIL by a wide margin, so the comparison can tell): no gamma
correction, no read (W_mq zeroed: every read is exactly 0), and the feature normalisation of the
other branch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rmt_core

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "armt"
ORACLE = json.loads((FIXTURES / "oracle.json").read_text())
CASES = sorted(ORACLE["cases"])
S = ORACLE["segment_size"]
TOL = 1e-4
WIDE = 1e-2  # a negative control must miss by at least this (100x the tolerance)


def unseen_options(name: str) -> dict:
    """What no tensor shows, given by name as a user would: the branch's feature normalisation,
    correction, use_denom, and the heads where gating hides them. d_mem, heads, gating and
    wrap_pos are read from the weights by the loader."""
    case = ORACLE["cases"][name]
    cell = case["cell"]
    options = {"normalize_features": case["branch"] == "experimental", "correction": cell["correction"],
               "use_denom": cell.get("use_denom", True)}
    if cell.get("gating"):
        options["n_heads"] = cell["n_heads"]
    return options


def load_case(name: str, **memory_options) -> rmt_core.RMTModel:
    rmt_config = {"segment_size": S, "memory_options": {**unseen_options(name), **memory_options}}
    return rmt_core.load(str(FIXTURES / name), device="cpu", dtype=torch.float32, rmt_config=rmt_config,
                         backbone=str(FIXTURES / name / "backbone"))


def theirs(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name / "outputs.safetensors"))


def run(model: rmt_core.RMTModel, ids: torch.Tensor, mask: torch.Tensor | None = None):
    with torch.no_grad():
        return model(ids, attention_mask=mask)


def logit_error(model: rmt_core.RMTModel, name: str) -> float:
    """max |logit difference| vs their code at real tokens: row 0 of their batch, row 1 alone."""
    ref = theirs(name)
    out = run(model, ref["input_ids"], ref["attention_mask"])
    real = ref["attention_mask"][1].bool()
    return max(float((out.logits[0] - ref["logits"][0]).abs().max()),
               float((out.logits[1, real] - ref["alone.logits"][0]).abs().max()))


def state_errors(model: rmt_core.RMTModel, name: str) -> dict[str, float]:
    """max |difference| of A and of z vs their W_mem / z, over every layer and segment (row 0), and
    after the padded row's last segment (row 1, vs their code on it alone)."""
    ref = theirs(name)
    out = run(model, ref["input_ids"], ref["attention_mask"])
    errors = {"A": 0.0, "z": 0.0}
    n_alone = ORACLE["cases"][name]["n_segments"]["alone"]
    for row, prefix, segments in ((0, "", range(len(out.memory_out))), (1, "alone.", [n_alone - 1])):
        for segment in segments:
            arrays = model.memory.state_to_arrays(out.memory_out[segment], index=row)
            for layer in range(model.num_layers):
                for part in ("A", "z"):
                    key = f"{prefix}{part}.{layer}.{segment}"
                    if key not in ref:  # use_denom=False: their layer keeps no z
                        continue
                    expected = ref[key][0].numpy()
                    ours = np.asarray(arrays[part][layer]).reshape(expected.shape)
                    errors[part] = max(errors[part], float(np.abs(ours - expected).max()))
    return errors


@pytest.mark.parametrize("name", CASES)
def test_logits_match_their_code(name):
    model = load_case(name)
    assert ORACLE["cases"][name]["measured"]["reads_change_logits_by"] > 1.0  # the reads matter in this fixture
    error = logit_error(model, name)
    assert error <= TOL, f"{name}: max |logit difference| {error:.3g} vs their code"


@pytest.mark.parametrize("name", CASES)
def test_associative_state_matches_their_code_after_every_layer_and_segment(name):
    model = load_case(name)
    ref = theirs(name)
    assert len(run(model, ref["input_ids"], ref["attention_mask"]).memory_out) == ORACLE["cases"][name]["n_segments"]["batch"]
    errors = state_errors(model, name)
    assert errors["A"] <= TOL and errors["z"] <= TOL, f"{name}: {errors}"
    if ORACLE["cases"][name]["cell"].get("use_denom", True):
        assert any(k.startswith("z.") for k in ref)  # z was compared, not skipped


@pytest.mark.parametrize("name", ["gpt2_fa", "llama_fa"])
def test_segment_zero_is_the_plain_backbone(name):
    model = load_case(name)
    ids = theirs(name)["input_ids"][:1]
    with torch.no_grad():
        plain = model.backbone(input_ids=ids[:, :S]).logits
    torch.testing.assert_close(run(model, ids).logits[:, :S], plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs(name)["logits"][:1, :S], plain, rtol=0, atol=TOL)


# ---------------------------------------------------------------------- negative controls
def test_without_the_gamma_correction_the_comparison_fails():
    error = logit_error(load_case("gpt2_fa", correction=False), "gpt2_fa")
    assert error > WIDE, f"correction off still matches within {error:.3g}: the test cannot see gamma"


def test_without_reads_the_comparison_fails():
    model = load_case("llama_fa")
    with torch.no_grad():
        for layer in model.associative_layers:
            layer.W_mq.weight.zero_()  # phi(0) = 0: every read is exactly 0
    error = logit_error(model, "llama_fa")
    assert error > WIDE, f"no read still matches within {error:.3g}"


@pytest.mark.parametrize("name, flipped", [("gpt2_fa", True), ("gpt2_exp_no_correction", False)])
def test_the_other_branchs_feature_normalisation_fails(name, flipped):
    error = logit_error(load_case(name, normalize_features=flipped), name)
    assert error > WIDE, f"{name} with normalize_features={flipped} still matches within {error:.3g}"

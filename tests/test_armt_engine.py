"""The associative memory (ARMT, engine/memory/associative.py) on tiny random backbones.

The exactness against the authors' own code lives in the oracle-fixture tests; here: the engine's
behaviour, and its state after two segments against a reference written in this file with explicit
loops over heads and memory tokens (its own hooks on the backbone's blocks, none of the engine's code).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig

import rmt_core
from rmt_core import ConfigError, RMTConfig, RMTModel
from rmt_core.engine.backbones import backbone_from_config, gpt2_config, llama_config

from conftest import VOCAB

M, S = 3, 6  # memory tokens, segment size


def build(kind: str = "gpt2", seed: int = 0, randomise: bool = True, num_mem_tokens: int = M, **options) -> RMTModel:
    """A tiny ARMT; W_mv randomised (zero-initialised, every read would be exactly 0)."""
    torch.manual_seed(seed)
    configs = {
        "gpt2": lambda: gpt2_config(VOCAB, n_layer=2, n_embd=32, n_head=4, n_positions=64),
        "llama": lambda: llama_config(VOCAB, n_layer=2, hidden=32, n_head=4, n_kv_head=2),
        "neox": lambda: GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=128),
    }
    config = RMTConfig(memory="associative", num_mem_tokens=num_mem_tokens, segment_size=S,
                       memory_options={"d_mem": 8, **options})
    model = RMTModel.from_backbone(backbone_from_config(configs[kind]()), config).eval()
    if randomise:
        with torch.no_grad():
            for layer in model.associative_layers:
                layer.W_mv.weight.normal_(0.0, 0.3)
    return model


def ids(n: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, VOCAB, (batch, n)))


@pytest.fixture(scope="module")
def gpt2():
    return build("gpt2")


# ---------------------------------------------------------------------- layout and reads
@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_segment_zero_is_the_plain_backbone_and_later_segments_read(kind):
    model = build(kind)
    assert model.memory.layers_attr == {"gpt2": "transformer.h", "llama": "model.layers", "neox": "gpt_neox.layers"}[kind]
    x = ids(3 * S)
    out = model(x)
    assert out.logits.shape == (1, 3 * S, VOCAB) and len(out.memory_out) == 3
    # no write yet, no read: the backbone alone (float rounding only: the row holds M more positions,
    # so the matrix products run in other blocks; the reads below change logits by > 1e-3)
    torch.testing.assert_close(out.logits[:, :S], model.backbone(x[:, :S]).logits, rtol=0, atol=1e-5)
    no_memory = model(x, reset_memory=True).logits
    assert torch.equal(out.logits[:, :S], no_memory[:, :S])
    assert float((out.logits[:, S:] - no_memory[:, S:]).abs().max()) > 1e-3  # the reads change segments 1, 2 (NeoX: ~1e-2)


def test_zero_initialised_values_read_exactly_nothing():
    """The authors' W_mv = 0: every read is 0 until training moves it (the control for the test above)."""
    model = build("gpt2", randomise=False)
    assert float(model.associative_layers[0].W_mv.weight.abs().max()) == 0.0
    x = ids(3 * S)
    assert torch.equal(model(x).logits, model(x, reset_memory=True).logits)


def test_row_layout_labels_parts_and_segment_length(gpt2):
    row = gpt2.memory.build_row(gpt2.initial_state(1), torch.zeros(1, S, 32), None, True, 0)
    assert row.length == S + M and row.parts == {"tokens": slice(0, S), "memory": slice(S, S + M)}
    assert row.positions.tolist() == [list(range(S + M))]
    allowed = row.allowed[0]
    assert not allowed[:S, S:].any() and allowed[S:, :S].all()  # tokens never see memory; memory sees tokens
    assert gpt2.memory.row_labels(["a", "b"]) == ["a", "b", "P0", "P1", "P2"]
    assert gpt2.memory.parts() == ["L0", "L1"]
    assert gpt2.config.segment_length() == S + M
    assert RMTConfig(num_mem_tokens=M, segment_size=S).segment_length() == S + 2 * M  # tokens memory: m + L + m
    names = {n for n, _ in gpt2.named_parameters() if not n.startswith("backbone.")}
    assert names == {"memory_tokens"} | {f"associative_layers.{i}.{w}" for i in range(2)
                                         for w in ("W_mq.weight", "W_mk.weight", "W_mv.weight", "W_mb.weight",
                                                   "W_mb.bias")}
    state = gpt2.initial_state(2)
    assert state["A"].shape == (2, 2, 1, 48, 32) and state["z"].shape == (2, 2, 1, 48)  # F = 2 * 3 * 8


# ---------------------------------------------------------------------- a reference with explicit loops
def _dpfp(x: torch.Tensor, nu: int) -> torch.Tensor:
    u = torch.cat([x.clamp(min=0), (-x).clamp(min=0)])
    n = u.numel()
    return torch.stack([u[i] * u[(i - j) % n] for j in range(1, nu + 1) for i in range(n)])


def _reference(model: RMTModel, x: torch.Tensor, nu: int = 3, normalize: bool = False):
    """(logits, A, z) after running x (1, T) segment by segment, with this file's own loops."""
    opts = model.config.memory_options
    heads, gating = opts.get("n_heads", 1), opts.get("gating", False)
    blocks = model.backbone.base_model.h if hasattr(model.backbone.base_model, "h") else model.backbone.base_model.layers
    d = model.hidden_size
    dk, dv = opts["d_mem"] // heads, d // heads
    f = 2 * nu * dk
    A = [[torch.zeros(f, dv) for _ in range(heads)] for _ in blocks]
    z = [[torch.zeros(f) for _ in range(heads)] for _ in blocks]
    written = False

    def feature(vector):
        phi = _dpfp(vector, nu)
        return phi / phi.norm().clamp(min=1e-12) if normalize else phi

    def read(layer, h_row):
        p = model.associative_layers[layer]
        q = p.W_mq.weight @ h_row
        parts = []
        for h in range(heads):
            phi = feature(q[h * dk:(h + 1) * dk])
            parts.append((phi @ A[layer][h]) / (z[layer][h] @ phi + 1e-5))
        return torch.cat(parts)

    def write(layer, memory_rows):
        p = model.associative_layers[layer]
        old_a = [a.clone() for a in A[layer]]
        old_z = [v.clone() for v in z[layer]]
        for m_row in memory_rows:  # each memory token against the OLD state
            k, v = p.W_mk.weight @ m_row, p.W_mv.weight @ m_row
            beta = torch.sigmoid(p.W_mb.weight @ m_row + p.W_mb.bias)
            for h in range(heads):
                phi = feature(k[h * dk:(h + 1) * dk])
                if written:
                    den = old_z[h] @ phi + 1e-5
                    vbar = (phi @ old_a[h]) / den
                    gamma = float(torch.clamp(1 - den / (phi @ phi + (0.0 if normalize else 1e-5)), 0, 1))
                else:
                    vbar, gamma = torch.zeros(dv), 1.0
                b = beta[h * dv:(h + 1) * dv] if gating else beta[h]
                A[layer][h] = A[layer][h] + torch.outer(phi, b * (v[h * dv:(h + 1) * dv] - vbar))
                z[layer][h] = z[layer][h] + gamma * phi

    logits = []
    with torch.no_grad():
        for start in range(0, x.shape[1], S):
            seg = x[:, start:start + S]
            row = torch.cat([model.backbone.get_input_embeddings()(seg), model.memory_tokens.unsqueeze(0)], dim=1)
            handles = []
            for layer, block in enumerate(blocks):
                def pre(module, args, kwargs, layer=layer):
                    hidden = args[0]
                    if written:
                        hidden = torch.stack([hidden[0, i] + read(layer, hidden[0, i])
                                              for i in range(hidden.shape[1])]).unsqueeze(0)
                    return (hidden,) + tuple(args[1:]), kwargs

                def post(module, args, output, layer=layer):
                    out = output[0] if isinstance(output, tuple) else output
                    write(layer, [out[0, -M + i] for i in range(M)])

                handles += [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
            try:
                logits.append(model.backbone(inputs_embeds=row).logits[:, :seg.shape[1]])
            finally:
                for handle in handles:
                    handle.remove()
            written = True
    stack = lambda t: torch.stack([torch.stack(layer) for layer in t])  # noqa: E731
    return torch.cat(logits, dim=1), stack(A), stack(z)


@pytest.mark.parametrize("kind, options", [
    ("gpt2", {}),                                              # FA maths, one head
    ("gpt2", {"n_heads": 2, "gating": True}),                  # heads + per-channel beta
    ("llama", {"n_heads": 2, "gating": True, "normalize_features": True}),  # EXP maths
])
def test_state_after_two_segments_matches_the_loop_reference(kind, options):
    model = build(kind, **options)
    x = ids(2 * S, seed=3)
    with torch.no_grad():
        out = model(x)
    logits, A, z = _reference(model, x, normalize=options.get("normalize_features", False))
    state = out.memory_out[-1]
    assert float((out.logits - logits).abs().max()) < 1e-5
    assert float((state["A"][0] - A).abs().max()) < 1e-5 and float((state["z"][0] - z).abs().max()) < 1e-5
    assert float(state["A"].abs().max()) > 0.1 and state["written"].item() == 2
    # Negative control: the same reference one write earlier is far from the engine's state.
    _, A1, _ = _reference(model, x[:, :S], normalize=options.get("normalize_features", False))
    assert float((state["A"][0] - A1).abs().max()) > 1e-2


def test_correction_off_and_no_denominator_change_the_state():
    x = ids(3 * S, seed=4)
    states = {}
    for name, options in {"fa": {}, "no_correction": {"correction": False}, "no_denom": {"use_denom": False}}.items():
        with torch.no_grad():
            states[name] = build("gpt2", **options)(x).memory_out[-1]
    assert float((states["fa"]["z"] - states["no_correction"]["z"]).abs().max()) > 1e-3
    assert float(states["no_denom"]["z"].abs().max()) == 0.0  # z unused without the denominator
    assert float((states["fa"]["A"] - states["no_denom"]["A"]).abs().max()) > 1e-3


# ---------------------------------------------------------------------- padding, generate, BPTT
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_padded_rows_get_their_results_as_alone(kind):
    model = build(kind)
    a, b = ids(3 * S + 1, seed=5), ids(2 * S - 1, seed=6)
    alone_a, alone_b = model(a), model(b)
    width = a.shape[1]
    for side in ("right", "left"):
        batch = torch.zeros(2, width, dtype=torch.long)
        mask = torch.zeros(2, width, dtype=torch.long)
        batch[0], mask[0] = a[0], 1
        place = slice(0, b.shape[1]) if side == "right" else slice(width - b.shape[1], width)
        batch[1, place], mask[1, place] = b[0], 1
        out = model(batch, attention_mask=mask)
        assert float((out.logits[0] - alone_a.logits[0]).abs().max()) < 1e-5, side
        assert float((out.logits[1, place] - alone_b.logits[0]).abs().max()) < 1e-5, side
        assert float((out.memory_out[-1]["A"][1] - alone_b.memory_out[-1]["A"][0]).abs().max()) < 1e-5, side
        assert out.memory_out[-1]["written"][:, 0].tolist() == [4.0, 2.0], side  # a padding segment keeps the state


def test_generate_reads_while_decoding_and_writes_nothing(gpt2):
    x = ids(2 * S + 1, seed=7)
    new = 4
    generated = gpt2.generate(x, max_new_tokens=new)
    full = gpt2(generated).logits  # the final segment holds prompt and new tokens: the same state, no write
    assert torch.equal(full[0, x.shape[1] - 1:-1].argmax(-1), generated[0, x.shape[1]:])
    no_memory = gpt2(generated, reset_memory=True).logits
    assert float((full[0, -new:] - no_memory[0, -new:]).abs().max()) > 1e-2  # the decoded tokens were read into
    state = gpt2.run_segment(None, x[:, :S]).memory_out
    before = {k: v.clone() for k, v in state.items()}
    out = gpt2.run_segment(state, x[:, S:2 * S], write=False)
    assert out.memory_out is None and all(torch.equal(state[k], before[k]) for k in state)
    assert torch.equal(gpt2.generate(x, max_new_tokens=new), generated)  # nothing carried between calls


STATE_NAMES = ("A", "z", "written")


def _same_states(got, expected) -> bool:
    return len(got) == len(expected) and all(
        torch.equal(g[name], e[name].detach()) for g, e in zip(got, expected) for name in STATE_NAMES)


@pytest.mark.parametrize("options", [{}, {"n_heads": 2, "gating": True}, {"use_denom": False}])
def test_inference_writes_in_place_and_gives_the_autograd_paths_numbers(options):
    """Without grad, forward writes every segment's state into the one its own previous segment wrote and
    keeps each segment's write (AssociativeHistory); with grad it keeps the states themselves. Logits and
    every state A, z, written are bit for bit the same, read in any order; memory resets, a padded batch
    (a row whose last segments are all padding keeps its state) and a given starting state included."""
    model = build("gpt2", **options)
    a, b = ids(5 * S, seed=11), ids(3 * S - 2, seed=12)
    batch, mask = torch.zeros(2, 5 * S, dtype=torch.long), torch.zeros(2, 5 * S, dtype=torch.long)
    batch[0], mask[0] = a[0], 1
    batch[1, :b.shape[1]], mask[1, :b.shape[1]] = b[0], 1
    start = model.run_segment(None, ids(S, seed=13).expand(2, -1)).memory_out
    start_copy = {name: t.clone() for name, t in start.items()}
    for kwargs in ({}, {"reset_memory": {2}}, {"attention_mask": mask}, {"memory": start}):
        autograd = model(batch, **kwargs)
        assert isinstance(autograd.memory_out, list) and autograd.memory_out[-1]["A"].requires_grad
        with torch.no_grad():
            inference = model(batch, **kwargs)
        assert not isinstance(inference.memory_out, list)  # the writes, not the states
        assert torch.equal(inference.logits, autograd.logits.detach()), kwargs
        order = [3, 0, 4, 1, 2, -1, 1]  # backwards and forwards: rebuilt from the nearest state held
        assert _same_states([inference.memory_out[k] for k in order], [autograd.memory_out[k] for k in order]), kwargs
        assert _same_states(list(inference.memory_out), autograd.memory_out), kwargs
        assert _same_states(inference.memory_out[1:3], autograd.memory_out[1:3]), kwargs
        assert not inference.memory_out[2]["A"].requires_grad  # rebuilt without grad, as forward ran
        # negative control: the states differ from segment to segment (the comparison can fail)
        assert float((inference.memory_out[3]["A"] - inference.memory_out[4]["A"]).abs().max()) > 1e-3
        if "attention_mask" in kwargs:  # row 1's last two segments are all padding: its state stays
            assert inference.memory_out[-1]["written"][:, 0].tolist() == [5.0, 3.0]
            assert torch.equal(inference.memory_out[-1]["A"][1], inference.memory_out[2]["A"][1])
    assert all(torch.equal(start[name], start_copy[name]) for name in STATE_NAMES)  # a given state is not written


def test_reuse_state_writes_into_the_given_state_only_without_grad(gpt2):
    x = ids(2 * S, seed=14)
    with torch.no_grad():
        state = gpt2.run_segment(None, x[:, :S]).memory_out
        before = {name: t.clone() for name, t in state.items()}
        copied = gpt2.run_segment(state, x[:, S:]).memory_out
        assert all(torch.equal(state[name], before[name]) for name in STATE_NAMES)  # not handed over: kept
        reused = gpt2.run_segment(state, x[:, S:], reuse_state=True).memory_out
    assert reused["A"] is state["A"] and reused["z"] is state["z"]  # written into the state's own memory
    assert all(torch.equal(reused[name], copied[name]) for name in STATE_NAMES)
    graph = gpt2.run_segment(copied, x[:, S:], reuse_state=True).memory_out  # grad on: never in place
    assert graph["A"] is not copied["A"] and graph["A"].requires_grad


def test_bptt_depth_cuts_the_state_between_segments():
    x = ids(3 * S, seed=8)
    grads = {}
    for depth in (None, 1):
        model = build("gpt2")
        model.config.bptt_depth = depth
        out = model(x)
        out.logits[:, 2 * S:].sum().backward()  # the last segment only
        grads[depth] = model.associative_layers[0].W_mk.weight.grad
        assert model.associative_layers[0].W_mq.weight.grad.abs().max() > 0  # its reads are always trained
    assert grads[None].abs().max() > 0  # full BPTT: earlier writes are trained through the state
    assert grads[1] is None or float(grads[1].abs().max()) == 0.0  # the state entering it was detached


def test_a_few_training_steps_lower_the_loss():
    from rmt_core.training.loop import TrainingRun
    from rmt_core.training.recipes import Recipe, Stage

    recipe = Recipe(name="tiny-armt", summary="test", tokenizer="symbols",
                    backbone={"kind": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32},
                    rmt={"num_mem_tokens": 2, "segment_size": 4, "memory": "associative", "memory_options": {"d_mem": 8}},
                    stages=[Stage("copy", "algorithmic", "copy", (3,), max_steps=40, batch_size=16, n_symbols=4,
                                  lr=3e-3, eval_every=1000, eval_samples=4)], warmup_steps=1)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        run = TrainingRun(recipe, folder, log=lambda _: None)
        run.resume()
        try:
            losses = [float(run.step(recipe.stages[0])["loss"]) for _ in range(40)]
        finally:
            run.close()
        assert float(run.model.associative_layers[0].W_mv.weight.detach().abs().max()) > 0  # trained through memory
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses


# ---------------------------------------------------------------------- files, traces, edits
def test_save_and_load_round_trip(tmp_path):
    model = build("llama", n_heads=2, gating=True)
    x = ids(2 * S, seed=9)
    rmt_core.save(model, tmp_path / "armt")
    loaded = rmt_core.load(tmp_path / "armt")
    assert loaded.config.memory == "associative" and loaded.config.memory_options == model.config.memory_options
    assert loaded.weights_hash() == model.weights_hash()
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_wrap_pos_gives_memory_tokens_rows_after_gpt2s_table(tmp_path):
    model = build("gpt2", wrap_pos=True)
    assert model.backbone.transformer.wpe.weight.shape[0] == 64 + M
    row = model.memory.build_row(model.initial_state(1), torch.zeros(1, 4, 32), torch.tensor([[1, 1, 0, 0]]), True, 2)
    assert row.positions.tolist() == [[0, 1, 2, 3, 64, 65, 66]]
    rmt_core.save(model, tmp_path / "wrapped")
    loaded = rmt_core.load(tmp_path / "wrapped")  # the table grows once, not twice
    x = ids(2 * S, seed=10)
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_trace_replay_and_layer_edits(gpt2, tmp_path):
    trace = rmt_core.trace(gpt2, np.random.default_rng(11).integers(0, VOCAB, 4 * S + 2))
    assert trace.memory_type == "associative" and trace.num_segments == 5
    assert trace.state_in(0)["written"][0] == 0 and trace.state_out(4)["written"][0] == 5
    assert np.array_equal(trace.replay(3).state_arrays()["A"], trace.state_out(3)["A"])
    assert len(trace.attention_labels(2)) == trace.attention(2).shape[-1] == S + M
    loaded = rmt_core.Trace.load(trace.save(tmp_path / "armt.rmtrace"), model=gpt2)
    assert np.array_equal(loaded.state_out(2)["z"], trace.state_out(2)["z"])
    target, source = trace.state_out(1), trace.state_out(3)
    edited = gpt2.memory.edit_state(target, "replace", part=1, source=source)
    assert np.array_equal(edited["A"][1], source["A"][1]) and np.array_equal(edited["A"][0], target["A"][0])
    assert np.array_equal(edited["z"][1], source["z"][1]) and np.array_equal(target["A"][1], trace.state_out(1)["A"][1])
    assert not torch.equal(trace.replay(2).logits, trace.replay(2, edit="reset").logits)
    with pytest.raises(rmt_core.ArgumentError, match="supports the edits"):
        trace.replay(2, edit="shuffle")


# ---------------------------------------------------------------------- bad options
@pytest.mark.parametrize("options, match", [
    ({"dmem": 8}, r"unknown option 'dmem' for the associative memory; known options are .*\bd_mem\b"),
    ({"d_mem": "64"}, r"d_mem must be an integer >= 1"),
    ({"d_mem": 0}, r"d_mem must be an integer >= 1"),
    ({"gating": 1}, r"gating must be true or false"),
    ({"d_mem": 8, "n_heads": 3}, r"n_heads=3 must divide d_mem=8"),
    ({"act_on": True}, r"act_on=True asks for adaptive computation time"),
    ({"sliding_window": True}, r"sliding_window=True asks for sliding-window attention"),
    ({"sink_token": 1}, r"sink_token=1 asks for attention sink tokens"),
])
def test_bad_options_are_refused_by_name(options, match):
    with pytest.raises(ConfigError, match=match):
        RMTConfig(memory="associative", num_mem_tokens=M, segment_size=S, memory_options=options)


def test_options_that_need_the_backbone_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"num_mem_tokens must be >= 1"):
        RMTConfig(memory="associative", num_mem_tokens=0, segment_size=S)
    with pytest.raises(ConfigError, match=r"n_heads=8 must divide the backbone's hidden size 36"):
        RMTModel(backbone_from_config(gpt2_config(VOCAB, n_layer=1, n_embd=36, n_head=4, n_positions=32)),
                 RMTConfig(memory="associative", num_mem_tokens=M, segment_size=S,
                           memory_options={"d_mem": 8, "n_heads": 8}))
    with pytest.raises(ConfigError, match=r"wrap_pos=true adds memory-token rows to GPT-2's position table.*'llama'"):
        build("llama", wrap_pos=True)
    assert RMTConfig(memory="associative", num_mem_tokens=M, segment_size=S,
                     memory_options={"act_on": False}).memory_options == {"act_on": False}  # off is no variant


def test_two_runs_at_once_on_one_model_give_each_its_own_numbers():
    """Sessions share one loaded model: two traces of different documents in two threads at once give
    exactly what each gives alone (the associative memory's layer hooks sit on the shared blocks)."""
    import threading

    model = build("gpt2")
    docs = [ids(40 * S, seed=1), ids(40 * S, seed=2)]
    alone = [model(x).logits for x in docs]
    results: list = [None, None]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        for _ in range(3):
            out = model(docs[i]).logits
            if results[i] is None or not torch.equal(out, alone[i]):
                results[i] = out

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert torch.equal(results[i], alone[i]), f"document {i} changed when run beside the other"

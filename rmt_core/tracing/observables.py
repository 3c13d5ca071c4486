"""The observables: everything a trace records, in one table (OBSERVABLES).

Each row names one thing a user can look at: its axes, its dtype in memory, whether there is
one per token, per segment or per trace, what it means, and how a trace file stores it.
SegmentRecord (records.py) has exactly these fields (plus its place: index, start, end), the
trace file (trace_file.py) concatenates, stacks and quantises by this table, the per-segment
CSV export (viz/export.py) takes its column descriptions from it, and README's table is
rendered from it (markdown()); tests check all four against it.

The words, used the same way in code, files, figures and the README:

    read slots R_k    the m memory positions before a segment's tokens (the read block)
    write slots W_k   the m memory positions after the tokens (the write block)
    memory_in         (m, d) the memory ENTERING a segment: it fills the read slots (and is
                      the write slots' input); segment 0 starts from initial_memory, and so does
                      every segment of a trace with memory reset (Trace.carries_memory False)
    memory_out        (m, d) the memory LEAVING a segment (it writes it): the write slots' last
                      hidden states; the next segment's memory_in when memory is carried
    memory states     Trace.memory_states(), (S + 1, m, d): memory_in of segment 0, then every
                      segment's memory_out (carried memory: row s is memory_in of segment s)
    attends to        attention: "W_k attends to token j" is the weight of query W_k on key j.
                      "Read" names the read block (R_k, memory_in), never attention.

An associative memory (ARMT, memory "associative"; Rodkin et al. 2024, arXiv 2407.04841) has no
slots (its slot rows are empty, m = 0) and its own rows (Observable.memory = "associative"):

    memory tokens P_i the M learned vectors after a segment's tokens (the same every segment);
                      their block outputs o_i write the state
    state A_l, z_l    per layer: A (features x hidden), a sum of rank-1 writes, and z (features)
    write             A += beta_i phi(k_i) (v_i - vbar_i)^T, z += gamma_i phi(k_i), all i at once:
                      write strength beta_i, novelty gamma_i, overwrite |v_i - vbar_i|
    read              every token's block input h gets h + y, y = phi(q)^T A / (z^T phi(q) + 1e-5)
                      from the second segment on ("read" is this, never attention)
    effective rank    exp(H(p)), p = the singular values of A divided by their sum, H the Shannon
                      entropy (Roy & Vetterli 2007, "The effective rank: a measure of effective
                      dimensionality"); 0 for A = 0. With heads, of the block-diagonal A (all
                      heads' singular values together). tracing/associative.effective_rank.

Block pairs "A->B" (records.BLOCK_PAIRS): block A attends to block B (block_pair_meaning).
"""
from __future__ import annotations

from dataclasses import dataclass

from .records import BLOCK_PAIRS, LENS_K, TOP_K

# scope: how many there are
PER_TOKEN, PER_SEGMENT, PER_TRACE = "token", "segment", "trace"
# stored: how a trace file keeps it
EXACT, INT8_VECTOR, UINT8_UNIT, PREVIOUS, TEXT, ON_DEMAND = "exact", "int8", "uint8", "previous", "text", "on demand"
STATE = "state"  # a memory type's named state arrays (trace_file stores them by name)
WRITES = "writes"  # a memory type's named write arrays (MemoryType.write_spec), stored by name
ON_USE = "on use"  # computed on first use and stored once computed (saving does not compute it)
ASSOCIATIVE = "associative"  # the memory type of the ARMT rows

AXES: dict[str, str] = {
    "token": "L, the segment's tokens (a trace file concatenates them: all T traced tokens)",
    "slot": "m memory slots: R_k for the read slots, W_k for the write slots, row k of a memory",
    "hidden": "d, the hidden size",
    "layer": "Y transformer layers",
    "layer+1": "Y + 1: the embeddings (0), then the output of each layer (the last after the final norm)",
    "head": "H attention heads per layer",
    "top_k": f"the top predictions kept per token (settings['top_k'], default {TOP_K})",
    "lens_k": f"the {LENS_K} logit-lens tokens per slot",
    "block_pair": f"{len(BLOCK_PAIRS)} block pairs A->B: {', '.join(BLOCK_PAIRS)}",
    "span": "2: start and end character offset",
    "state": "the memory type's named state arrays (MemoryType.state_spec), each with its own axes",
    "memory_token": "M memory tokens P_i of an associative memory (after the segment's tokens: num_mem_tokens)",
    "write": "the memory type's named write arrays (MemoryType.write_spec), each with its own axes",
}

STORAGE: dict[str, str] = {
    EXACT: "exact",
    INT8_VECTOR: "int8 with one float32 scale per vector (each element within absmax/254 plus float16 rounding)",
    UINT8_UNIT: "uint8 in steps of 1/255 (within 1/510 plus float16 rounding: under 0.0025)",
    PREVIOUS: "not stored: the previous segment's `memory_out` (segment 0, and every segment of a trace with "
              "memory reset, `settings['carry_memory']` false: `initial_memory`)",
    TEXT: "the text, cut into the same pieces by `char_spans` (the strings themselves when traced from ids)",
    STATE: "exact, one array per state name (`state_out.<name>`, stacked); absent for `tokens` and for a "
           "memory whose writes are stored",
    WRITES: "exact float32, one array per write name (`state_write.<name>`, stacked; associative: "
            "`memory_outputs` (layer, memory_token, hidden)); the states are rebuilt from them on demand "
            "(`Trace.state_in` / `state_out`: the memory type's own update, equal to the traced state)",
    ON_USE: "computed on first use (`Trace.state_ranks`), stored exactly once computed (saving does not compute it)",
    ON_DEMAND: "computed on first use (`Trace.lens_ids`), stored exactly; saving with the model attached "
               "computes what is missing",
}

BLOCKS: dict[str, str] = {"read": "the read slots R_k", "tokens": "the segment's tokens", "write": "the write slots W_k"}


@dataclass(frozen=True)
class Observable:
    """One thing a trace records.

    axes: axis names (AXES) of one record's value; () for a scalar. A per-token observable has a
    "token" axis. dtype: numpy dtype name in memory ("str" for display strings). scope: PER_TOKEN,
    PER_SEGMENT or PER_TRACE. stored: a STORAGE key. memory: the memory type that records it
    (None: every type records it; for another type the field is None and a file has no array).
    """

    name: str
    axes: tuple[str, ...]
    dtype: str
    scope: str
    meaning: str
    stored: str
    memory: str | None = None

    def recorded_for(self, memory_type: str) -> bool:
        """Whether a trace of this memory type records the observable."""
        return self.memory is None or self.memory == memory_type

    def __post_init__(self) -> None:
        unknown = [a for a in self.axes if a not in AXES]
        if unknown or self.stored not in STORAGE or self.scope not in (PER_TOKEN, PER_SEGMENT, PER_TRACE):
            raise ValueError(f"observable {self.name}: unknown axes {unknown}, scope {self.scope!r} "
                             f"or stored {self.stored!r}")
        if (self.scope == PER_TOKEN) != ("token" in self.axes):
            raise ValueError(f"observable {self.name}: per token exactly when it has a token axis")

    @property
    def token_axis(self) -> int | None:
        """Position of the token axis (None when there is none)."""
        return self.axes.index("token") if "token" in self.axes else None


OBSERVABLES: tuple[Observable, ...] = (
    Observable("token_ids", ("token",), "int32", PER_TOKEN, "the segment's token ids", EXACT),
    Observable("tokens", ("token",), "str", PER_TOKEN,
               "display strings: joined, they give the document (rmt_core.token_text)", TEXT),
    Observable("char_spans", ("token", "span"), "int64", PER_TOKEN,
               "each token's character offsets in the text; -1 when traced from ids", EXACT),
    Observable("initial_memory", ("slot", "hidden"), "float32", PER_TRACE,
               "the learned memory before the first segment (memory_in of segment 0)", EXACT),
    Observable("memory_in", ("slot", "hidden"), "float32", PER_SEGMENT,
               "the memory the segment starts from: it fills the read slots R_k (and is the write slots' input)",
               PREVIOUS),
    Observable("memory_out", ("slot", "hidden"), "float32", PER_SEGMENT,
               "the memory the segment writes: the write slots W_k's last hidden states", EXACT),
    Observable("read_hidden", ("layer+1", "slot", "hidden"), "float16", PER_SEGMENT,
               "hidden states of the read slots R_k at every layer", INT8_VECTOR),
    Observable("write_hidden", ("layer+1", "slot", "hidden"), "float16", PER_SEGMENT,
               "hidden states of the write slots W_k at every layer", INT8_VECTOR),
    Observable("token_logprob", ("token",), "float32", PER_TOKEN,
               "log p(token j | everything before it); NaN for the document's first token", EXACT),
    Observable("topk_ids", ("token", "top_k"), "int32", PER_TOKEN,
               "the model's top predictions for the token after j", EXACT),
    Observable("topk_logprobs", ("token", "top_k"), "float16", PER_TOKEN,
               "their log-probabilities", EXACT),
    Observable("loss", (), "float64", PER_SEGMENT,
               "per-segment mean loss: mean negative log-likelihood of this segment's tokens (nats/token, token-weighted within the segment)", EXACT),
    Observable("block_attention", ("layer", "head", "block_pair"), "float16", PER_SEGMENT,
               "for pair A->B: how much block A attends to block B (mean over A's positions of the mass on B)",
               EXACT),
    Observable("write_to_tokens", ("layer", "head", "slot", "token"), "float16", PER_TOKEN,
               "how much write slot W_k attends to token j", UINT8_UNIT),
    Observable("tokens_to_read", ("layer", "head", "token", "slot"), "float16", PER_TOKEN,
               "how much token j attends to read slot R_k", UINT8_UNIT),
    Observable("lens_ids", ("layer+1", "slot", "lens_k"), "int32", PER_SEGMENT,
               "logit lens: the top tokens write slot W_k's hidden state decodes to (final norm, LM head)",
               ON_DEMAND),
    Observable("state_out", ("state",), "float32", PER_SEGMENT,
               "a memory type other than `tokens`: the state the segment writes, as named arrays (the "
               "`tokens` memory's state is `memory_out`; its slot rows above are then empty: m = 0); None for "
               "a memory whose writes are stored (`state_write`)", STATE),
    Observable("state_write", ("write",), "float32", PER_SEGMENT,
               "a memory whose state is a sum of writes (associative): what the segment wrote, as named arrays "
               "(associative: `memory_outputs`, the memory tokens' block outputs o_i per layer)", WRITES),
    Observable("state_norm", ("layer",), "float32", PER_SEGMENT,
               "‖A_l‖_F: the Frobenius norm of layer l's associative matrix after the segment's write (heads "
               "together)", EXACT, ASSOCIATIVE),
    Observable("z_norm", ("layer",), "float32", PER_SEGMENT,
               "‖z_l‖: the L2 norm of layer l's normaliser z after the segment's write (heads together)",
               EXACT, ASSOCIATIVE),
    Observable("state_rank", ("layer",), "float32", PER_SEGMENT,
               "effective rank of A_l after the segment's write: exp of the entropy of its normalised singular "
               "values (Roy & Vetterli 2007); 0 for A = 0", ON_USE, ASSOCIATIVE),
    Observable("write_strength", ("layer", "memory_token"), "float32", PER_SEGMENT,
               "beta_i = sigmoid(W_mb o_i + b): how strongly memory token P_i writes (mean over heads or "
               "gated channels)", EXACT, ASSOCIATIVE),
    Observable("novelty", ("layer", "memory_token"), "float32", PER_SEGMENT,
               "gamma_i = clip(1 - z·phi(k_i) / |phi(k_i)|², 0, 1): how new P_i's key is to the state, what z "
               "adds (1 in the first segment and without correction; mean over heads)", EXACT, ASSOCIATIVE),
    Observable("overwrite", ("layer", "memory_token"), "float32", PER_SEGMENT,
               "|v_i - vbar_i|: how far P_i's value is from what the state already returns for its key "
               "(vbar_i = 0 in the first segment)", EXACT, ASSOCIATIVE),
    Observable("read_ratio", ("layer", "token"), "float32", PER_TOKEN,
               "|y_j| / |h_j|: the size of what token j reads from the state at layer l, relative to its "
               "hidden state entering the layer (0 in the first segment: nothing is read)", EXACT, ASSOCIATIVE),
    Observable("read_denominator", ("layer", "token"), "float32", PER_TOKEN,
               "z·phi(q_j) + 1e-5, the read's normaliser at layer l (mean over heads); 1 without a denominator "
               "(use_denom false); NaN in the first segment (nothing is read)", EXACT, ASSOCIATIVE),
)

BY_NAME: dict[str, Observable] = {o.name: o for o in OBSERVABLES}


def names(scope: str | None = None, stored: str | tuple[str, ...] | None = None,
          memory: str | None = None) -> tuple[str, ...]:
    """Names of the observables with this scope and/or storage (all when both are None), in table
    order; with `memory`, only those a trace of that memory type records."""
    kinds = (stored,) if isinstance(stored, str) else stored
    return tuple(o.name for o in OBSERVABLES
                 if (scope is None or o.scope == scope) and (kinds is None or o.stored in kinds)
                 and (memory is None or o.recorded_for(memory)))


def block_pair_meaning(pair: str) -> str:
    """'tokens->read' -> 'how much the segment's tokens attend to the read slots R_k' (pair from BLOCK_PAIRS)."""
    if pair not in BLOCK_PAIRS:
        raise ValueError(f"pair must be one of {', '.join(BLOCK_PAIRS)}, got {pair!r}")
    source, target = pair.split("->")
    return f"how much {BLOCKS[source]} attend to {BLOCKS[target]}"


def markdown() -> str:
    """The table (and the axes) as README shows it under "Traces"; tests/test_observables.py checks they are equal."""
    rows = ["| observable | axes | dtype | one per | meaning | in a trace file |", "|---|---|---|---|---|---|"]
    for o in OBSERVABLES:
        axes = f"({', '.join(o.axes)})" if o.axes else "scalar"
        meaning = o.meaning if o.memory is None else f"{o.memory} memory only: {o.meaning}"
        cells = (f"`{o.name}`", axes, o.dtype, o.scope, meaning, STORAGE[o.stored])
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    axes = ["| axis | size |", "|---|---|"] + [f"| `{name}` | {words} |" for name, words in AXES.items()]
    return "\n".join(rows) + "\n\n" + "\n".join(axes)

"""Attribution run times on the shipped model (rmt_core.explain.attribution, integrated gradients).

Two fact-recall samples (bAbI "detect" in the held-out novel, like the app's demo; the
fact is kept out of the last segment), 4 and 9 segments (of the model's segment size), each traced once.
The attributed prediction is the answer after "Answer:" (the token before it predicts it).

* read_slots(last segment, 32 steps): target <= 3 s
* write_slots(the fact's segment: all 8 write slots, 32 steps each): target <= 10 s
* through_memory(last segment, 32 steps): over 8 earlier segments on the 9-segment sample,
  target <= 20 s (over 3 segments on the 4-segment sample: info)

Medians over repeats (each call is seconds long, so a warm-up call on a short input first).
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import numpy as np  # noqa: E402

TARGETS = {"read_slots": 3.0, "write_slots": 10.0, "through_memory": 20.0}
STEPS = 32


def fact_trace(model, n_segments: int, seed: int):
    """(trace, answer position in the last segment, fact segment) of a fact-recall sample."""
    from rmt_core.training.corpus import load_corpus
    from rmt_core.training.tasks import babi

    seg = model.config.segment_size
    rng = np.random.default_rng(seed)
    tok = model.tokenizer
    sample = babi.build_sample(load_corpus("heldout"), n_segments * seg, "detect", rng, tok, keep_out_tail=seg)
    trace = rmt_core.trace(model, sample.text + sample.answer)
    fact_char = sample.facts[0][0]
    fact_segment = next((s.index for s in trace.segments
                         if (s.char_spans[:, 0] <= fact_char).any() and (s.char_spans[:, 1] > fact_char).any()),
                        0)
    position = trace.segments[-1].num_tokens - 2  # its next token is the answer
    return trace, position, fact_segment, sample.answer.strip()


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3; quick 1)")
    args = p.parse_args()
    C.setup(args)
    from rmt_core.explain import attribution

    report = C.Report("bench_attribution", "read / write / through-memory attribution times", quick=args.quick)
    report.header(args)
    repeats = args.repeats or (1 if args.quick else 3)
    steps = 8 if args.quick else STEPS
    samples = [4] if args.quick else [4, 9]
    rows, checks = [], []
    for device in C.devices(args):
        model = C.load_model(device)
        warm, pos, _, _ = fact_trace(model, 2, seed=1)
        attribution.read_slots(warm, 1, pos, n_steps=4)  # warm-up (captum import, first backward)
        attribution.write_slots(warm, 0, n_steps=2)
        attribution.through_memory(warm, 1, pos, n_steps=4)
        for n in samples:
            trace, pos, fact_seg, answer = fact_trace(model, n, seed=7 + n)
            last = trace.num_segments - 1
            through = min(last, attribution.MAX_THROUGH_SEGMENTS)
            cases = {
                "read_slots": (f"segment {last}, position {pos}", lambda: attribution.read_slots(trace, last, pos, n_steps=steps)),
                "write_slots": (f"segment {fact_seg} (the fact's), {trace.num_mem_tokens} slots",
                                lambda: attribution.write_slots(trace, fact_seg, n_steps=steps)),
                "through_memory": (f"segment {last}, over {through} earlier segments",
                                   lambda: attribution.through_memory(trace, last, pos, n_steps=steps)),
            }
            times = C.interleaved({name: fn for name, (_, fn) in cases.items()}, rounds=repeats, warmup=0,
                                  device=device)
            for name, (what, _) in cases.items():
                value = C.median(times[name])
                judged = device == "cpu" and (name != "through_memory" or through == 8)
                rows.append([device, f"{n} segments ({trace.num_tokens} tokens, answer {answer!r})", name, what,
                             steps, value, C.spread(times[name]), len(times[name]),
                             f"<= {TARGETS[name]:g} s" if judged else "info"])
                if judged:
                    checks.append((f"{name}, {n}-segment sample (cpu)", value, TARGETS[name]))
        del model
    report.table(["device", "sample", "method", "what", "steps", "median s", "min..max ms", "n", "target"], rows,
                 title="Attribution times (integrated gradients)")
    for label, value, target in checks:
        report.check(label, value, target, " s", digits=2)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())

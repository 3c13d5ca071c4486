"""Two runs side by side on the shipped model: rmt_core.compare and memory patching across documents.

Two fact-recall samples (bAbI "detect" in the held-out novel, as the app's demo) with different
answers, 8 segments each (of the model's segment size); the source's memory is patched into the target.

* patch_sweep over 8 segments x 8 slots (64 patched runs, each from its segment to the end):
  target <= 10 s
* compare() of two 50-segment traces (answer logit lens included): info
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import numpy as np  # noqa: E402

SWEEP_TARGET_S = 10.0


def sample_trace(model, n_segments: int, seed: int):
    """(trace, answer) of a fact-recall sample of n_segments segments."""
    from rmt_core.training.corpus import load_corpus
    from rmt_core.training.tasks import babi

    seg = model.config.segment_size
    sample = babi.build_sample(load_corpus("heldout"), n_segments * seg, "detect", np.random.default_rng(seed),
                               model.tokenizer, keep_out_tail=seg)
    return rmt_core.trace(model, sample.text + sample.answer), sample.answer.strip()


def two_samples(model, n_segments: int):
    """Two samples whose answers differ (the source's answer can take over the target)."""
    target, answer = sample_trace(model, n_segments, 11)
    for seed in range(12, 40):
        source, other = sample_trace(model, n_segments, seed)
        if other != answer:
            return target, answer, source, other
    raise RuntimeError("no second sample with another answer")


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3; quick 1)")
    args = p.parse_args()
    C.setup(args)
    from rmt_core import interventions

    report = C.Report("bench_compare", "memory patching sweep and compare() times", quick=args.quick)
    report.header(args)
    repeats = args.repeats or (1 if args.quick else 3)
    model = C.load_model("cpu")
    n = 3 if args.quick else 8
    target, answer, source, other = two_samples(model, n)
    segments, slots = list(range(min(n, target.num_segments, source.num_segments))), list(range(model.config.num_mem_tokens))
    interventions.patch_memory(target, 0, source)  # warm-up
    long_n = 6 if args.quick else 50
    long_a, _ = sample_trace(model, long_n, 5)
    long_b, _ = sample_trace(model, long_n, 6)
    cases = {
        "patch_sweep": lambda: interventions.patch_sweep(target, source, segments, slots, whole=False),
        "compare": lambda: rmt_core.compare(long_a, long_b),
    }
    times = C.interleaved(cases, rounds=repeats, warmup=0)
    sweep = interventions.patch_sweep(target, source, segments, slots, whole=False)
    flipped = int(sweep.flipped.sum())
    rows = [["patch_sweep", f"{len(segments)} segments x {len(slots)} slots, {target.num_segments}-segment documents "
             f"(target answer {answer!r}, source {other!r}; {flipped} cells flip to the source's)",
             C.median(times["patch_sweep"]), C.spread(times["patch_sweep"]), len(times["patch_sweep"]),
             f"<= {SWEEP_TARGET_S:g} s" if not args.quick else "info"],
            ["compare", f"two {long_a.num_segments}- and {long_b.num_segments}-segment traces",
             C.median(times["compare"]), C.spread(times["compare"]), len(times["compare"]), "info"]]
    report.table(["case", "what", "median s", "min..max ms", "n", "target"], rows, title="Compare and patching times")
    if not args.quick:
        report.check("patch_sweep 8 segments x 8 slots (cpu)", C.median(times["patch_sweep"]), SWEEP_TARGET_S, " s",
                     digits=2)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())

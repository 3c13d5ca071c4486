"""Two runs side by side on the shipped model: rmt_core.compare and memory patching across documents.

Two fact-recall samples (bAbI "detect" in the held-out novel, as the app's demo; bench_attribution's
fact_trace) with different answers, 8 segments each (of the model's segment size); the source's
memory is patched into the target.

* patch_sweep over 8 segments x 8 slots (64 patched runs, each from its segment to the end),
  batched (the default: at each segment every run started by then goes through one forward):
  target <= 10 s; the same sweep one cell at a time (batched=False), and the ratio unbatched /
  batched (paired by round); the two sweeps' largest differences are printed (float rounding)
* compare() of two 50-segment traces (answer logit lens included): info
* reset_run (the "memory reset" second run: the document traced again with memory reset before
  every segment) of a 50-segment trace, and compare() with it: info
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import numpy as np  # noqa: E402

from bench_attribution import fact_trace  # noqa: E402  (one home for the fact-recall sample traces)

SWEEP_TARGET_S = 10.0


def two_samples(model, n_segments: int):
    """Two samples whose answers differ (the source's answer can take over the target)."""
    target, _, _, answer = fact_trace(model, n_segments, 11)
    for seed in range(12, 40):
        source, _, _, other = fact_trace(model, n_segments, seed)
        if other != answer:
            return target, answer, source, other
    raise RuntimeError("no second sample with another answer")


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3; quick 1)")
    args = p.parse_args()
    C.setup(args)
    from rmt_core import interventions
    from rmt_core.explain.compare import reset_run

    report = C.Report("bench_compare", "memory patching sweep (batched and one cell at a time), compare() times",
                      quick=args.quick)
    report.header(args)
    repeats = args.repeats or (1 if args.quick else 3)
    model = C.load_model("cpu")
    n = 3 if args.quick else 8
    target, answer, source, other = two_samples(model, n)
    segments, slots = list(range(min(n, target.num_segments, source.num_segments))), list(range(model.config.num_mem_tokens))
    interventions.patch_memory(target, 0, source)  # warm-up
    long_n = 6 if args.quick else 50
    long_a, _, _, _ = fact_trace(model, long_n, 5)
    long_b, _, _, _ = fact_trace(model, long_n, 6)
    long_reset = reset_run(long_a)
    cases = {
        "patch_sweep batched": lambda: interventions.patch_sweep(target, source, segments, slots, whole=False),
        "patch_sweep one cell at a time": lambda: interventions.patch_sweep(target, source, segments, slots,
                                                                            whole=False, batched=False),
        "compare": lambda: rmt_core.compare(long_a, long_b),
        "reset_run": lambda: reset_run(long_a),
        "compare with memory reset": lambda: rmt_core.compare(long_a, long_reset),
    }
    times = C.interleaved(cases, rounds=repeats, warmup=0)
    batched = interventions.patch_sweep(target, source, segments, slots, whole=False)
    single = interventions.patch_sweep(target, source, segments, slots, whole=False, batched=False)
    flipped = int(batched.flipped.sum())
    cells = f"{len(segments)} segments x {len(slots)} slots, {target.num_segments}-segment documents"
    what = {
        "patch_sweep batched": f"{cells} (target answer {answer!r}, source {other!r}; {flipped} cells flip to the "
                               f"source's); {interventions.sweep_batch_size(target)} runs a forward",
        "patch_sweep one cell at a time": f"{cells}, batched=False",
        "compare": f"two {long_a.num_segments}- and {long_b.num_segments}-segment traces",
        "reset_run": f"the {long_a.num_segments}-segment document traced again with memory reset",
        "compare with memory reset": f"{long_a.num_segments} segments, memory on vs reset",
    }
    rows = []
    for name in cases:
        judged = name == "patch_sweep batched" and not args.quick
        rows.append([name, what[name], C.median(times[name]), C.spread(times[name]), len(times[name]),
                     f"<= {SWEEP_TARGET_S:g} s" if judged else "info"])
    report.table(["case", "what", "median s", "min..max ms", "n", "target"], rows, title="Compare and patching times")
    ratio = C.paired_ratio(times, "patch_sweep one cell at a time", "patch_sweep batched")
    report.table(["compared", "ratio (one cell at a time / batched)", "largest |difference| p(source's answer)",
                  "largest |difference| loss change (nats/token)", "same answers"],
                 [["patch_sweep", ratio, f"{np.nanmax(np.abs(batched.p_source_answer - single.p_source_answer)):.2g}",
                   f"{np.nanmax(np.abs(batched.loss_change - single.loss_change)):.2g}",
                   batched.answer_after == single.answer_after]],
                 title="Batched patching sweep vs one cell at a time (paired by round)")
    report.note("memory on vs reset: " + rmt_core.compare(long_a, long_reset).divergence_text)
    if not args.quick:
        report.check("patch_sweep 8 segments x 8 slots, batched (cpu)", C.median(times["patch_sweep batched"]),
                     SWEEP_TARGET_S, " s", digits=2)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())

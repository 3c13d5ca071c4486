"""Model work of one vs two sessions at once, with torch's default threads and with the app's
setting (app/threads.py: RMT_LENS_THREADS per job, RMT_LENS_JOBS places).

Two sessions of one Streamlit server are two Python threads of one process; this runs the
app's two slowest clicks the same way, in one process:

* Ask (the "finding the answer" phase: rmt_core.explain.answers.answer_from_trace, top answers
  and the segment memory carried the answer from, by through-memory attribution);
* through-memory attribution of the answer (the Attribution page's "Through memory" tab).

on a fact-recall sample like the first screen's. Each job is timed alone, then two copies are
started together and each copy's wall time is reported (mean of the two). "torch default" is
what `make app` ran before: one torch thread per CPU for every job, no limit on jobs at once.
"app setting" is app.threads.configure() with this machine's defaults (or the variables).

    .venv/bin/python benchmarks/bench_concurrency.py [--quick] [--repeats N]

Target: with the app's setting, two sessions at once take at most 2.5x the time one takes
alone (two jobs on one machine cannot beat 2x when each alone fills the CPUs; they should not
be many times slower). The torch-default rows are info (what the setting fixes).
"""
from __future__ import annotations

import threading
import time

import _common as C  # noqa: E402  (puts the repo root on sys.path)

TARGET_RATIO = 2.5


def _together(job, copies: int = 2) -> list[float]:
    """Wall time of each of `copies` jobs started at once in threads."""
    times = [0.0] * copies
    barrier = threading.Barrier(copies)

    def run(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        job()
        times[i] = time.perf_counter() - start

    workers = [threading.Thread(target=run, args=(i,)) for i in range(copies)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return times


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="rounds per case (default 3; quick 1)")
    args = p.parse_args()
    C.setup(args)
    import torch

    from app import threads
    from bench_attribution import fact_trace
    from rmt_core.explain import answers, attribution

    report = C.Report("bench_concurrency", "one vs two sessions at once: Ask and through-memory attribution",
                      quick=args.quick)
    report.header(args)
    repeats = args.repeats or (1 if args.quick else 3)
    model = C.load_model("cpu")
    trace, pos, _, answer = fact_trace(model, 4 if args.quick else 8, seed=7)
    last = trace.num_segments - 1
    steps = 8 if args.quick else 32  # the app's through-memory tab: 32 steps
    site = answers.answer_site(trace)
    target = int(trace.segments[last].topk_ids[site.position][0]) if site is not None else None
    jobs = {
        "Ask (finding the answer)": lambda: answers.answer_from_trace(trace),
        "through-memory attribution": lambda: attribution.through_memory(trace, last, site.position if site else pos,
                                                                         target=target, n_steps=steps),
    }
    app_threads, app_jobs = threads.settings()
    variants = {
        f"torch default ({threads.cpus()} threads per job, no limit)": (threads.cpus(), None),
        f"app setting ({app_threads} thread(s) per job, {app_jobs} at once)": (app_threads, app_jobs),
    }
    rows, checks = [], []
    for name, job in jobs.items():
        job()  # warm-up (captum import, first backward)
        alone: dict[str, list[float]] = {v: [] for v in variants}
        together: dict[str, list[float]] = {v: [] for v in variants}
        for round_ in range(repeats):  # variants interleaved, order flipped every round (a shared machine)
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                n_threads, places = variants[variant]
                torch.set_num_threads(n_threads)
                slots = threading.BoundedSemaphore(places) if places else None

                def limited(job=job, slots=slots):
                    if slots is None:
                        return job()
                    with slots:
                        return job()

                alone[variant].extend(_together(limited, copies=1))  # in a thread, as a session runs
                together[variant].extend(_together(limited))
        for variant, (_, places) in variants.items():
            ratio = C.median(together[variant]) / C.median(alone[variant])
            rows.append([name, variant, C.median(alone[variant]), C.spread(alone[variant]),
                         C.median(together[variant]), C.spread(together[variant]), ratio])
            if places:
                checks.append((f"{name}: two at once / alone, app setting", ratio))
    torch.set_num_threads(max(1, int(args.threads)))
    report.table(["job", "threads", "alone s", "alone min..max ms", "each of two at once s", "min..max ms",
                  "ratio"], rows,
                 title=f"One vs two sessions at once ({trace.num_segments}-segment fact-recall sample, "
                       f"{trace.num_tokens} tokens, answer {answer!r}; {threads.cpus()} CPUs)")
    for label, value in checks:
        report.check(label, value, TARGET_RATIO, "x", digits=2)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Run every benchmark in this folder (what `make bench` calls), one subprocess each, and
print a summary of the target checks at the end.

    .venv/bin/python benchmarks/run_all.py [--quick] [--threads N] [--cuda] [--strict] [--only engine,trace]

Options are passed on to each benchmark. Exit status: 1 when a benchmark crashed (or, with
--strict, when a target was missed), else 0.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("engine", "trace", "app", "pages", "attribution", "concurrency", "study")
BENCHMARKS += ("compare",)  # bench_compare: patching sweep, compare()
BENCHMARKS += ("armt",)  # bench_armt: the associative memory (ARMT) forward vs its bare backbone
BENCHMARKS += ("browser_armt",)  # bench_browser_armt: ARMT pages' first render in Chromium (issue 25)
MISSED_EXIT = 3  # what a benchmark exits with under --strict when it missed a target (_common.MISSED_EXIT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    args = p.parse_args()
    chosen = [b.strip() for b in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    passthrough = ["--threads", str(args.threads)] + [f"--{f}" for f in ("quick", "cuda", "strict") if getattr(args, f)]

    checks: list[str] = []
    crashed: list[str] = []
    missed = False
    started = time.perf_counter()
    for name in chosen:
        script = HERE / f"bench_{name}.py"
        print(f"\n######## {script.name} {' '.join(passthrough)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(script), *passthrough], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith(("[PASS]", "[FAIL]")):
                checks.append(line.rstrip())
                missed = missed or line.startswith("[FAIL]")
        code = proc.wait()
        print(f"######## {script.name}: exit {code}, {time.perf_counter() - t0:.0f} s", flush=True)
        if code != 0 and not (args.strict and code == MISSED_EXIT):
            crashed.append(f"{script.name} (exit {code})")

    print(f"\n==== summary ({time.perf_counter() - started:.0f} s{', quick mode' if args.quick else ''}) ====")
    for line in checks:
        print(line)
    n_fail = sum(line.startswith("[FAIL]") for line in checks)
    print(f"{len(checks) - n_fail} PASS, {n_fail} FAIL" + (f"; crashed: {', '.join(crashed)}" if crashed else ""))
    if crashed:
        return 1
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())

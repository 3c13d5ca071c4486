"""Shared helpers for the benchmarks in this folder (run on demand, never in CI).

Every benchmark compares variants measured in ONE run, interleaved round by round
(the order flips every round), after warm-up calls, and reports medians; targets are
ratios or per-call times checked against a threshold and printed as PASS / FAIL lines:

    [PASS] bench_engine: RMT/backbone n=16 (cpu) = 1.031 (target <= 1.10)

run_all.py collects those lines. A missed target does not change the exit status
(unless --strict: then it is MISSED_EXIT): the machine these run on is often shared,
so the numbers are noisy.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `rmt_core` and `app` importable when run as a script

CHECKPOINT = "austen-pydocs-recall"  # the shipped default (rmt_core.DEFAULT_CHECKPOINT)
MISSED_EXIT = 3  # exit status with --strict when a target was missed (a crash exits 1)


# ---------------------------------------------------------------------- arguments
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, few repeats (a few seconds)")
    p.add_argument("--cuda", action="store_true",
                   help="also measure on CUDA when torch.cuda.is_available() (CPU rows are always measured)")
    p.add_argument("--strict", action="store_true", help=f"exit with status {MISSED_EXIT} when a target is missed")
    return p


def segments_option(p: argparse.ArgumentParser, default: Sequence[int]) -> None:
    """--segments: comma-separated segment counts (default `default`; --quick: 1,2); read by segment_counts."""
    p.add_argument("--segments", default=None,
                   help=f"comma-separated segment counts (default {','.join(map(str, default))}; quick 1,2)")
    p.set_defaults(default_segments=list(default))


def segment_counts(args: argparse.Namespace) -> list[int]:
    """The segment counts a run measures (segments_option)."""
    if args.segments:
        return [int(x) for x in args.segments.split(",")]
    return [1, 2] if args.quick else list(args.default_segments)


def setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(max(1, int(args.threads)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")


def devices(args: argparse.Namespace) -> list[str]:
    """["cpu"], plus "cuda" when --cuda was given and a GPU is there."""
    import torch

    out = ["cpu"]
    if getattr(args, "cuda", False):
        if torch.cuda.is_available():
            out.append("cuda")
        else:
            print("note: --cuda given but torch.cuda.is_available() is False: CUDA rows skipped.")
    return out


def load_model(device: str = "cpu"):
    """The shipped default model (fp32 on the CPU, bf16 on CUDA as rmt_core.load chooses)."""
    import rmt_core

    return rmt_core.load(CHECKPOINT, device=device).eval()


def sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def environment_line(args: argparse.Namespace) -> str:
    import platform

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
            f"load average {load:.2f}, python {platform.python_version()}"
            + (", QUICK mode (reduced sizes: verdicts are indicative only)" if args.quick else ""))


# ---------------------------------------------------------------------- timing
def time_call(fn: Callable[[], Any], device: Any = "cpu", clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds fn() takes by `clock` (wall time by default; time.process_time: this process's CPU time)."""
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def cpu_clock(device: Any) -> Callable[[], float]:
    """The clock for a ratio of compute on a shared machine: this process's CPU time (user + system, so
    the time a busy machine makes it wait for a core is left out) on the CPU; wall time on a GPU, whose
    work the process's CPU time does not see."""
    return time.perf_counter if str(device).startswith("cuda") else time.process_time


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                device: Any = "cpu", min_seconds: float = 0.0, max_rounds: int | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each variant, measured round by round, order reversed every round.

    warmup: untimed calls of every variant first. After `rounds` rounds, keeps going until
    `min_seconds` of timed work (wall time) have passed (at most `max_rounds` rounds). clock: what a
    call's seconds are measured by (time_call).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    done = 0
    limit = max_rounds if max_rounds is not None else max(rounds, 1000)
    while done < rounds or (time.perf_counter() - started < min_seconds and done < limit):
        order = names if done % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            times[name].append(time_call(variants[name], device, clock))
        done += 1
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of time[num] / time[den]: both measured in the same round, so a
    slow spell of the machine hits both."""
    return median([a / b for a, b in zip(times[num], times[den])])


def spread(values: Sequence[float]) -> str:
    """min..max of a list of seconds, in ms."""
    return f"{min(values) * 1e3:.1f}..{max(values) * 1e3:.1f}"


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def release_free_memory() -> None:
    """gc, then hand freed heap pages back to the OS (glibc malloc_trim), so a later RSS
    baseline does not include garbage a measured call could reuse."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the process started or since reset_peak_rss(): /proc VmHWM on Linux
    (getrusage's ru_maxrss is not used there: it keeps the parent's peak across fork + exec)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# ---------------------------------------------------------------------- reporting
@dataclass
class Report:
    """A benchmark's output: a title, markdown tables and target checks."""

    name: str
    title: str
    quick: bool = False
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def header(self, args: argparse.Namespace) -> None:
        print(f"== {self.name}: {self.title} ==")
        print(environment_line(args))
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        if title:
            print(f"\n{title}")
        cells = [[_fmt(c) for c in row] for row in rows]
        widths = [max([len(str(col))] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in cells:
            print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
        sys.stdout.flush()

    def check(self, label: str, value: float, target: float, unit: str = "", op: str = "<=", digits: int = 3) -> bool:
        ok = value <= target if op == "<=" else value < target
        text = f"{label} = {value:.{digits}f}{unit} (target {op} {target:g}{unit})"
        self.checks.append((label, ok, text))
        print(f"[{'PASS' if ok else 'FAIL'}] {self.name}: {text}")
        sys.stdout.flush()
        return ok

    def note(self, text: str) -> None:
        print(f"note: {text}")
        sys.stdout.flush()

    def finish(self, args: argparse.Namespace) -> int:
        failed = [c for c in self.checks if not c[1]]
        print(f"\nRESULT {self.name}: {len(self.checks) - len(failed)} PASS, {len(failed)} FAIL"
              + (" (quick mode)" if self.quick else ""))
        sys.stdout.flush()
        return MISSED_EXIT if (failed and args.strict) else 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.3f}"
        return f"{value:.4f}"
    return str(value)


def ms(seconds: float) -> float:
    return seconds * 1e3


def corpus_ids(model, split: str = "heldout", max_chars: int | None = None):
    """(text, ids (T,) int64 numpy, char offsets (T, 2)) of the Austen corpus, tokenised once."""
    import numpy as np

    from rmt_core.token_text import encode_with_offsets
    from rmt_core.training.corpus import load_corpus

    text = load_corpus(split)
    if max_chars is not None:
        text = text[:max_chars]
    ids, spans = encode_with_offsets(model.tokenizer, text)
    return text, np.asarray(ids, dtype=np.int64), np.asarray(spans, dtype=np.int64).reshape(-1, 2)

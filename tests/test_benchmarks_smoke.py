"""Smoke runs of the benchmarks (benchmarks/*.py --quick): each one runs to the end and prints
its table. Timings are never asserted (the benchmarks themselves report PASS/FAIL).

The scripts start together in subprocesses (module fixture), so the file takes about as
long as the slowest of them; each test then waits for its own script.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
TIMEOUT = 240

# Extra flags keep the smoke runs to a few seconds of work each.
RUNS = {
    "bench_engine": (["--segments", "1"], "| device | case"),
    "bench_armt": (["--segments", "1,2"], "| device | case"),
    "bench_trace": (["--max-tokens", "3000", "--doc-tokens", "1500"], "| device | variant"),
    "bench_app": ([], "| device | change"),
    "bench_pages": (["--repeats", "1"], "| page"),
    "bench_attribution": (["--repeats", "1"], "| device | sample"),
    "bench_compare": (["--repeats", "1"], "| case"),
    "bench_documents": ([], "| format"),
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def launched():
    procs = {}
    for name, (extra, _) in RUNS.items():
        procs[name] = subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--quick", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", list(RUNS))
def test_benchmark_quick_run(launched, name):
    proc = launched[name]
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"{name} --quick ran over {TIMEOUT} s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"{name} --quick exited {proc.returncode}:\n{output[-4000:]}"
    header = RUNS[name][1]
    assert f"== {name}:" in output, output[-4000:]
    assert header in output, f"no table header {header!r} in:\n{output[-4000:]}"
    assert f"RESULT {name}:" in output, output[-4000:]

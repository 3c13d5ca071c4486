"""Study throughput, memory and resume (rmt_core.studies) on the shipped default model.

One run measures, on the same grid (default: 5 lengths 2-32 segments x 5 depths x 20 samples,
bAbI "detect", through-memory attribution with 32 integrated-gradient steps):

* samples/s in-process, with 2 local worker processes, and with Ray Data on 2 local actors
  (a local Ray started for it: 2 CPUs, 80 MB object store, no dashboard, no usage statistics).
  "wall" includes starting the workers (processes spawn and load the model; Ray actors too; the
  Ray cluster's own start is timed apart); "steady" is the rate from the first row to the last.
  Target: Ray's steady rate within 1.3x of the process pool's (pool / Ray <= 1.3).
* peak memory flat in the number of samples: in-process, the longest length only, peak RSS
  after 2 rows and after all rows (rows are streamed, no trace kept). Target: growth <= 25 MB.
* resume: a study in a subprocess killed (SIGKILL) half way, then restarted: exactly one row per sample.

    .venv/bin/python benchmarks/bench_study.py [--quick] [--samples N] [--segments 2,4,8,16,32] [--depths ...] [--steps K]
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: E402  (puts the repo root on sys.path)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def timed_run(directory: Path, source, model, executor, config):
    """(wall seconds, steady samples/s, rows) of one study run."""
    from rmt_core.studies.runner import run_study

    stamps: list[float] = []
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        stamps.append(time.perf_counter())

    result = run_study(directory, source, C.CHECKPOINT, model, executor, config, progress)
    wall = time.perf_counter() - start
    rows = stamps[1:]  # the first call reports the rows already there (none)
    steady = (len(rows) - 1) / (rows[-1] - rows[0]) if len(rows) > 1 and rows[-1] > rows[0] else float("nan")
    return wall, steady, result.rows


def memory_run(directory: Path, model, config, segments: int, samples: int) -> tuple[float, float]:
    """(peak RSS MB after 2 rows, after all rows) of an in-process study of the longest length."""
    from rmt_core.studies.runner import run_study
    from rmt_core.studies.source import BabilongSource

    marks: dict[int, int] = {}

    def progress(done: int, total: int) -> None:
        if done == 1:
            C.release_free_memory()
            C.reset_peak_rss()
        if done in (2, total):
            marks[done] = C.peak_rss_bytes()

    source = BabilongSource("detect", [segments], [50], samples, seed=11)
    run_study(directory, source, C.CHECKPOINT, model, None, config, progress)
    return marks[2] / 1e6, marks[samples] / 1e6


def kill_and_resume(directory: Path, model, config) -> tuple[int, int, int]:
    """(rows when killed, rows after the restart, samples): a subprocess study SIGKILLed half way."""
    from rmt_core.studies.rows import done_ids, read_rows, rows_path
    from rmt_core.studies.runner import run_study
    from rmt_core.studies.source import BabilongSource

    source = BabilongSource("detect", [2, 4], [10, 50, 90], 2, seed=5)
    total = len(source.specs())
    script = ("import sys, torch; torch.set_num_threads(1)\n"
              "from rmt_core.studies.source import BabilongSource\n"
              "from rmt_core.studies.measures import MeasureConfig\n"
              "from rmt_core.studies.runner import run_study\n"
              "run_study(sys.argv[1], BabilongSource('detect', [2, 4], [10, 50, 90], 2, seed=5), sys.argv[2],\n"
              f"          config=MeasureConfig(attribution_steps={config.attribution_steps}), flush_rows=1)\n")
    env = dict(os.environ, PYTHONPATH=str(C.ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, str(directory), C.CHECKPOINT], env=env)
    deadline = time.monotonic() + 600
    while len(list(rows_path(directory).glob("part-*.parquet"))) < total // 2 and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed = len(done_ids(directory))
    run_study(directory, source, C.CHECKPOINT, model, None, config)
    ids = [r["sample_id"] for r in read_rows(directory, ["sample_id"])]
    assert len(ids) == len(set(ids)), "a sample has two rows"
    return killed, len(ids), total


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--segments", default="2,4,8,16,32")
    p.add_argument("--depths", default="10,30,50,70,90")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--steps", type=int, default=32, help="integrated-gradient steps of the through-memory attribution")
    p.add_argument("--memory-samples", type=int, default=12)
    args = p.parse_args()
    if args.quick:
        args.segments, args.depths, args.samples, args.memory_samples = "2,4", "10,90", 1, 4
    C.setup(args)
    import ray

    from rmt_core.studies.executors import ProcessPool, RayData
    from rmt_core.studies.measures import MeasureConfig
    from rmt_core.studies.source import BabilongSource

    report = C.Report("bench_study", "study throughput (in-process, 2 processes, Ray 2 actors), memory, resume", args.quick)
    report.header(args)
    model = C.load_model("cpu")
    config = MeasureConfig(attribution_steps=args.steps)
    source = BabilongSource("detect", args.segments, args.depths, args.samples, seed=0)
    n = len(source.specs())
    report.note(f"grid: detect, segments {args.segments}, depths {args.depths}, {args.samples} per cell = {n} samples, "
                f"{args.steps} IG steps")
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))
    rows = []
    try:
        wall, steady, done = timed_run(tmp / "inproc", source, model, None, config)
        rows.append(["in-process", done, wall, n / wall, steady])
        wall, steady, done = timed_run(tmp / "pool", source, model, ProcessPool(2), config)
        rows.append(["2 processes", done, wall, n / wall, steady])
        pool_steady = steady
        ray_exec = RayData("auto", workers=2, num_cpus=2, object_store_memory=80 * 1024 ** 2)
        started = time.perf_counter()
        ray_exec.connect()
        ray_start = time.perf_counter() - started
        try:
            wall, steady, done = timed_run(tmp / "ray", source, model, ray_exec, config)
        finally:
            if ray.is_initialized():
                ray.shutdown()
        rows.append(["Ray Data, 2 actors", done, wall, n / wall, steady])
        report.table(["executor", "rows", "wall s", "samples/s (wall)", "samples/s (steady)"], rows)
        report.note(f"the local Ray cluster took {ray_start:.1f} s to start (not in its wall time)")
        report.check("process pool / Ray steady samples/s", pool_steady / steady, 1.3)
        first, last = memory_run(tmp / "memory", model, config, int(args.segments.split(",")[-1]), args.memory_samples)
        report.table(["peak RSS after 2 rows (MB)", f"after {args.memory_samples} rows (MB)", "growth (MB)"],
                     [[first, last, last - first]], "memory, in-process, longest length only")
        report.check("peak RSS growth over the samples", last - first, 25.0, " MB")
        killed, after, total = kill_and_resume(tmp / "resume", model, config)
        report.table(["samples", "rows when killed", "rows after restart"], [[total, killed, after]], "kill and resume")
        report.check("rows after restart - samples", float(abs(after - total)), 0.0, digits=0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report.finish(args)


if __name__ == "__main__":
    sys.exit(main())

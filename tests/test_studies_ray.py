"""Ray Data executor: a small local Ray (2 CPUs, 80 MB object store, no dashboard, no usage stats)
gives the same rows as this process; an unreachable address is a clear error and nothing is written."""
from __future__ import annotations

import os
import socket
import time

import pytest

from rmt_core.studies.measures import COMPARED, MeasureConfig
from rmt_core.studies.rows import read_rows
from rmt_core.studies.runner import read_study, run_study
from rmt_core.studies.source import BabilongSource, StudyError

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
CONFIG = MeasureConfig(attribution_steps=2)


def grid() -> BabilongSource:
    return BabilongSource("detect", [2, 3], [10, 90], 1, seed=7)


@pytest.fixture(scope="module")
def model():
    import rmt_core

    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")


def test_unreachable_ray_address_is_a_clear_error_and_nothing_is_written(model, tmp_path):
    from rmt_core.studies.executors import RayData

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "study"
    started = time.monotonic()
    with pytest.raises(StudyError, match=f"cannot reach Ray at 127.0.0.1:{port}.*Nothing was measured or written"):
        run_study(out, grid(), "austen-pydocs-recall", model, RayData(f"127.0.0.1:{port}"), CONFIG)
    assert time.monotonic() - started < 10
    assert not out.exists()
    with pytest.raises(StudyError, match="not host:port"):
        run_study(out, grid(), "austen-pydocs-recall", model, RayData("nowhere"), CONFIG)


@pytest.mark.slow
def test_local_ray_gives_the_same_rows_as_this_process(model, tmp_path):
    pytest.importorskip("ray")
    import ray

    from rmt_core.studies.executors import RayData

    here = tmp_path / "here"
    run_study(here, grid(), "austen-pydocs-recall", model, config=CONFIG)
    there = tmp_path / "ray"
    executor = RayData("auto", workers=2, num_cpus=2, object_store_memory=80 * 1024 ** 2)
    try:
        result = run_study(there, grid(), "austen-pydocs-recall", model, executor, CONFIG)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert result.complete
    info = read_study(there)["executor"]
    assert info["kind"] == "ray" and info["actors"] == 2 and info["gpus_per_actor"] == 0 and info["started_here"]
    ours = {r["sample_id"]: r for r in read_rows(here)}
    theirs = {r["sample_id"]: r for r in read_rows(there)}
    assert set(ours) == set(theirs) and len(theirs) == 4
    for sid in ours:
        for column in COMPARED:
            assert theirs[sid][column] == ours[sid][column], (sid, column)

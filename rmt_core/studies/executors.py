"""Who measures a study's samples: this process, N local worker processes, or Ray Data.

All three run :func:`rmt_core.studies.measures.measure_spec` on the same specs with the same
model (each worker loads the checkpoint once and checks its weight hash against the study's),
so they give the same rows; only the ``seconds`` column and the order rows arrive in differ.
Rows are yielded as they finish; the runner writes them.

* :class:`InProcess` — the default: the model already loaded here.
* :class:`ProcessPool` — N processes (``multiprocessing``, spawn), each loading the model once.
* :class:`RayData` — ``ray.data.from_items(specs).map_batches(<actor class>, concurrency=N)``:
  an actor pool loading the model once per actor, one GPU per actor when the cluster has GPUs
  (Ray Data's streaming execution hands back rows as actors finish them). ``address="auto"``
  joins the running cluster (``RAY_ADDRESS``, or one started by ``ray start`` here), else starts
  a local Ray for the study; an explicit address that cannot be reached raises StudyError
  before anything is measured or written. Ray's usage statistics are turned off.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .measures import MeasureConfig, measure_spec
from .source import SampleSpec, StudyError, source_from_spec


@dataclass(frozen=True)
class Job:
    """What a worker needs: the checkpoint to load (name or path), the weight hash it must have,
    the source's spec (to rebuild the samples), the measure config and torch threads per worker."""

    checkpoint: str
    weights_hash: str
    source: dict[str, Any]
    config: MeasureConfig
    threads: int = 1


def load_checked(job: Job, device: str | None = "cpu"):
    """The job's model, loaded once per worker; StudyError when its weights are not the study's."""
    import torch

    from ..io.checkpoint import load

    torch.set_num_threads(max(1, int(job.threads)))
    model = load(job.checkpoint, device=device)
    if model.weights_hash() != job.weights_hash:
        raise StudyError(f"worker loaded {job.checkpoint!r} with weights {model.weights_hash()}, but the study "
                         f"was started with weights {job.weights_hash}: every worker must see the same checkpoint.")
    return model.eval()


class InProcess:
    """Measure every sample here, with the model the caller loaded."""

    name = "in-process"

    def __init__(self, model) -> None:
        self.model = model

    def describe(self) -> dict[str, Any]:
        import torch

        return {"kind": self.name, "torch_threads": torch.get_num_threads(), "device": str(self.model.device)}

    def run(self, job: Job, specs: Sequence[SampleSpec]) -> Iterator[dict[str, Any]]:
        source = source_from_spec(job.source)
        self.model.eval()
        for spec in specs:
            yield measure_spec(self.model, source, spec, job.config)


# ---------------------------------------------------------------------- local processes
_WORKER: dict[str, Any] = {}


def _init_worker(job: Job) -> None:
    _WORKER["model"] = load_checked(job)
    _WORKER["source"] = source_from_spec(job.source)
    _WORKER["config"] = job.config


def _work(spec: SampleSpec) -> dict[str, Any]:
    return measure_spec(_WORKER["model"], _WORKER["source"], spec, _WORKER["config"])


class ProcessPool:
    """`workers` local processes (spawned), each loading the model once."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise StudyError(f"workers must be a whole number >= 1, got {workers!r}.")
        self.workers = workers

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "workers": self.workers, "torch_threads_per_worker": 1, "device": "cpu"}

    def run(self, job: Job, specs: Sequence[SampleSpec]) -> Iterator[dict[str, Any]]:
        import multiprocessing as mp

        if not specs:
            return
        pool = mp.get_context("spawn").Pool(min(self.workers, len(specs)), initializer=_init_worker, initargs=(job,))
        try:
            yield from pool.imap_unordered(_work, specs, chunksize=1)
        finally:
            pool.terminate()
            pool.join()


# ---------------------------------------------------------------------- Ray Data
class _RayMeasure:
    """Ray Data actor: loads the model once, measures one batch of specs (JSON strings)."""

    def __init__(self, job_json: str, use_gpu: bool) -> None:
        job = _job_from_json(job_json)
        self.model = load_checked(job, device=None if use_gpu else "cpu")
        self.source = source_from_spec(job.source)
        self.config = job.config

    def __call__(self, batch):
        import pyarrow as pa

        from .rows import schema

        rows = [measure_spec(self.model, self.source, SampleSpec(**json.loads(s)), self.config)
                for s in batch["spec"].to_pylist()]
        return pa.Table.from_pylist(rows, schema=schema())


def _job_json(job: Job) -> str:
    return json.dumps({"checkpoint": job.checkpoint, "weights_hash": job.weights_hash, "source": job.source,
                       "config": job.config.to_dict(), "threads": job.threads})


def _job_from_json(text: str) -> Job:
    data = json.loads(text)
    return Job(data["checkpoint"], data["weights_hash"], data["source"], MeasureConfig(**data["config"]), data["threads"])


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """StudyError unless something listens at a Ray address ("host:port" or "ray://host:port")."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001); "
                         "use --ray auto for the cluster on this machine.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise StudyError(f"cannot reach Ray at {address} ({exc.strerror or exc}): start the cluster (ray start --head) "
                         "or check the address. Nothing was measured or written.") from None


class RayData:
    """Ray Data: an actor pool of `workers` actors (None = one per CPU, or per GPU when there are GPUs).

    address: "auto" (join the running cluster, else start a local one) or a cluster's address.
    init_kwargs: extra ray.init arguments for a local Ray (e.g. num_cpus=2, object_store_memory=80e6).
    """

    name = "ray"

    def __init__(self, address: str = "auto", workers: int | None = None, **init_kwargs: Any) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise StudyError(f"workers must be a whole number >= 1, got {workers!r}.")
        self.address, self.workers, self.init_kwargs = address, workers, init_kwargs
        self._started_here = False
        self._gpus = 0
        self._resources: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        import ray

        return {"kind": self.name, "address": self.address, "ray_version": ray.__version__,
                "actors": self._actors(), "gpus_per_actor": 1 if self._gpus else 0,
                "cluster_cpus": self._resources.get("CPU"), "cluster_gpus": self._resources.get("GPU", 0),
                "started_here": self._started_here, "torch_threads_per_actor": 1}

    def connect(self) -> None:
        """Join or start Ray; StudyError (nothing written) when it cannot."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:
            raise StudyError("Ray is not installed: pip install the pinned 'ray[data]' of requirements.txt.") from None
        if ray.is_initialized():
            self._resources = ray.cluster_resources()
        elif self.address != "auto":
            check_reachable(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
                raise StudyError(f"cannot join Ray at {self.address}: {exc}. Nothing was measured or written.") from None
        else:
            try:
                ray.init(address="auto", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError):
                kwargs = {"include_dashboard": False, "log_to_driver": False} | self.init_kwargs
                ray.init(**kwargs)
                self._started_here = True
        self._resources = ray.cluster_resources()
        self._gpus = int(self._resources.get("GPU", 0))

    def _actors(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, self._gpus or int(self._resources.get("CPU", 1)))

    def run(self, job: Job, specs: Sequence[SampleSpec]) -> Iterator[dict[str, Any]]:
        import ray

        if not ray.is_initialized():
            self.connect()
        if not specs:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # rows are the progress; the runner reports them
        ctx.enable_operator_progress_bars = False
        ds = ray.data.from_items([{"spec": json.dumps(s.to_dict())} for s in specs], override_num_blocks=len(specs))
        results = ds.map_batches(_RayMeasure, fn_constructor_kwargs={"job_json": _job_json(job), "use_gpu": self._gpus > 0},
                                 batch_size=1, batch_format="pyarrow",
                                 compute=ray.data.ActorPoolStrategy(size=min(self._actors(), len(specs))),
                                 num_cpus=0 if self._gpus else 1, num_gpus=1 if self._gpus else 0)
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from batch.to_pylist()
        finally:
            if self._started_here:
                ray.shutdown()


def make_executor(model=None, workers: int | None = None, ray: str | None = None, **ray_init: Any):
    """The executor the CLI and the app ask for: Ray when `ray` is given, N processes for workers > 1
    (or 1 process when workers == 1 and no model is given), else in-process with `model`."""
    if ray is not None:
        return RayData(ray, workers, **ray_init)
    if workers is not None and (workers > 1 or model is None):
        return ProcessPool(workers)
    if model is None:
        raise StudyError("in-process studies need the loaded model.")
    return InProcess(model)


__all__ = ["Job", "InProcess", "ProcessPool", "RayData", "make_executor", "check_reachable", "load_checked"]

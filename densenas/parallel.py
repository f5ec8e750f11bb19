"""Executors of the one search loop: candidates one at a time in this process, or N at a time on Ray actors.

The driver (:func:`densenas.loop.run`) alone owns the strategy (ask/tell, Optuna style) and the SQLite history;
an executor only trains the candidates it is handed (a :class:`Job`: row id, arch, seed and the snapshot of
finished results the evaluator's early-stopping running mean is rebuilt from, Nekrasov et al., CVPR 2019) and
hands back :class:`Done` records. Two executors share that interface:

- :class:`InProcessExecutor`: ``evaluator.evaluate(arch, seed)`` here, one job at a time (the default path,
  ``parallel.workers=1``);
- :class:`densenas.ray_executor.RayExecutor`: N Ray actors (Moritz et al., "Ray: A Distributed Framework for
  Emerging AI Applications", OSDI 2018), each holding one copy of the driver's evaluator shipped once through
  the object store; a worker or node that dies mid-candidate is replaced and the candidate retried once.

The config section (``parallel = dict(...)``, or ``tools/search.py --workers N --address HOST:PORT``) is
:class:`ParallelCfg`; :func:`make_executor` builds the executor it names.
"""
from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .arch import Arch
from .result import Result

MODES = ("pipeline", "batch", "async")
__all__ = ["ParallelCfg", "Job", "Done", "Executor", "InProcessExecutor", "evaluate_one", "make_executor",
           "check_address", "MODES"]


@dataclass
class ParallelCfg:
    """``parallel = dict(...)`` in a search config (``--workers`` / ``--address`` override it).

    Attributes:
        workers: candidates in flight at once. ``1`` (without ``address``): the in-process path, no Ray.
            ``"auto"`` (the default; :func:`auto_workers`): one one-thread candidate per CPU core this
            process may use, at most one per 2 GiB of available memory, or one per GPU on a machine
            with several; a one-shot (supernet) search always 1. ``DENSENAS_WORKERS=N`` in the
            environment replaces ``"auto"`` by ``N`` (the test suite sets 1).
        mode: ``"pipeline"`` (the default): keep ``batch`` in flight, record them in row order (a candidate
            that finishes before an older one waits for it), proposing one arch as each is recorded while the
            others train (deterministic given the seed and ``batch``, whatever the worker count or finish
            order); ``"batch"``: propose ``batch`` archs at once, wait for all, observe them in row order
            (deterministic too, but every worker waits for the slowest of its batch); ``"async"``: keep
            ``workers`` in flight, proposing one arch as each finishes, in finishing order (not reproducible).
        batch: candidates in flight in pipeline mode, archs per batch in batch mode (default: ``workers``).
        cpus_per_worker: CPU threads (``torch.set_num_threads``) and Ray CPUs per worker; default
            ``max(1, cpu_count // workers)``; with 1 worker in-process, ``None`` leaves torch's default.
        gpus_per_worker: Ray GPUs per worker (fractions allowed); a worker given one trains on CUDA.
        retries: how often a candidate whose worker or node died is retried on a fresh worker.
        address: join a running Ray cluster (``"auto"`` or ``"HOST:PORT"`` of ``ray start --head``);
            ``None``: start a local Ray instance (bound to 127.0.0.1) when ``workers > 1``.
    """

    workers: int | str = "auto"
    mode: str = "pipeline"
    batch: int | None = None
    cpus_per_worker: int | None = None
    gpus_per_worker: float = 0
    retries: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, low: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"parallel.{name} must be an integer >= {low}, got {value!r}")

        if self.workers != "auto":
            positive_int("workers", self.workers)
        if self.mode not in MODES:
            raise ValueError(f"parallel.mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.batch is not None:
            positive_int("batch", self.batch)
        if self.cpus_per_worker is not None:
            positive_int("cpus_per_worker", self.cpus_per_worker)
        positive_int("retries", self.retries, low=0)
        if isinstance(self.gpus_per_worker, bool) or not isinstance(self.gpus_per_worker, (int, float)) \
                or self.gpus_per_worker < 0:
            raise ValueError(f"parallel.gpus_per_worker must be a number >= 0, got {self.gpus_per_worker!r}")
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"parallel.address must be 'auto' or 'HOST:PORT', got {self.address!r}")

    @property
    def use_ray(self) -> bool:
        """Whether candidates run on Ray actors (``workers > 1`` or a cluster ``address``)."""
        return self.count > 1 or self.address is not None

    @property
    def count(self) -> int:
        """``workers`` as a number: ``"auto"`` is resolved by :func:`densenas.build.parallel_cfg` (which knows
        the device and the search kind); a config built here directly gets a CPU machine's rule."""
        if self.workers == "auto":
            return auto_workers()[0]
        return int(self.workers)

    @property
    def batch_size(self) -> int:
        """Candidates in flight in pipeline mode, archs proposed at once in batch mode."""
        return int(self.batch or self.count)

    def threads(self, cpu_count: int | None = None) -> int:
        """Torch threads (and Ray CPUs) of one worker."""
        if self.cpus_per_worker is not None:
            return int(self.cpus_per_worker)
        return max(1, (cpu_count or os.cpu_count() or 1) // self.count)


AUTO_ENV = "DENSENAS_WORKERS"
WORKER_MEMORY = 2 << 30
"""Memory allowed per worker by ``workers="auto"``: a proxy-search worker peaked at 1.5-1.6 GB RSS
(depth and keypoint searches, measured), the driver aside."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or ``taskset``'s share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(cuda_devices: int = 0, one_shot: bool = False) -> tuple[int, str]:
    """What ``workers="auto"`` means on this machine, and why (for the log).

    Args:
        cuda_devices: GPUs the search would train on (0: it trains on the CPU).
        one_shot: a supernet search (one process trains it; it scales out with ``dist_search.sh``).

    Returns:
        ``(workers, reason)``.
    """
    env = os.environ.get(AUTO_ENV)
    if env is not None:
        if not env.strip().isdigit() or int(env) < 1:
            raise ValueError(f"{AUTO_ENV}={env!r} in the environment: must be a positive integer")
        return int(env), f"{AUTO_ENV}={env}"
    if one_shot:
        return 1, "a one-shot search trains one supernet"
    if cuda_devices > 0:
        return cuda_devices, f"{cuda_devices} GPU(s), one candidate each"
    cores = usable_cores()
    try:
        import psutil  # a Ray dependency; without it the memory cap is skipped

        by_memory = max(1, int(psutil.virtual_memory().available // WORKER_MEMORY))
    except ImportError:
        by_memory = cores
    n = max(1, min(cores, by_memory))
    why = f"{cores} CPU core(s)" + (f", memory for {by_memory}" if by_memory < cores else "")
    return n, f"{why}, one one-thread candidate each"


@dataclass
class Job:
    """One candidate handed to an executor.

    Attributes:
        cid: its history row.
        arch: the architecture.
        seed: its training seed.
        snapshot: finished results (row order) to ``evaluator.restore`` before training, so the early-stopping
            running mean is the driver's; ``None``: the evaluator keeps its own (the sequential path).
        scale: ``None``: the search's own budget (``evaluator.evaluate``); a number: a promoted budget of
            that many times the iterations (``evaluator.evaluate_at``, :mod:`densenas.promotion`).
    """

    cid: int
    arch: Arch
    seed: int
    snapshot: list[Result] | None = None
    scale: float | None = None


@dataclass
class Done:
    """A finished job: its result, the worker that ran it and what happened on the way (retries)."""

    job: Job
    result: Result
    worker: str = "in-process"
    attempts: int = 1
    notes: list[str] = field(default_factory=list)


class Executor(Protocol):
    """What the loop needs of an executor."""

    workers: int

    def submit(self, job: Job) -> None: ...

    def wait(self) -> Done: ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


def evaluate_one(evaluator: Any, space: Any, arch: Arch, seed: int, snapshot: list[Result] | None,
                 scale: float | None = None) -> Result:
    """Check and train one arch; an exception inside the candidate becomes a failed :class:`Result`.

    With ``snapshot`` the evaluator's running mean is rebuilt from it first (``evaluator.restore``); with
    ``scale`` it trains at that promoted budget (``evaluator.evaluate_at(arch, seed, scale)``).
    """
    started = time.perf_counter()
    try:
        if snapshot is not None and getattr(evaluator, "restore", None) is not None:
            evaluator.restore(snapshot)
        space.check(arch)
        result = (evaluator.evaluate(arch, seed=seed) if scale is None else
                  evaluator.evaluate_at(arch, seed=seed, scale=scale))
    except Exception as e:  # an evaluator bug must not lose the search
        result = Result.failed(f"{type(e).__name__}: {e}")
    if not result.wall_time:
        result.wall_time = time.perf_counter() - started
    return result


class InProcessExecutor:
    """Runs each submitted job here, in submission order, when the loop waits for it (one worker).

    Args:
        evaluator: has ``evaluate(arch, seed)`` (and optionally ``restore(results)``).
        space: checks each arch before training.
        threads: ``torch.set_num_threads`` for the candidates (``None``: leave torch's setting alone).
    """

    workers = 1

    def __init__(self, evaluator: Any, space: Any, threads: int | None = None):
        self.evaluator, self.space = evaluator, space
        self.queue: deque[Job] = deque()
        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def in_flight(self) -> int:
        return len(self.queue)

    def wait(self) -> Done:
        """Train the oldest submitted job and return it."""
        job = self.queue.popleft()
        return Done(job, evaluate_one(self.evaluator, self.space, job.arch, job.seed, job.snapshot, job.scale))

    def running(self) -> list[tuple[int, str]]:
        return [(j.cid, "in-process") for j in self.queue]

    def close(self) -> None:
        self.queue.clear()

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_address(address: str | None, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not Ray's minute of retries) when ``HOST:PORT`` has nothing listening.

    ``"auto"`` and ``None`` are left to Ray (it finds the local cluster or says there is none).

    Raises:
        ValueError: malformed address, or nothing accepts a connection there (names the address).
    """
    if address in (None, "auto"):
        return
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"parallel.address must be 'auto' or 'HOST:PORT' (the address `ray start --head` "
                         f"prints), got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"no Ray cluster at {address}: {e} (start one with `ray start --head --port "
                         f"{port}`, or drop --address to start a local Ray instance)") from None


def make_executor(cfg: ParallelCfg, evaluator: Any, space: Any, *, log: Callable[[str], None] = print,
                  connection: tuple[bool, str | None] | None = None) -> Any:
    """The executor ``cfg`` names: in-process for one worker without ``address``, else Ray actors.

    Args:
        connection: what :func:`densenas.ray_executor.start_ray` returned when the caller connected first
            (the executor then owns it: ``close()`` shuts down the instance it started).
    """
    if not cfg.use_ray:
        return InProcessExecutor(evaluator, space, threads=cfg.cpus_per_worker)
    from .ray_executor import RayExecutor

    return RayExecutor(evaluator, space, cfg, log=log, connection=connection)

"""Candidates on N Ray actors (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications",
OSDI 2018): the executor of :mod:`densenas.parallel` behind ``tools/search.py --workers N [--address ...]``.

The driver's evaluator (task data, encoder, cached encoder features, teacher targets) is put into the object
store once (``ray.put``), its large tensors shared zero-copy by every worker of a node
(:mod:`densenas.ray_share`); each actor unpickles it once, sets ``torch.set_num_threads(cpus_per_worker)``,
moves it to CUDA when Ray gave the actor a GPU, and then trains the candidates it is sent. Before each one
it restores the driver's snapshot of finished results, so the early-stopping running mean is the driver's.

Faults: a worker process or node that dies mid-candidate (``ActorDiedError``, ``WorkerCrashedError``,
``NodeDiedError``, ``ObjectLostError``, ...) is replaced by a fresh actor and the candidate retried there
(``parallel.retries`` times); after that the candidate is a failed row, "worker died: ...". An exception
inside a candidate stays a failed row, as in one process.

A local instance (no ``address``) listens on 127.0.0.1 only: Ray 2.60 replaces a ``_node_ip_address`` of
127.0.0.1 by the machine's address (``ray._private.services.resolve_ip_for_localhost``) and its servers
listen on every interface, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before ``ray`` is imported
(``ray_constants.ENABLE_RAY_CLUSTER``); then GCS, raylet, object manager and workers bind to 127.0.0.1.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable

from .parallel import Done, Job, ParallelCfg, check_address, evaluate_one
from .ray_share import shared_tensors
from .result import Result

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local instance binds to 127.0.0.1 only

__all__ = ["RayExecutor", "start_ray", "move_to", "LOOPBACK_ENV"]


def start_ray(cfg: ParallelCfg, log: Callable[[str], None] = print) -> tuple[bool, str | None]:
    """Connect to ``cfg.address`` or start a local instance (unless this process is connected already).

    Returns:
        (whether this call started the connection, the temp dir of a local instance or ``None``).

    Raises:
        ValueError: nothing listens at ``cfg.address``, or Ray cannot connect (names the address).
    """
    if cfg.address is None:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # read when ray is imported: must come first
    import ray

    if ray.is_initialized():
        return False, None
    check_address(cfg.address)
    t0 = time.perf_counter()
    if cfg.address is not None:
        log(f"ray: joining the cluster at {cfg.address} ...")
        try:
            ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ValueError(f"cannot join the Ray cluster at {cfg.address}: {e}") from None
        res = ray.cluster_resources()
        log(f"ray: joined in {time.perf_counter() - t0:.1f}s: {len(ray.nodes())} node(s), "
            f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
        return True, None
    cpus = max(os.cpu_count() or 1, cfg.count * cfg.threads())  # Ray CPUs are bookkeeping, not cores
    # a short path: Ray's unix sockets live under it (at most 107 characters)
    tmp = tempfile.mkdtemp(prefix="densenas_ray_", dir="/tmp")
    log(f"ray: starting a local instance ({cpus} CPUs, 127.0.0.1 only, temp dir {tmp}) ...")
    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=tmp,
             logging_level=logging.WARNING, log_to_driver=False)
    log(f"ray: started in {time.perf_counter() - t0:.1f}s")
    return True, tmp


def move_to(obj: Any, device: Any, _seen: set[int] | None = None) -> Any:
    """Move the tensors, modules and ``torch.device`` attributes reachable from a densenas object (an
    evaluator, its task, its feature caches) to ``device``, in place; returns the moved object.

    Written here because an evaluator is a graph of plain objects, not one ``nn.Module``: we walk the
    attributes of densenas classes and the lists, tuples and dicts they hold.
    """
    import torch
    from torch import nn

    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, (nn.Module, torch.Tensor)):
        return obj.to(device)
    if isinstance(obj, torch.device):
        return torch.device(device)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = move_to(obj[k], device, seen)
    elif isinstance(obj, list):
        obj[:] = [move_to(v, device, seen) for v in obj]
    elif type(obj) is tuple:
        moved = tuple(move_to(v, device, seen) for v in obj)
        # the same tuple when nothing in it moved: frozen values (an Arch's choices) stay untouched
        return obj if all(m is v for m, v in zip(moved, obj)) else moved
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] == "densenas":
        for k, v in list(vars(obj).items()):
            moved = move_to(v, device, seen)
            if moved is not v:
                # object.__setattr__: a frozen dataclass holding a tensor is moved too (setattr would raise)
                object.__setattr__(obj, k, moved)
    return obj


def _logs_of(evaluator: Any) -> list[tuple[Any, Any]]:
    """(object, its ``log``) for the evaluator and what it wraps (``CostAware.inner``): a ``log`` writing
    to the driver's search.log holds an open file that cannot be pickled; workers print instead."""
    out, obj = [], evaluator
    while obj is not None and len(out) < 8:
        attrs = getattr(obj, "__dict__", {})
        if callable(attrs.get("log")):
            out.append((obj, attrs["log"]))
        obj = attrs.get("inner")
    return out


class EvalWorker:
    """One Ray actor: one copy of the evaluator, built once from the object store."""

    def __init__(self, payload: tuple[Any, Any], threads: int, name: str):
        import ray
        import torch

        torch.set_num_threads(int(threads))
        self.evaluator, self.space = payload
        gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        if gpu:
            move_to(self.evaluator, self.device)
        ip = ray.util.get_node_ip_address()
        self.name = f"{name} (pid {os.getpid()} on {ip}, {self.device}, {threads} thread(s))"

    def describe(self) -> tuple[str, str]:
        import ray

        return self.name, ray.get_runtime_context().get_node_id()

    def evaluate(self, arch: Any, seed: int, snapshot: list[Result] | None, scale: float | None = None
                 ) -> tuple[Result, str]:
        return evaluate_one(self.evaluator, self.space, arch, seed, snapshot, scale), self.name


class RayExecutor:
    """``cfg.count`` actors, each evaluating one candidate at a time; jobs beyond them wait here.

    Args:
        evaluator: the driver's built evaluator (moved to the CPU before shipping; unused here afterwards).
        space: checks each arch.
        cfg: the ``parallel`` section (workers, resources, retries, address).
        log: progress messages (start-up, shipping, retries).
        connection: :func:`start_ray`'s answer when the caller connected already (``None``: connect now).
    """

    def __init__(self, evaluator: Any, space: Any, cfg: ParallelCfg, log: Callable[[str], None] = print,
                 connection: tuple[bool, str | None] | None = None):
        import ray

        self.cfg, self.log, self.workers = cfg, log, cfg.count
        self.owned, self.temp_dir = connection if connection is not None else start_ray(cfg, log)
        self.ray = ray
        self.actors: dict[int, Any] = {}
        self.names: dict[int, str] = {}
        self.nodes: dict[int, str] = {}
        self.idle: list[int] = []
        self.queue: list[tuple[Job, int, list[str]]] = []
        self.running_refs: dict[Any, tuple[Job, int, int, list[str]]] = {}
        self._count = 0
        try:
            self._start(evaluator, space)
        except BaseException:  # no half-started instance left behind
            self.close()
            raise

    def _start(self, evaluator: Any, space: Any) -> None:
        import torch

        cfg, log, ray = self.cfg, self.log, self.ray
        self.threads = cfg.threads(int(ray.cluster_resources().get("CPU", 0)) or None)
        t0 = time.perf_counter()
        move_to(evaluator, torch.device("cpu"))
        logs = _logs_of(evaluator)
        try:
            for obj, _ in logs:
                obj.log = print
            with shared_tensors():  # one copy of the images and cached features per node, not per worker
                self.payload = ray.put((evaluator, space))
        finally:
            for obj, fn in logs:
                obj.log = fn
        size = self._size(self.payload)
        log(f"ray: evaluator shipped once to the object store: {size / 2**20:.1f} MB in "
            f"{time.perf_counter() - t0:.1f}s")
        self.actor_cls = ray.remote(EvalWorker)
        t0 = time.perf_counter()
        for _ in range(cfg.count):
            self._spawn()
        for i, (name, node) in zip(list(self.actors), ray.get([a.describe.remote() for a in self.actors.values()])):
            self.names[i], self.nodes[i] = name, node
        log(f"ray: {cfg.count} workers ready in {time.perf_counter() - t0:.1f}s: "
            + ", ".join(self.names.values()))

    @staticmethod
    def _size(ref: Any) -> int:
        try:
            from ray.experimental import get_object_locations

            return int(get_object_locations([ref])[ref].get("object_size") or 0)
        except Exception:  # noqa: BLE001 - only the progress line needs it
            return 0

    def _spawn(self) -> int:
        """A fresh actor (spread over the nodes); returns its index."""
        self._count += 1
        i = self._count
        opts = dict(num_cpus=self.threads, num_gpus=self.cfg.gpus_per_worker, max_restarts=0,
                    max_task_retries=0, scheduling_strategy="SPREAD")
        self.actors[i] = self.actor_cls.options(**opts).remote(self.payload, self.threads, f"w{i}")
        self.names[i] = f"w{i}"
        self.idle.append(i)
        return i

    def _retire(self, i: int) -> None:
        actor = self.actors.pop(i, None)
        if i in self.idle:
            self.idle.remove(i)
        if actor is not None:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - it is dead already
                pass

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            job, attempts, notes = self.queue.pop(0)
            i = self.idle.pop(0)
            ref = self.actors[i].evaluate.remote(job.arch, job.seed, job.snapshot, job.scale)
            self.running_refs[ref] = (job, i, attempts, notes)

    def submit(self, job: Job) -> None:
        self.queue.append((job, 1, []))
        self._dispatch()

    def in_flight(self) -> int:
        return len(self.queue) + len(self.running_refs)

    def running(self) -> list[tuple[int, str, str]]:
        """(row id, worker name, node id) of each candidate being trained now."""
        return [(job.cid, self.names.get(i, f"w{i}"), self.nodes.get(i, "")) for job, i, _, _ in
                self.running_refs.values()]

    def wait(self) -> Done:
        """The next candidate to finish (a dead worker's candidate is retried first, see the module doc)."""
        from ray.exceptions import RayError, RayTaskError

        while True:
            ready, _ = self.ray.wait(list(self.running_refs), num_returns=1)
            ref = ready[0]
            job, i, attempts, notes = self.running_refs.pop(ref)
            name = self.names.get(i, f"w{i}")
            try:
                result, name = self.ray.get(ref)
            except RayTaskError as e:  # raised in the actor outside the candidate (e.g. unpickling an arch)
                result = Result.failed(f"{type(e.cause).__name__}: {e.cause}")
            except RayError as e:  # the worker process or its node died: replace it, retry the candidate
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                self._retire(i)
                new = self._spawn()
                if attempts <= self.cfg.retries:
                    note = f"worker {name} died ({type(e).__name__}: {reason}); retried on w{new}"
                    self.log(f"  #{job.cid}: {note}")
                    self.queue.insert(0, (job, attempts + 1, notes + [note]))
                    self._dispatch()
                    continue
                self._dispatch()
                return Done(job, Result.failed(f"worker died: {type(e).__name__}: {reason}"), name, attempts,
                            notes + [f"worker {name} died; no retry left"])
            self.idle.append(i)
            self._dispatch()
            return Done(job, result, name, attempts, notes)

    def close(self) -> None:
        """Stop the actors; shut down the Ray instance (and remove its temp dir) when this executor started it."""
        for i in list(self.actors):
            self._retire(i)
        if self.owned:
            self.ray.shutdown()
            self.owned = False
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

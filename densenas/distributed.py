"""Data-parallel runs on ``torch.distributed``: process-group set-up from a launcher and small helpers.

One process per GPU (or, without CUDA, per CPU worker on the gloo backend), started by ``torchrun`` /
``python -m torch.distributed.run`` (``--launcher pytorch``, what ``tools/dist_train.sh`` and
``tools/dist_search.sh`` call) or by Slurm's ``srun`` (``--launcher slurm``), as in OpenMMLab's tools
(mmengine ``init_dist``). The fine-tuning tools hand the group to mmengine's ``Runner``
(``MMDistributedDataParallel``); the one-shot supernet trainer (:mod:`densenas.evaluation.supernet`) uses
the helpers here directly: every rank starts from rank 0's weights (:func:`broadcast_module`), draws its
shard of each global batch (:func:`shard`) and sums the shard-weighted gradients of the weights *and* of the
architecture parameters over all ranks (:func:`all_reduce_grads`), so a step on ``N`` processes is the
step of one process on the whole batch, up to floating-point summation order.

Why our own set-up instead of mmengine's ``init_dist``: it calls ``torch.cuda.set_device`` unconditionally,
which fails on a machine without CUDA, and it reads the launcher's variables with a bare ``KeyError``;
here a CPU machine gets gloo and a missing variable is named.
"""
from __future__ import annotations

import atexit
import datetime
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

LAUNCHERS = ("none", "pytorch", "slurm")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODELIST")
DEFAULT_PORT = 29500

__all__ = ["LAUNCHERS", "LaunchError", "check_env", "init", "default_backend", "cuda_count", "is_distributed", "rank",
           "world_size", "local_rank", "is_main", "barrier", "main_first", "rank_work_dir", "agree",
           "broadcast_module", "broadcast_tensor", "shard", "all_reduce_grads",
           "cpu_safe_norms", "setup_runner", "destroy"]


class LaunchError(RuntimeError):
    """The launcher's environment is missing or inconsistent (the message names the variables)."""


def default_backend() -> str:
    """``nccl`` with CUDA, else ``gloo`` (the one backend torch ships for CPU tensors on every platform)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def check_env(launcher: str, local_rank: int | None = None) -> None:
    """Refuse, naming them, missing variables of the launcher (before anything waits for other processes).

    Raises:
        LaunchError: unknown launcher or missing variables.
    """
    env = os.environ
    if launcher not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {launcher!r}; available: {list(LAUNCHERS)}")
    if launcher == "pytorch":
        if local_rank is not None and "LOCAL_RANK" not in env:  # torch.distributed.launch --local-rank N
            env["LOCAL_RANK"] = str(local_rank)
        missing = [k for k in TORCHRUN_VARS if k not in env]
        if missing:
            raise LaunchError(
                f"--launcher pytorch: environment variable(s) {', '.join(missing)} not set; start the processes "
                f"with torchrun (python -m torch.distributed.run --nproc_per_node N ...), tools/dist_train.sh "
                f"CONFIG N or tools/dist_search.sh CONFIG N, or use --launcher none for one process")
    elif launcher == "slurm":
        missing = [k for k in SLURM_VARS if k not in env]
        if missing:
            raise LaunchError(f"--launcher slurm: environment variable(s) {', '.join(missing)} not set; start "
                              f"the processes with srun (one task per GPU)")


def _launcher_env(launcher: str, local_rank: int | None) -> dict[str, str]:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT of this process, from the launcher."""
    check_env(launcher, local_rank)
    env = os.environ
    if launcher == "pytorch":
        return {k: env[k] for k in TORCHRUN_VARS}
    if launcher == "slurm":
        addr = env.get("MASTER_ADDR")
        if addr is None:  # the first host of the allocation, as mmengine's _init_dist_slurm does
            try:
                out = subprocess.run(["scontrol", "show", "hostname", env["SLURM_NODELIST"]], check=True,
                                     capture_output=True, text=True).stdout
            except (OSError, subprocess.CalledProcessError) as e:
                raise LaunchError(f"--launcher slurm: cannot resolve the master host from SLURM_NODELIST="
                                  f"{env['SLURM_NODELIST']!r} ({e}); set MASTER_ADDR") from None
            addr = out.split()[0]
        return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"], "LOCAL_RANK": env["SLURM_LOCALID"],
                "MASTER_ADDR": addr, "MASTER_PORT": env.get("MASTER_PORT", str(DEFAULT_PORT))}
    raise LaunchError(f"unknown launcher {launcher!r}; available: {list(LAUNCHERS)}")


def init(launcher: str = "none", backend: str | None = None, *, local_rank: int | None = None,
         timeout_s: float | None = None) -> tuple[int, int]:
    """Join the process group the launcher started (nothing for ``none`` or when already joined).

    With CUDA, this process's device becomes ``cuda:LOCAL_RANK`` (so ``device="auto"``/``"cuda"`` is the
    process's own GPU).

    Args:
        launcher: ``none``, ``pytorch`` (torchrun) or ``slurm`` (srun).
        backend: ``nccl`` / ``gloo`` / ``mpi``; default :func:`default_backend`.
        local_rank: ``--local-rank`` of the legacy ``torch.distributed.launch`` (``LOCAL_RANK`` wins).
        timeout_s: collective timeout (torch's default when ``None``).

    Returns:
        ``(rank, world_size)``.

    Raises:
        LaunchError: unknown launcher, or its environment variables missing or not integers.
    """
    if launcher not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {launcher!r}; available: {list(LAUNCHERS)}")
    if launcher == "none" or dist.is_initialized():
        return rank(), world_size()
    env = _launcher_env(launcher, local_rank)
    try:
        r, w, lr = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        int(env["MASTER_PORT"])
    except ValueError:
        raise LaunchError(f"--launcher {launcher}: RANK, WORLD_SIZE, LOCAL_RANK and MASTER_PORT must be "
                          f"integers, got {env}") from None
    if not 0 <= r < w:
        raise LaunchError(f"--launcher {launcher}: RANK={r} is not in [0, WORLD_SIZE={w})")
    os.environ.update(env)  # init_method env:// reads them
    backend = backend or default_backend()
    if backend == "nccl" and torch.cuda.is_available():
        torch.cuda.set_device(lr % torch.cuda.device_count())
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
    dist.init_process_group(backend=backend, init_method="env://", rank=r, world_size=w, **kwargs)
    return r, w


def destroy() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def cuda_count() -> int:
    """GPUs torch sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def is_distributed() -> bool:
    """A process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0 (the one process that writes histories, checkpoints and logs)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a proxy data set), the others after it finished."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def rank_work_dir(work_dir: str | Path, files: Sequence[str] = ("history.sqlite", "history.sqlite-wal",
                                                              "supernet.pth")) -> Path:
    """Where this rank writes: rank 0 the work dir itself; any other rank a scratch copy of ``files``.

    The other ranks run the same steps as rank 0 (a resumed run resumes from the same history and
    checkpoint) but their writes go to a temporary directory, removed at exit, so rank 0 is the one writer.
    Every rank waits until the copies are made before anyone writes. Across nodes the work dir must be on a
    shared file system.
    """
    work_dir = Path(work_dir)
    if is_main():
        barrier()
        return work_dir
    scratch = Path(tempfile.mkdtemp(prefix=f"densenas_rank{rank()}_"))
    atexit.register(shutil.rmtree, scratch, True)
    for name in files:
        if (work_dir / name).is_file():
            shutil.copy2(work_dir / name, scratch / name)
    barrier()
    return scratch


def _comm_device() -> torch.device:
    """Where collective tensors must live: the process's GPU for nccl, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: decisions that read a clock (a time budget) must not differ."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_tensor(t: Tensor, src: int = 0) -> Tensor:
    """``src``'s copy of ``t`` (same shape and dtype on every rank)."""
    if not is_distributed():
        return t
    buf = t.to(_comm_device()).contiguous()
    dist.broadcast(buf, src=src)
    return buf.to(t.device)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every rank's parameters and buffers with ``src``'s (DDP does this on wrapping)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(broadcast_tensor(t.detach(), src))


def shard(idx: Tensor) -> tuple[Tensor, float]:
    """This rank's contiguous part of a global batch ``idx`` and its share ``len(part) / len(idx)``.

    Raises:
        ValueError: fewer samples than processes (a rank would get an empty batch).
    """
    n, w = len(idx), world_size()
    if n < w:
        raise ValueError(f"a global batch of {n} sample(s) cannot be split over {w} processes; raise the "
                         f"batch size to at least {w} or start fewer processes")
    part = torch.tensor_split(idx, w)[rank()]
    return part, len(part) / n


def all_reduce_grads(params: Sequence[nn.Parameter], weight: float = 1.0,
                     extra: Iterable[float] = ()) -> list[float]:
    """Replace each ``p.grad`` by ``sum over ranks of weight_r * grad_r`` (one all-reduce for all of them).

    With ``weight`` the rank's share of the global batch and a mean-reduced loss, the result is the gradient
    of the global batch's mean loss. A parameter without a gradient on every rank keeps ``grad=None`` (an
    optimiser then skips it, as in one process); ``extra`` values (e.g. ``weight * loss``) are summed along.

    Returns:
        The summed ``extra`` values.
    """
    extra = [float(v) for v in extra]
    if not is_distributed():
        return extra
    dev = params[0].device if params else torch.device("cpu")
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    parts = [(p.grad.detach().reshape(-1).to(dtype) * weight) if p.grad is not None
             else torch.zeros(p.numel(), device=dev, dtype=dtype) for p in params]
    parts.append(torch.tensor([p.grad is not None for p in params], dtype=dtype, device=dev))
    parts.append(torch.tensor(extra, dtype=dtype, device=dev))
    # one buffer: per-tensor collectives would cost one round trip per parameter
    buf = torch.cat(parts).to(_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf = buf.to(dev)
    off = sum(p.numel() for p in params)
    present = buf[off:off + len(params)].tolist()
    off = 0
    for p, seen in zip(params, present):
        p.grad = buf[off:off + p.numel()].view_as(p).to(p.dtype).clone() if seen > 0 else None
        off += p.numel()
    off += len(params)
    return buf[off:].tolist()


def cpu_safe_norms(cfg: Any) -> list[str]:
    """Replace ``SyncBN`` norm layers of a (mmengine) config by ``BN`` in place; returns the changed keys.

    torch's and mmcv's SyncBatchNorm run on CUDA only; on a CPU-only machine each process then normalises
    with its own batch statistics (the usual DDP behaviour without SyncBN).
    """
    changed: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("SyncBN", "MMSyncBN"):
                node["type"] = "BN"
                changed.append(path or "<root>")
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(cfg, "")
    return changed


def setup_runner(cfg: Any, launcher: str, local_rank: int | None = None) -> None:
    """Prepare an mmengine ``Runner`` config (tools/train.py, tools/test.py): set ``cfg.launcher`` and, for a
    multi-process run, join the process group.

    With CUDA, mmengine's ``Runner`` starts the group (``env_cfg.dist_cfg``, nccl) and wraps the model in
    ``MMDistributedDataParallel`` on ``cuda:LOCAL_RANK``. Without CUDA, mmengine's ``init_dist`` would call
    ``torch.cuda.set_device`` and fail: the group is started here on gloo (the Runner then finds it up), the
    CPU model is wrapped without ``device_ids`` (DDP refuses them for CPU modules), and SyncBN layers, which
    run on CUDA only, become BN (per-process batch statistics).

    Raises:
        densenas.distributed.LaunchError: the launcher's environment variables are missing.
    """
    cfg.launcher = launcher
    if launcher == "none":
        return
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    if torch.cuda.is_available():
        check_env(launcher, local_rank)  # a missing variable is named, not mmengine's KeyError
        return
    env = cfg.setdefault("env_cfg", {})
    dist_cfg = env.setdefault("dist_cfg", {})
    dist_cfg["backend"] = "gloo"
    init(launcher, "gloo", local_rank=local_rank, timeout_s=dist_cfg.get("timeout"))
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper.setdefault("broadcast_buffers", False)
    wrapper.setdefault("find_unused_parameters", bool(cfg.get("find_unused_parameters", False)))
    if wrapper["type"] == "MMDistributedDataParallel":  # an explicit None: mmengine fills in device_ids
        wrapper["device_ids"] = None                       # (refused for CPU modules) only when absent
    cfg.model_wrapper_cfg = wrapper
    if cfg.get("sync_bn"):
        cfg.sync_bn = None
    changed = cpu_safe_norms(cfg.model)
    if changed and is_main():
        print(f"note: no CUDA: SyncBN -> BN (per-process batch statistics) at model.{', model.'.join(changed)}")


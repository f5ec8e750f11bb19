"""Latency on the runtime a model will run on: eager PyTorch, ONNX Runtime (CPU), TensorRT / CUDA through ONNX
Runtime.

MnasNet (Tan et al., CVPR 2019) measured each candidate's latency on the phone it was searched for, FBNet
(Wu et al., CVPR 2019) on the target device through a per-op table (:mod:`densenas.latency_table`). Eager
PyTorch on the search machine ranks models by Python dispatch as much as by their kernels; a deployed model
runs as one optimised graph (fused convolution + BN + activation, no dispatcher). This module times a model
where it will run:

* ``torch``: eager PyTorch forward on the model's device (the search's default);
* ``onnxruntime``: exported to ONNX (:mod:`densenas.onnx_export`, fixed shape) and run by ONNX Runtime's CPU
  execution provider with ``threads`` intra-op threads;
* ``tensorrt``: the same ONNX file on ONNX Runtime's TensorRT execution provider when the installed
  onnxruntime has it, else its CUDA provider (named in the returned label); needs a GPU.

Every figure is the median of ``repeats`` timed runs after ``warmup`` untimed ones.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .costs import latency_ms

RUNTIMES = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Latency:
    """One measurement: ``ms`` (median), the runtime and provider it ran on, threads, input shape."""

    ms: float
    runtime: str
    provider: str
    threads: int
    shape: tuple[int, ...]


def providers_for(runtime: str) -> list[str]:
    """ONNX Runtime execution providers of ``runtime`` (best first), refused clearly when not installed."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if runtime == "onnxruntime":
        return ["CPUExecutionProvider"]
    if runtime == "tensorrt":
        for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            if p in have:
                return [p, "CPUExecutionProvider"]
        raise RuntimeError(f"runtime 'tensorrt' needs onnxruntime-gpu (TensorRT or CUDA execution provider); this "
                           f"onnxruntime has {have}")
    raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")


def time_session(session, x: np.ndarray, *, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``session.run`` on ``x`` (after ``warmup`` runs)."""
    feed = {session.get_inputs()[0].name: x}
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def measure(model: nn.Module, shape: tuple[int, ...], *, runtime: str = "torch", threads: int = 1,
            warmup: int = 3, repeats: int = 10, device: torch.device | str = "cpu") -> Latency:
    """Latency of ``model`` on an input of ``shape`` (N, C, H, W) where ``runtime`` runs it.

    Args:
        model: an image-in, tensors-out module (eval mode is set here).
        shape: the input shape.
        runtime: one of :data:`RUNTIMES`.
        threads: intra-op threads of ONNX Runtime's CPU provider; ``torch`` times with the process's
            current ``torch.get_num_threads()`` (recorded in the result).
        warmup: untimed runs first.
        repeats: timed runs (median reported).
        device: the model's device for ``torch``.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    model = model.eval()
    if runtime == "torch":
        x = torch.zeros(*shape, device=device)
        ms = latency_ms(model, x, warmup=warmup, repeats=repeats)
        dev = torch.device(device)
        return Latency(ms, "torch", f"eager {dev.type}", torch.get_num_threads() if dev.type == "cpu" else 0,
                       tuple(shape))
    from .onnx_export import export_onnx, ort_session

    providers = providers_for(runtime)
    cpu = model.to("cpu")
    with tempfile.TemporaryDirectory(prefix="densenas_latency_") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(cpu, torch.zeros(*shape), path, dynamic_batch=False)
        session = ort_session(path, providers=providers, threads=threads)
        ms = time_session(session, np.zeros(shape, np.float32), warmup=warmup, repeats=repeats)
        used = session.get_providers()[0]
    model.to(device)
    return Latency(ms, runtime, used, threads, tuple(shape))

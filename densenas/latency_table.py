"""A per-op latency lookup table (FBNet, Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via
Differentiable Neural Architecture Search", CVPR 2019, Sec. 3.2): a model's latency estimated as the sum of
its ops' latencies, each measured once, alone, at its input shape, on the target runtime and machine.

FBNet's table has one entry per (block, input shape) of its fixed macro-architecture. Our spaces build
candidates from op tables of any depth, so an "op" here is a *unit*: the smallest module whose children are
all leaves (a conv + norm + activation block: the fusion ONNX Runtime applies stays inside the unit), or a
leaf module that sits in no such unit. A forward pass with hooks records each unit's input shape; a unit
seen before (same class, same ``repr`` with its hyper-parameters, same input shape) is looked up, a new one
is exported alone and timed by :func:`densenas.latency.measure`, then stored. Functional ops written in a
parent's ``forward`` (``F.interpolate``, ``torch.cat``, additions) are not units and are not counted: that,
and the fusion across units a whole graph gets, is the estimate's error, which ``benchmarks/bench_deploy.py``
measures against the whole model timed on the runtime.

The table is a JSON file for one runtime, thread count and machine (CPU model, onnxruntime / torch versions);
opening it with other settings is refused, naming the field that differs.
"""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .latency import RUNTIMES, measure

FORMAT = 1


def machine() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``, else ``platform.processor()``) and core count."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} x{os.cpu_count()}"


def units(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The units of ``model`` (see the module docstring), depth first."""
    def walk(prefix: str, m: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        kids = list(m.named_children())
        if not kids or all(not list(c.children()) for _, c in kids):
            yield prefix, m
            return
        for name, c in kids:
            yield from walk(f"{prefix}.{name}" if prefix else name, c)

    yield from walk("", model)


def _key(m: nn.Module, shape: tuple[int, ...]) -> str:
    return f"{type(m).__module__}.{type(m).__name__}|{' '.join(repr(m).split())}|{list(shape)}"


class LatencyTable:
    """FBNet's lookup table, stored at ``path`` (created when missing).

    Args:
        path: the JSON file.
        runtime: :data:`densenas.latency.RUNTIMES` (``torch`` times units eagerly on CPU).
        threads: ONNX Runtime intra-op threads.
        warmup, repeats: of each unit's measurement (median).
        log: progress output for new entries (``None``: silent).
    """

    def __init__(self, path: str | Path, runtime: str = "onnxruntime", threads: int = 1, warmup: int = 3,
                 repeats: int = 10, log: Any = print):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.path, self.log = Path(path), log
        self.settings = {"format": FORMAT, "runtime": runtime, "threads": int(threads), "machine": machine(),
                         "torch": torch.__version__, "onnxruntime": _ort_version()}
        self.warmup, self.repeats = int(warmup), int(repeats)
        self.entries: dict[str, float] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{self.path}: not a latency table ({e})") from None
            for k, v in self.settings.items():
                if data.get("settings", {}).get(k) != v:
                    raise ValueError(f"{self.path}: built with {k}={data.get('settings', {}).get(k)!r}, here "
                                     f"{k}={v!r}; a table holds one runtime, thread count and machine: use another "
                                     "file")
            self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def save(self) -> None:
        """Write the table (atomically: a killed build keeps the previous file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "entries": self.entries}, indent=1, sort_keys=True))
        tmp.replace(self.path)

    def unit_shapes(self, model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """``(path, unit, input shape)`` of every unit a forward pass at ``shape`` calls (in call order; a unit
        called twice is listed twice). Units whose input is not one tensor are left out."""
        calls: list[tuple[str, nn.Module, tuple[int, ...]]] = []
        hooks = []
        for name, u in units(model):
            def hook(mod: nn.Module, args: tuple, _name: str = name) -> None:
                if len(args) == 1 and isinstance(args[0], Tensor):
                    calls.append((_name, mod, tuple(args[0].shape)))
            hooks.append(u.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(*shape))
        finally:
            for h in hooks:
                h.remove()
        return calls

    def estimate(self, model: nn.Module, shape: tuple[int, ...]) -> float:
        """Estimated latency (ms) of ``model`` at input ``shape``: the sum of its units' table entries; units
        not in the table are measured alone first (and the table saved)."""
        total, new = 0.0, 0
        for _, unit, s in self.unit_shapes(model, shape):
            key = _key(unit, s)
            if key not in self.entries:
                lat = measure(_Unit(unit), s, runtime=self.settings["runtime"], threads=self.settings["threads"],
                              warmup=self.warmup, repeats=self.repeats)
                self.entries[key] = lat.ms
                new += 1
            total += self.entries[key]
        if new:
            self.save()
            if self.log:
                self.log(f"latency table {self.path}: {new} new op(s) measured, {len(self.entries)} in all")
        return total


class _Unit(nn.Module):
    """A unit as a model of its own (its output flattened by the exporter)."""

    def __init__(self, unit: nn.Module):
        super().__init__()
        self.unit = unit

    def forward(self, x: Tensor) -> Any:
        return self.unit(x)


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "none"

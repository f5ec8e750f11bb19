"""ONNX export of found models and baselines, checked by ONNX Runtime.

Deployment is where the compact-model searches (Nekrasov et al., WACV 2020; MnasNet, Tan et al., CVPR 2019)
meet their users: a found model leaves densenas as an ordinary OpenMMLab config *and*, through this module,
as an ONNX graph that ONNX Runtime / TensorRT run (the path mmdeploy takes for OpenMMLab models).

What is exported is the task's inference graph up to its raw outputs (``Task.test_cost_model``, the module
``tools/test.py`` counts): segmentation logits at the decoder's stride, the detector's per-level head maps,
depth maps, keypoint heatmaps, restored images. Preprocessing (mean / std, channel order, padding) and
post-processing (resize + argmax, box decoding + NMS, heatmap decoding) stay outside the graph and are
written into the ONNX metadata (``densenas.preprocess``, ``densenas.postprocess``), as mmdeploy records them
in its ``pipeline.json``.

Exporter: ``torch.onnx.export(dynamo=True)`` (``torch.export`` then onnxscript), opset 20 (the exporter's
default in torch 2.14; GridSample and DeformConv are in it). The TorchScript exporter (``dynamo=False``) is
deprecated and *traces* Python shape logic: our aux-cell decoder exported by it at batch 2 gave outputs off by
up to 1.95 at batch 3, while the dynamo exporter's graph with a symbolic batch matched PyTorch to 2e-7
(found decoder of the default search, measured). Modules built on compiled kernels without an ONNX form
(``mmcv.ops``: mmcv's deformable convolutions, RoIAlign, ...) are refused before export, by name; densenas'
own deformable convolution exports (its sampled form is GridSample, torchvision's kernel is DeformConv).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

#: ONNX opset of every export (see the module docstring)
OPSET = 20
#: module packages whose classes run compiled kernels with no ONNX form under the dynamo exporter
UNEXPORTABLE_PACKAGES = ("mmcv.ops",)


class DeployError(RuntimeError):
    """A model that cannot be exported or run by ONNX Runtime; the message names the module or op."""


@dataclass
class ParityReport:
    """PyTorch vs ONNX Runtime on the same inputs.

    Attributes:
        batch: images per run.
        max_abs: largest absolute difference over all outputs.
        per_output: largest absolute difference of each output, by name.
        scale: largest absolute PyTorch output value (to read ``max_abs`` against).
        ok: every element within ``atol * max(1, max|output|) + rtol * |torch|`` (the absolute tolerance is
            scaled by each output's range: float32 kernels of two runtimes differ by ~1e-6 *relative*, so logits
            of 30 or depths of 10 m differ by more than an unscaled 1e-4).
    """

    batch: int
    max_abs: float
    per_output: dict[str, float]
    scale: float
    ok: bool


@dataclass
class ExportInfo:
    """What :func:`export_onnx` wrote."""

    path: Path
    input_name: str
    output_names: list[str]
    input_shape: tuple[int, ...]
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


def default_output_names(n: int) -> list[str]:
    """ONNX names of ``n`` unnamed outputs: ``output``, or ``output_0`` ... ``output_<n-1>``."""
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def flat_outputs(out: Any) -> list[Tensor]:
    """The tensors of a model output (a tensor, or nested lists / tuples / dicts of them), in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flat_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flat_outputs(v)]
    return []


class FlatOutputs(nn.Module):
    """``model(x)`` as a flat tuple of tensors (ONNX outputs are a flat list)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(flat_outputs(self.model(x)))


def unexportable_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(module path, class)`` of the modules :data:`UNEXPORTABLE_PACKAGES` run (compiled kernels)."""
    bad = []
    for name, m in model.named_modules():
        mod = type(m).__module__
        if any(mod == p or mod.startswith(p + ".") for p in UNEXPORTABLE_PACKAGES):
            bad.append((name or "(model)", f"{mod}.{type(m).__name__}"))
    return bad


def check_exportable(model: nn.Module) -> None:
    """Refuse a model with modules of :data:`UNEXPORTABLE_PACKAGES`, naming each (at most 10)."""
    bad = unexportable_modules(model)
    if bad:
        names = ", ".join(f"{n} ({c})" for n, c in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10
                                                                  else "")
        raise DeployError(
            f"cannot export to ONNX: {len(bad)} module(s) run compiled mmcv kernels that have no ONNX form: "
            f"{names}. Deformable convolutions: build the model with densenas' own (densenas/deform.py, which "
            f"exports as GridSample) instead of mmcv.ops'.")


def export_onnx(model: nn.Module, example: Tensor, path: str | Path, *, output_names: Sequence[str] | None = None,
                metadata: Mapping[str, str] | None = None, dynamic_batch: bool = True,
                opset: int = OPSET) -> ExportInfo:
    """Export ``model`` (image tensor in, tensors out) to ``path`` and check it with ``onnx.checker``.

    Args:
        model: in eval mode; its output may be nested (flattened into the ONNX outputs in order).
        example: an input batch (N, C, H, W); height and width are fixed in the graph, the batch is
            symbolic when ``dynamic_batch``.
        path: the ``.onnx`` file to write (its folder is created; weights inside the file).
        output_names: one name per flattened output (default ``output``, or ``output_0`` ...).
        metadata: ``metadata_props`` to store (strings; e.g. the preprocessing).
        dynamic_batch: export the batch dimension as a symbol ``batch``.
        opset: ONNX opset.

    Raises:
        DeployError: a module that cannot be exported (named), or an exporter failure (its summary).
    """
    import onnx

    check_exportable(model)
    flat = FlatOutputs(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        n_out = len(flat(example))
    names = list(output_names) if output_names is not None else default_output_names(n_out)
    if len(names) != n_out:
        raise DeployError(f"{len(names)} output names for {n_out} outputs: {names}")
    dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    t0 = time.perf_counter()
    try:
        torch.onnx.export(flat, (example,), str(path), dynamo=True, opset_version=opset, input_names=["input"],
                          output_names=names, dynamic_shapes=dyn, external_data=False, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter's errors are long reports: keep their summary
        raise DeployError(f"torch.onnx.export (dynamo, opset {opset}) failed: {_summary(e)}") from e
    seconds = time.perf_counter() - t0
    meta = {"densenas.exporter": f"torch.onnx dynamo, torch {torch.__version__}", "densenas.opset": str(opset),
            **{str(k): str(v) for k, v in (metadata or {}).items()}}
    save_checked(onnx.load(str(path)), path, meta, "exported")
    return ExportInfo(path=path, input_name="input", output_names=names, input_shape=tuple(example.shape),
                      seconds=seconds, metadata=meta)


def save_checked(proto: Any, path: str | Path, metadata: Mapping[str, str], what: str,
                 error: type[Exception] = DeployError) -> None:
    """Write ``proto`` to ``path`` with ``metadata`` as its only metadata, then run ``onnx.checker`` (full check)
    on the file; ``error`` names the file and the ``what`` graph it refused."""
    import onnx

    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=str(k), value=str(v))
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - the checker raises several types; all mean the same here
        raise error(f"{path}: onnx.checker refused the {what} graph: {e}") from e


def _summary(e: BaseException) -> str:
    """The useful lines of an exporter error: its exception summary, else its first lines."""
    text = str(e)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("(Refer")]
    cause = e.__cause__
    out = " ".join(lines[:4])
    if cause is not None and str(cause).strip() and str(cause).strip()[:80] not in out:
        out += f" (cause: {type(cause).__name__}: {str(cause).strip().splitlines()[0][:300]})"
    return out[:1500]


def ort_session(path: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 1) -> Any:
    """An ONNX Runtime session of ``path`` with ``threads`` intra-op threads (one inter-op thread).

    Raises:
        DeployError: ONNX Runtime has no kernel for an op of the graph (the op is named) or cannot load it.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - ORT raises its own pybind classes
        msg = str(e)
        op = msg.split("implementation for ", 1)[1].split(" node", 1)[0] if "implementation for " in msg else None
        raise DeployError(f"{path}: ONNX Runtime ({', '.join(providers)}) cannot run "
                          + (f"op {op}" if op else "the graph") + f": {msg.strip()[:500]}") from e


def parity(model: nn.Module, session: Any, x: Tensor, output_names: Sequence[str], *, atol: float = 1e-4,
           rtol: float = 1e-3) -> ParityReport:
    """Run ``x`` through PyTorch and ONNX Runtime and compare every output (``np.allclose``'s test with the
    absolute tolerance scaled by each output's range, see :class:`ParityReport`).

    Raises:
        DeployError: ONNX Runtime cannot run ``x`` (e.g. another batch size than a fixed-batch graph's) or
            returns other outputs than PyTorch.
    """
    with torch.no_grad():
        ref = [t.float().cpu().numpy() for t in FlatOutputs(model).eval()(x)]
    try:
        got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy().astype(np.float32)})
    except Exception as e:  # noqa: BLE001 - ORT raises its own pybind classes
        raise DeployError(f"ONNX Runtime cannot run an input of shape {tuple(x.shape)}: {str(e).strip()[:400]}") from e
    if len(got) != len(ref):
        raise DeployError(f"ONNX Runtime returned {len(got)} outputs, PyTorch {len(ref)}")
    per, ok, scale = {}, True, 0.0
    for name, r, g in zip(output_names, ref, got):
        if r.shape != g.shape:
            raise DeployError(f"output {name}: ONNX Runtime shape {g.shape}, PyTorch {r.shape}")
        d = np.abs(r - g)
        per[name] = float(d.max()) if d.size else 0.0
        top = float(np.abs(r).max()) if r.size else 0.0
        scale = max(scale, top)
        ok = ok and bool(np.all(d <= atol * max(1.0, top) + rtol * np.abs(r)))
    return ParityReport(batch=int(x.shape[0]), max_abs=max(per.values(), default=0.0), per_output=per,
                        scale=scale, ok=ok)


def metadata_of(preprocess: Mapping[str, Any], postprocess: str, **more: Any) -> dict[str, str]:
    """ONNX ``metadata_props`` (strings): the preprocessing as JSON, the post-processing note, ``more``."""
    out = {"densenas.preprocess": json.dumps(dict(preprocess), sort_keys=True),
           "densenas.postprocess": postprocess}
    out.update({f"densenas.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in more.items()})
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}

"""What int8 costs a deployed model: the task's own metric of PyTorch, of the fp32 ONNX model and of the int8
ONNX model (:mod:`densenas.quantize`) on the val/test split, their output differences and ORT CPU latency.

* :func:`evaluate_variants`: the config's ``test_evaluator`` over the val/test split for each variant. ONNX
  Runtime replaces the graph's part of the mm model (feature extractor + head forward, or a restorer's
  network, :func:`graph_parts`, :func:`ort_backed`) and everything after the raw outputs stays the model's own
  post-processing (mmseg ``predict_by_feat`` + ``postprocess_result``, mmdet box decoding and NMS, mmpose
  heatmap decoding with its flip test, ...).
* :func:`output_difference`: raw-output differences of a session against PyTorch on one input.
* :func:`latency_pair`: ORT CPU latency of the two files, interleaved run by run (a busy machine slows both
  alike), median after warm-up.
* :func:`report_table`, :func:`metric_drop`: what ``tools/deploy.py --int8`` prints.
"""
from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .onnx_export import flat_outputs
from .quantize import QuantizeError

def _rebuild(template: Any, flat: Iterator[Tensor]) -> Any:
    """``template`` (a model output) with its tensors replaced, in :func:`flat_outputs`' order, by ``flat``."""
    if isinstance(template, Tensor):
        return next(flat)
    if isinstance(template, Mapping):
        return type(template)((k, _rebuild(v, flat)) for k, v in template.items())
    if isinstance(template, tuple):
        return tuple(_rebuild(v, flat) for v in template)
    if isinstance(template, list):
        return [_rebuild(v, flat) for v in template]
    return template


#: mm model attributes holding the head whose ``forward`` ends the exported graph, after ``extract_feat``
HEAD_ATTRS = ("decode_head", "bbox_head", "head")


def graph_parts(model: nn.Module) -> tuple[bool, nn.Module, str]:
    """Where ONNX Runtime takes over the exported graph in an mm model: ``(bypass extract_feat, module whose
    forward returns the raw outputs, its name)``. The exported graph is ``head.forward(extract_feat(x))`` for
    mmseg / mmdet / mmpose models, ``net(x)`` for densenas' restorers.

    Raises:
        QuantizeError: a model of another form (its metric cannot be taken from ONNX Runtime's outputs).
    """
    if callable(getattr(model, "extract_feat", None)):
        for attr in HEAD_ATTRS:
            head = getattr(model, attr, None)
            if isinstance(head, nn.Module):
                return True, head, attr
    net = getattr(model, "net", None)
    if isinstance(net, nn.Module):
        return False, net, "net"
    raise QuantizeError(f"{type(model).__name__}: no {' / '.join(HEAD_ATTRS)} after extract_feat, nor a net: the "
                        "task's metric cannot be computed from ONNX Runtime's raw outputs for this model")


@contextmanager
def ort_backed(model: nn.Module, session: Any, template: Any) -> Iterator[list[int]]:
    """Within the block, the graph part of ``model`` (:func:`graph_parts`) runs in ONNX Runtime ``session``:
    ``extract_feat`` passes the image through and the head's ``forward`` returns the session's outputs in the
    structure of ``template`` (the PyTorch head's output). Yields a one-element list counting the ORT runs.
    """
    bypass, head, _ = graph_parts(model)
    name = session.get_inputs()[0].name
    calls = [0]

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(x, Tensor):
            raise QuantizeError(f"the ONNX Runtime stand-in of {type(head).__name__}.forward got "
                                f"{type(x).__name__}, not the image tensor")
        calls[0] += 1
        outs = session.run(None, {name: x.detach().float().cpu().numpy()})
        return _rebuild(template, iter(torch.from_numpy(o).to(x.device) for o in outs))

    head.forward = forward
    if bypass:
        model.extract_feat = lambda inputs, *a, **k: inputs
    try:
        yield calls
    finally:
        del head.forward
        if bypass:
            del model.extract_feat


@dataclass
class VariantResult:
    """The metrics of one model variant (``torch``, ``fp32``, ``int8``) over the evaluated samples."""

    name: str
    metrics: dict[str, Any]
    seconds: float


@dataclass
class EvalReport:
    """:func:`evaluate_variants`' result.

    Attributes:
        variants: by name, in the order given.
        evaluated / skipped: samples evaluated; samples left out (input shape not the graph's fixed one).
        headline: the task's headline metric key (``Task.test_metric``), ``None`` when no key matches.
        higher_better: whether a larger headline is better.
        output_diff: per ONNX variant: largest and mean |output - fp32 PyTorch output| and the outputs' range.
    """

    variants: dict[str, VariantResult]
    evaluated: int
    skipped: int
    headline: str | None
    higher_better: bool
    output_diff: dict[str, dict[str, float]]


def headline_key(metrics: Mapping[str, Any], pattern: str) -> str | None:
    """The first numeric metric key whose lower-cased form matches ``pattern`` (``Task.test_metric``)."""
    for key, value in metrics.items():
        try:
            float(value)
        except (TypeError, ValueError):
            continue
        if pattern and re.search(pattern, key.lower()):
            return key
    return None


@contextmanager
def _quiet_mm_logger() -> Iterator[None]:
    """The mm evaluators' per-class tables at WARNING only (three evaluations would print three)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    handlers = [(h, h.level) for h in logger.handlers]
    logger.setLevel(logging.WARNING)
    for h, _ in handlers:
        h.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        for h, lv in handlers:
            h.setLevel(lv)


def evaluate_variants(cfg: Any, model: nn.Module, graph: nn.Module, sessions: Mapping[str, Any], shape: Sequence[int],
                      *, metric: tuple[str, bool] = ("", True), max_images: int | None = None,
                      log: Callable[[str], None] | None = None) -> EvalReport:
    """The config's ``test_evaluator`` metrics of PyTorch (``torch``) and of each ONNX Runtime session on the
    config's test split, one image at a time, every variant on the same images.

    Args:
        cfg: the model's config (``test_dataloader``, ``test_evaluator``).
        model: the mm model in eval mode (its data preprocessor and post-processing are used for every variant).
        graph: the exported module (``Task.test_cost_model``), for the output differences.
        sessions: ONNX Runtime sessions by variant name (e.g. ``{"fp32": ..., "int8": ...}``).
        shape: the graph's fixed input shape ``(C, H, W)``; test images of another shape are skipped (counted).
        metric: ``Task.test_metric`` (pattern of the headline key, higher is better).
        max_images: evaluate at most this many samples (default: the whole split).
        log: progress lines.

    Raises:
        QuantizeError: a model whose graph part ONNX Runtime cannot stand in for (:func:`graph_parts`), a
            post-processing that did not go through it, or no test image of the graph's shape.
    """
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    loader_cfg = dict(cfg.test_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False, batch_size=1)
    loader = Runner.build_dataloader(loader_cfg)
    meta = getattr(loader.dataset, "metainfo", None)
    evaluators = {}
    for name in ("torch", *sessions):
        ev = Evaluator(copy.deepcopy(cfg.test_evaluator))
        if meta is not None:
            ev.dataset_meta = meta
        evaluators[name] = ev
    x0 = None
    seconds = {name: 0.0 for name in evaluators}
    diffs = {name: [0.0, 0.0, 0, 0.0] for name in sessions}  # max, sum, count, range
    templates: dict[str, Any] = {}
    evaluated = skipped = 0
    bypass, head, head_name = graph_parts(model)
    with torch.no_grad(), _quiet_mm_logger():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            x = data["inputs"]
            if tuple(x.shape[1:]) != tuple(shape):
                skipped += 1
                continue
            if x0 is None:
                x0 = x
                templates["head"] = head.forward(model.extract_feat(x) if bypass else x)
            ref = [t.float().cpu().numpy() for t in flat_outputs(graph(x))]
            n_samples = len(data["data_samples"]) if isinstance(data.get("data_samples"), (list, tuple)) else len(x)
            for name, ev in evaluators.items():
                samples = copy.deepcopy(data["data_samples"])
                t0 = time.perf_counter()
                if name == "torch":
                    out = model(x, samples, mode="predict")
                else:
                    sess = sessions[name]
                    with ort_backed(model, sess, templates["head"]) as calls:
                        if evaluated == 0:  # the graph itself now runs in ORT: the stand-in covers it
                            got = [t.numpy() for t in flat_outputs(graph(x))]
                            direct = sess.run(None, {sess.get_inputs()[0].name: x.float().numpy()})
                            same = len(got) == len(direct) and all(
                                a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(
                                    np.abs(b).max()) if b.size else 1.0)) for a, b in zip(got, direct))
                            if calls[0] != 1 or not same:
                                raise QuantizeError(f"ONNX Runtime could not stand in for {head_name}.forward "
                                                    "after extract_feat: the exported graph is another part of "
                                                    f"{type(model).__name__}")
                        before = calls[0]
                        out = model(x, samples, mode="predict")
                        if calls[0] == before:
                            raise QuantizeError(f"{type(model).__name__}.predict did not call {head_name}.forward: "
                                                "its metric would not be ONNX Runtime's")
                    outs = sess.run(None, {sess.get_inputs()[0].name: x.float().numpy()})
                    d = diffs[name]
                    for r, g in zip(ref, outs):
                        a = np.abs(r - g)
                        d[0] = max(d[0], float(a.max()) if a.size else 0.0)
                        d[1] += float(a.sum())
                        d[2] += int(a.size)
                        d[3] = max(d[3], float(np.abs(r).max()) if r.size else 0.0)
                seconds[name] += time.perf_counter() - t0
                ev.process(data_samples=out, data_batch=batch)
            evaluated += n_samples
            if max_images is not None and evaluated >= max_images:
                break
        if evaluated == 0:
            raise QuantizeError(f"no test image has the graph's input shape {tuple(shape)} ({skipped} skipped)")
        if log:
            log(f"evaluating {len(evaluators)} variants on {evaluated} test samples"
                + (f" ({skipped} of another input shape than the graph's skipped)" if skipped else ""))
        results = {name: VariantResult(name, dict(ev.evaluate(evaluated)), seconds[name])
                   for name, ev in evaluators.items()}
    key = headline_key(results["torch"].metrics, metric[0])
    out_diff = {name: {"max_abs": d[0], "mean_abs": d[1] / max(1, d[2]), "range": d[3]} for name, d in diffs.items()}
    return EvalReport(variants=results, evaluated=evaluated, skipped=skipped, headline=key,
                      higher_better=bool(metric[1]), output_diff=out_diff)


def output_difference(graph: nn.Module, session: Any, x: Tensor) -> dict[str, float]:
    """Largest and mean ``|ONNX Runtime output - PyTorch output|`` over every output on ``x``, and the range
    (largest ``|PyTorch output|``): the comparison left when the metric cannot be evaluated."""
    with torch.no_grad():
        ref = [t.float().cpu().numpy() for t in flat_outputs(graph(x))]
    got = session.run(None, {session.get_inputs()[0].name: x.float().cpu().numpy()})
    mx = total = rng = 0.0
    count = 0
    for r, g in zip(ref, got):
        a = np.abs(r - g)
        mx, total, count = max(mx, float(a.max()) if a.size else 0.0), total + float(a.sum()), count + int(a.size)
        rng = max(rng, float(np.abs(r).max()) if r.size else 0.0)
    return {"max_abs": mx, "mean_abs": total / max(1, count), "range": rng}


# ---------------------------------------------------------------------------------------------- latency
@dataclass
class LatencyPair:
    """Median ORT CPU latency (ms) of two files timed side by side."""

    fp32_ms: float
    int8_ms: float
    threads: int
    warmup: int
    repeats: int

    @property
    def ratio(self) -> float:
        """int8 / fp32 (below 1: int8 is faster)."""
        return self.int8_ms / self.fp32_ms if self.fp32_ms > 0 else float("nan")


def latency_pair(fp32: Any, int8: Any, x: np.ndarray, *, threads: int, warmup: int = 5,
                 repeats: int = 20) -> LatencyPair:
    """Latency of two ORT sessions on ``x``, runs interleaved (fp32, int8, fp32, ...) so that other load on
    the machine slows both alike; the median of ``repeats`` after ``warmup`` each."""
    feeds = [(s, {s.get_inputs()[0].name: x}) for s in (fp32, int8)]
    for _ in range(warmup):
        for s, f in feeds:
            s.run(None, f)
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, (s, f) in enumerate(feeds):
            t0 = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - t0)
    return LatencyPair(fp32_ms=1e3 * float(np.median(times[0])), int8_ms=1e3 * float(np.median(times[1])),
                       threads=threads, warmup=warmup, repeats=repeats)


# ------------------------------------------------------------------------------------------------- table
def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return "-"


def report_table(rep: EvalReport, *, sizes: Mapping[str, int], latency: LatencyPair | None) -> str:
    """The metric table as markdown: one row per variant (fp32 PyTorch, fp32 ORT, int8 ORT) with its headline
    metric, file size and ORT CPU latency."""
    key = rep.headline
    threads = f"{latency.threads} thread{'s' if latency.threads != 1 else ''}" if latency else ""
    lines = [f"| model | {key or 'metric'} | file | ORT CPU latency{f' ({threads})' if threads else ''} |",
             "|---|---|---|---|"]
    names = {"torch": "fp32 PyTorch", "fp32": "fp32 ONNX Runtime", "int8": "int8 ONNX Runtime"}
    ms = {"fp32": latency.fp32_ms, "int8": latency.int8_ms} if latency else {}
    for name, res in rep.variants.items():
        size = f"{sizes[name] / 2**20:.2f} MiB" if name in sizes else "-"
        lat = f"{ms[name]:.2f} ms" if name in ms else "-"
        lines.append(f"| {names.get(name, name)} | {_fmt(res.metrics.get(key)) if key else '-'} | {size} | {lat} |")
    return "\n".join(lines)


def metric_drop(rep: EvalReport, base: str = "fp32", other: str = "int8") -> float | None:
    """How much worse ``other``'s headline metric is than ``base``'s (positive: worse; sign-adjusted for
    lower-is-better metrics such as RMSE); ``None`` without a headline."""
    if rep.headline is None or base not in rep.variants or other not in rep.variants:
        return None
    a = float(rep.variants[base].metrics[rep.headline])
    b = float(rep.variants[other].metrics[rep.headline])
    return a - b if rep.higher_better else b - a

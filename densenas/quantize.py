"""Optional int8 deployment: ONNX Runtime static (post-training) quantisation of an exported model, in the QDQ
format, calibrated on the task's train split, and the metric it costs on the val/test split.

Integer-arithmetic-only inference (Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018) represents a real tensor by 8-bit integers ``q`` with a scale
``s`` and a zero point ``z``: ``r = s * (q - z)``. Static quantisation fixes the activations' ``(s, z)`` once,
from the ranges a calibration set produces (MinMax; or Entropy / Percentile, which clip outliers), and the
weights' per output channel. ONNX Runtime's ``quantize_static`` writes them as QuantizeLinear /
DequantizeLinear (QDQ) pairs around every op it can quantise; its CPU execution provider fuses
``DQ -> Conv -> Q`` into integer kernels (QLinearConv, ...) when the session is created, and ops it cannot
quantise (GridSample, ...) stay float between a DQ and a Q.

What this module does (``tools/deploy.py --int8``):

* :func:`calibration_reader`: ``N`` images of the config's *train* split (never the val/test images the
  metric is measured on), read in test mode through the config's *test* pipeline and the model's own data
  preprocessor, exactly as ``tools/deploy.py`` prepares the images of its fp32 parity check.
* :func:`quantize_model`: ``quant_pre_process`` (symbolic shape inference and graph optimisation, as ORT
  recommends before quantising), then ``quantize_static`` (QDQ, per-channel symmetric QInt8 weights, QUInt8
  activations by default; see :data:`DEFAULT_ACTIVATION_TYPE` for why), metadata of the fp32 file kept plus the
  quantisation settings and the calibration files, ``onnx.checker`` on the result.
* :func:`evaluate_variants`: the task's own metric (the config's ``test_evaluator``) of PyTorch, of the fp32
  ONNX model and of the int8 ONNX model on the val/test split. ONNX Runtime replaces the graph's part of the
  mm model (feature extractor + head forward, or a restorer's network) and everything after the raw outputs
  stays the model's own post-processing (mmseg ``predict_by_feat`` + ``postprocess_result``, mmdet box decoding
  and NMS, mmpose heatmap decoding with its flip test, ...).
* :func:`latency_pair`: ORT CPU latency of the two files, interleaved run by run (a busy machine slows both
  alike), median after warm-up.
"""
from __future__ import annotations

import copy
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .onnx_export import DeployError, flat_outputs, save_checked

#: ``--calib-method`` names -> ``onnxruntime.quantization.CalibrationMethod`` member names
CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: ``--int8-activations`` names -> ``onnxruntime.quantization.QuantType`` member names
ACTIVATION_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
#: Activations as unsigned 8 bit, weights as signed 8 bit (U8S8), the pairing ONNX Runtime's x86-64 integer
#: convolution / GEMM kernels (MLAS) are built around: ``VPMADDUBSW`` (AVX2) and ``VPDPBUSD`` (AVX512-VNNI,
#: AVX-VNNI) multiply one *unsigned* by one *signed* 8-bit operand. With uint8 activations the CPU EP fused all
#: 69 convolutions of the shipped found segmentation model into QLinearConv; with int8 activations only 40 (the
#: other 29 ran as float Conv between DequantizeLinear and QuantizeLinear, plus 41 Transposes). Measured side by
#: side (ORT 1.32 CPU EP, 1 thread, AMD EPYC with AVX512-VNNI, batch 1 at 128x128, busy machine): found decoder
#: int8 / fp32 latency 0.36-0.43 with uint8 activations, 0.61-0.96 with int8 (S8S8); DeepLabV3+ 0.35-0.42
#: against 0.86-1.30; the same mIoU within 0.11. Weights: symmetric per output channel; ``reduce_range`` (7-bit
#: weights, ORT's workaround for VPMADDUBSW's 16-bit saturation) only where the CPU lacks VNNI
#: (:func:`cpu_has_vnni`; with VNNI it is not needed and costs accuracy).
DEFAULT_ACTIVATION_TYPE = "uint8"
#: ``/proc/cpuinfo`` flags of the 8-bit dot-product instructions (``VPDPBUSD``) that make 8-bit weights safe
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has VNNI (Linux: a flag of :data:`VNNI_FLAGS` in ``cpuinfo``; ``False`` where
    it cannot be read). Without VNNI, ONNX Runtime's x86-64 U8S8 kernels multiply with ``VPMADDUBSW``, whose
    16-bit intermediate sums saturate with full 8-bit weights (measured on an AVX2-only machine: the shipped
    int8 test model's largest error 0.77 against an output range of 2.58, 0.15 allowed)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return any(f in flags for f in VNNI_FLAGS)


#: Metadata keys the int8 file adds to the fp32 file's
QUANT_META = "densenas.quantization"


class QuantizeError(DeployError):
    """A model, a calibration set or a setting that cannot be quantised / evaluated; the message names why."""


# -------------------------------------------------------------------------------------------- calibration
@dataclass
class CalibrationSet:
    """The preprocessed calibration inputs and where they came from.

    Attributes:
        inputs: one ``(1, C, H, W)`` float32 array per image, as the model's data preprocessor gives it.
        paths: the image file of each input (train split).
        split: a description of the split they were drawn from (dataset type, annotation file / folder).
        size: samples in that split.
        skipped: samples drawn but left out because their input shape is not the graph's.
    """

    inputs: list[np.ndarray]
    paths: list[str]
    split: str
    size: int
    skipped: int = 0


def _calibration_reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """``CalibrationDataReader`` feeding the images of a :class:`CalibrationSet` one at a time (batch 1)."""

        def __init__(self, calib: CalibrationSet, input_name: str):
            self.calib, self.input_name = calib, input_name
            self._it: Iterator[np.ndarray] | None = None

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._it is None:
                self._it = iter(self.calib.inputs)
            x = next(self._it, None)
            return None if x is None else {self.input_name: x}

        def rewind(self) -> None:
            self._it = None

        def __len__(self) -> int:
            return len(self.calib.inputs)

    return ImageCalibrationReader


def calibration_reader(calib: CalibrationSet, input_name: str = "input") -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``calib`` (``get_next`` / ``rewind``)."""
    return _calibration_reader_class()(calib, input_name)


def _train_dataset_cfg(cfg: Any) -> dict:
    """The train split's dataset config read as a test set: the test dataset's ``pipeline`` (and ``crop`` where
    the dataset crops itself, e.g. restoration) and ``test_mode=True`` (no random augmentation)."""
    train = cfg.get("train_dataloader")
    if not train or not train.get("dataset"):
        raise QuantizeError("the config has no train_dataloader.dataset: int8 calibration reads images of the "
                            "task's train split (never the val/test images the metric is measured on)")
    ds = copy.deepcopy(dict(train["dataset"]))
    while "pipeline" not in ds and isinstance(ds.get("dataset"), Mapping):  # RepeatDataset & co.
        ds = copy.deepcopy(dict(ds["dataset"]))
    test = dict(cfg.test_dataloader.dataset)
    while "pipeline" not in test and isinstance(test.get("dataset"), Mapping):
        test = dict(test["dataset"])
    for key in ("pipeline", "crop"):
        if key in test:
            ds[key] = copy.deepcopy(test[key])
    ds["test_mode"] = True
    return ds


def _describe_split(ds: dict) -> str:
    where = ds.get("ann_file") or ds.get("data_prefix") or ds.get("split") or ""
    return f"{ds.get('type', 'dataset')} {where} under {ds.get('data_root', '.')}"


def sample_path(batch: Mapping[str, Any]) -> str:
    """The image file of the first sample of a collated batch (mm data samples' ``img_path``, else the
    batch's own ``img_path``); ``"?"`` when it has none."""
    samples = batch.get("data_samples")
    if isinstance(samples, (list, tuple)) and samples and hasattr(samples[0], "metainfo"):
        path = samples[0].metainfo.get("img_path")
        if path:
            return str(path)
    paths = batch.get("img_path")
    if isinstance(paths, (list, tuple)) and paths:
        return str(paths[0])
    return str(paths) if paths else "?"


def calibration_set(cfg: Any, model: nn.Module, n: int, shape: Sequence[int], *, seed: int = 0) -> CalibrationSet:
    """``n`` images of the config's train split, drawn in a seeded random order, after the test pipeline and
    the model's data preprocessor, all of input shape ``shape`` (``(C, H, W)``, the graph's).

    Raises:
        QuantizeError: ``n < 1``; ``n`` more than the split holds; fewer than ``n`` of the split's images have the
            graph's input shape; no train split in the config.
    """
    from mmengine.runner import Runner

    if n < 1:
        raise QuantizeError(f"--calib-images must be at least 1, got {n}")
    ds = _train_dataset_cfg(cfg)
    loader = Runner.build_dataloader(dict(dataset=ds, batch_size=1, num_workers=0, persistent_workers=False,
                                          sampler=dict(type="DefaultSampler", shuffle=True, seed=seed),
                                          collate_fn=dict(cfg.train_dataloader.get("collate_fn")
                                                          or dict(type="pseudo_collate"))), seed=seed)
    split, size = _describe_split(ds), len(loader.dataset)
    if n > size:
        raise QuantizeError(f"--calib-images {n}: the train split ({split}) has only {size} samples")
    inputs, paths, skipped = [], [], 0
    with torch.no_grad():
        for batch in loader:
            x = model.data_preprocessor(batch, False)["inputs"]
            if tuple(x.shape[1:]) != tuple(shape):
                skipped += 1
                continue
            inputs.append(x.float().cpu().numpy().astype(np.float32))
            paths.append(sample_path(batch))
            if len(inputs) == n:
                break
    if len(inputs) < n:
        raise QuantizeError(f"--calib-images {n}: only {len(inputs)} of the {size} samples of the train split "
                            f"({split}) have the graph's input shape {tuple(shape)} ({skipped} have another)")
    return CalibrationSet(inputs=inputs, paths=paths, split=split, size=size, skipped=skipped)


# ------------------------------------------------------------------------------------------- quantisation
@dataclass
class QuantInfo:
    """What :func:`quantize_model` wrote.

    Attributes:
        path: the int8 ONNX file.
        seconds: pre-processing + calibration + quantisation time.
        method: calibration method name (``minmax`` ...).
        activation_type / weight_type: ``QuantType`` names.
        op_counts: QuantizeLinear / DequantizeLinear node counts.
        quantized_ops: op types that got a DequantizeLinear on their weight input (int8 weights).
        float_ops: compute ops (Conv, MatMul, Gemm, GridSample, ...) none of whose inputs is dequantised.
        metadata: the file's ``metadata_props``.
        reduce_range: whether the weights were quantised to 7 bits (ORT's ``reduce_range``).
    """

    path: Path
    seconds: float
    method: str
    activation_type: str
    weight_type: str
    op_counts: dict[str, int]
    quantized_ops: dict[str, int]
    float_ops: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)
    reduce_range: bool = False


#: ops whose float kernels dominate the time: reported when no input of theirs is dequantised
_COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "GridSample", "DeformConv")


def _graph_ops(proto: Any) -> list[Any]:
    nodes = list(proto.graph.node)
    for f in proto.functions:
        nodes += list(f.node)
    return nodes


def quantize_model(fp32_path: str | Path, out_path: str | Path, calib: CalibrationSet, *, method: str = "minmax",
                   activations: str = DEFAULT_ACTIVATION_TYPE, per_channel: bool = True,
                   reduce_range: bool | None = None, extra_metadata: Mapping[str, str] | None = None
                   ) -> QuantInfo:
    """Statically quantise ``fp32_path`` into ``out_path`` (QDQ) with the ranges of ``calib``.

    Args:
        fp32_path: an fp32 ONNX file (``tools/deploy.py``'s export; one image input).
        out_path: the int8 file to write (its folder is created).
        calib: the calibration images (:func:`calibration_set`).
        method: ``minmax``, ``entropy`` or ``percentile`` (ORT's ``CalibrationMethod``).
        activations: ``uint8`` (default, see :data:`DEFAULT_ACTIVATION_TYPE`) or ``int8``.
        per_channel: one scale per output channel of each weight (Conv, Gemm, MatMul where ORT supports it).
        reduce_range: 7-bit weights (ORT's ``reduce_range``); ``None``: where this CPU lacks VNNI
            (:func:`cpu_has_vnni`), which is where the file is checked. Pass it for the target CPU when the
            model runs elsewhere (recorded in the metadata).
        extra_metadata: more ``metadata_props``.

    Raises:
        QuantizeError: an unknown method / type, ORT's pre-processing or quantiser failing (its message), a
            graph with no op ORT quantises (nothing to gain: refused, no file written), or ``onnx.checker``
            refusing the result.
    """
    import json

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range = (not cpu_has_vnni()) if reduce_range is None else bool(reduce_range)

    if method not in CALIB_METHODS:
        raise QuantizeError(f"calibration method {method!r}: use one of {sorted(CALIB_METHODS)}")
    if activations not in ACTIVATION_TYPES:
        raise QuantizeError(f"activation type {activations!r}: use one of {sorted(ACTIVATION_TYPES)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if fp32_path.resolve() == out_path.resolve():
        raise QuantizeError(f"the int8 file would overwrite the fp32 file {fp32_path}: name another --int8-out")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fp32 = onnx.load(str(fp32_path))
    if len(fp32.graph.input) != 1:
        raise QuantizeError(f"{fp32_path}: the calibration reader feeds one image input, the graph has "
                            f"{len(fp32.graph.input)}")
    input_name = fp32.graph.input[0].name
    act_type, wt_type = getattr(QuantType, ACTIVATION_TYPES[activations]), QuantType.QInt8
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="densenas_int8_") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except Exception as e:  # noqa: BLE001 - ORT's shape inference raises many kinds
            raise QuantizeError(f"{fp32_path}: onnxruntime's quant_pre_process (shape inference, graph "
                                f"optimisation) failed: {type(e).__name__}: {str(e).strip()[:500]}") from e
        staging, cache = Path(tmp) / "int8.onnx", None
        reader = calibration_reader(calib, input_name)
        try:
            if method == "entropy":  # ranges by ORT's own entropy calibrator, with bins it can choose among
                cache = _entropy_ranges(pre, reader, Path(tmp))
            quantize_static(str(pre), str(staging), None if cache else reader,
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=act_type, weight_type=wt_type,
                            calibrate_method=getattr(CalibrationMethod, CALIB_METHODS[method]),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                            calibration_cache_path=cache)
        except Exception as e:  # noqa: BLE001
            raise QuantizeError(f"{fp32_path}: onnxruntime's quantize_static ({method}) failed: "
                                f"{type(e).__name__}: {str(e).strip()[:500]}") from e
        proto = onnx.load(str(staging))
    seconds = time.perf_counter() - t0
    counts, quantized, floating = _quant_summary(proto)
    if not quantized:
        raise QuantizeError(f"{fp32_path}: ONNX Runtime quantised no weight of the graph (ops: "
                            f"{', '.join(sorted({n.op_type for n in _graph_ops(proto)}))}); an int8 file would "
                            "only add QuantizeLinear / DequantizeLinear: not written")
    meta = {p.key: p.value for p in fp32.metadata_props}
    quant = dict(format="QDQ", tool="onnxruntime.quantization.quantize_static", calibrate_method=method,
                 activation_type=ACTIVATION_TYPES[activations], weight_type="QInt8", per_channel=per_channel,
                 reduce_range=reduce_range, activation_symmetric=False, weight_symmetric=True,
                 calibration_split=calib.split, calibration_images=len(calib.inputs),
                 calibration_files=[Path(p).name for p in calib.paths],
                 **({"entropy_bins": list(ENTROPY_BINS)} if method == "entropy" else {}))
    meta[QUANT_META] = json.dumps(quant)
    meta.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    save_checked(proto, out_path, meta, "quantised", QuantizeError)
    return QuantInfo(path=out_path, seconds=seconds, method=method, activation_type=ACTIVATION_TYPES[activations],
                     weight_type="QInt8", op_counts=counts, quantized_ops=quantized, float_ops=floating,
                     metadata=meta, reduce_range=reduce_range)


#: Entropy calibration histogram: ``quantize_static`` builds ORT's ``EntropyCalibrater`` with 128 bins and 128
#: quantised bins and passes no option to change them, so the only threshold it can pick is the whole range
#: (int8 files identical to MinMax's, measured with ORT 1.32). densenas runs that calibrator itself with
#: TensorRT's setting (2048 bins, 128 quantised bins; Migacz, GTC 2017) and hands the ranges to quantize_static
#: through its calibration cache.
ENTROPY_BINS = (2048, 128)


def _entropy_ranges(model: Path, reader: Any, tmp: Path) -> Path:
    """KL-divergence (entropy) activation ranges of ``model`` on ``reader``'s images, saved as an ORT calibration
    cache in ``tmp``; returns the cache's path."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default op types
    calibrator = create_calibrator(model, ops, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1],
                                                  "symmetric": False})
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    del calibrator
    reader.rewind()
    cache = tmp / "entropy_ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def _quant_summary(proto: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """``(Q / DQ node counts, op types with a dequantised weight, compute ops with no dequantised input)``."""
    nodes = _graph_ops(proto)
    init = {t.name for t in proto.graph.initializer}
    dq_out, dq_of_init = set(), set()
    for n in nodes:
        if n.op_type == "DequantizeLinear":
            dq_out.add(n.output[0])
            if n.input[0] in init:
                dq_of_init.add(n.output[0])
    counts = {"QuantizeLinear": sum(n.op_type == "QuantizeLinear" for n in nodes),
              "DequantizeLinear": sum(n.op_type == "DequantizeLinear" for n in nodes)}
    quantized: dict[str, int] = {}
    floating: dict[str, int] = {}
    for n in nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(i in dq_of_init for i in n.input):
            quantized[n.op_type] = quantized.get(n.op_type, 0) + 1
        elif n.op_type in _COMPUTE_OPS and not any(i in dq_out for i in n.input):
            floating[n.op_type] = floating.get(n.op_type, 0) + 1
    return counts, quantized, floating


# ------------------------------------------------------------------------------------------- evaluation
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

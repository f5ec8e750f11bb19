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

What the int8 file costs (the task's metric of PyTorch, fp32 ONNX and int8 ONNX, output differences, latency)
is measured by :mod:`densenas.quantize_eval`.
"""
from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .onnx_export import DeployError, save_checked

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

#!/usr/bin/env python
"""Export a fine-tuned model (found or baseline, any task) to ONNX and check it with ONNX Runtime.

    python tools/deploy.py CONFIG CHECKPOINT --out model.onnx [--images 8] [--threads 1]
    python tools/deploy.py work_dirs/found/found.py work_dirs/found/iter_600.pth --out found.onnx

The graph is the task's inference network up to its raw outputs (the module tools/test.py counts), exported
by torch.onnx's dynamo exporter at opset 20 with a symbolic batch (densenas/onnx_export.py says why).
``onnx.checker`` checks the file, then ONNX Runtime (CPU execution provider) runs it on ``--images`` real
images of the config's test set, preprocessed by the model's own data preprocessor, and on one of them
(another batch size than the export's), against PyTorch: the largest absolute difference of each output is
printed, and the command fails (exit 1) when an output is off by more than
``--atol * max(1, max|output|) + --rtol * |torch|``.
The preprocessing (mean, std, channel order, padding, input size) and what is left after the outputs (box
decoding and NMS, heatmap decoding, resize and argmax) are written into the file's metadata and printed.

A model with a module that cannot be exported (mmcv's compiled ops, e.g. its deformable convolutions) is
refused before anything is written, naming the modules (exit 2). The checkpoint is read weights-only.

Optional int8 (densenas/quantize.py; what it costs: densenas/quantize_eval.py), after the fp32 export has passed its parity check:

    python tools/deploy.py CONFIG CHECKPOINT --out model.onnx --int8 [--int8-out model.int8.onnx]
        [--calib-images 32] [--calib-method minmax|entropy|percentile] [--int8-activations uint8|int8]
        [--int8-reduce-range auto|on|off] [--eval-images N] [--latency-repeats 20]

ONNX Runtime's static quantisation (``quant_pre_process``, then ``quantize_static``: QDQ, per-channel int8
weights, uint8 activations), calibrated on ``--calib-images`` images of the config's *train* split (test
pipeline, the model's data preprocessor: the preprocessing of the parity check). Then the task's own metric
(the config's ``test_evaluator``) of PyTorch, the fp32 ONNX file and the int8 file on the test split, the drop,
the file sizes and the ORT CPU latency of both files (``--threads``; runs interleaved, median after warm-up)
are printed as a table. A bad ``--calib-images`` (0, more than the train split) or a graph ORT cannot quantise
is refused naming the reason (exit 2; no int8 file written).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def real_inputs(cfg, model, n: int):
    """Up to ``n`` images of the config's test set as the model sees them (after its data preprocessor),
    all of the first image's shape (a fixed-size graph), as one batch."""
    import torch
    from mmengine.runner import Runner

    loader_cfg = dict(cfg.test_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False, batch_size=1)
    loader = Runner.build_dataloader(loader_cfg)
    rows = []
    with torch.no_grad():
        for batch in loader:
            x = model.data_preprocessor(batch, False)["inputs"]
            if not rows or x.shape[1:] == rows[0].shape[1:]:
                rows.append(x)
            if len(rows) >= n:
                break
    if not rows:
        raise ValueError(f"the test set of the config ({cfg.test_dataloader.dataset.get('type')}) has no images")
    return torch.cat(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--images", type=int, default=8, help="real test images for the parity check (default 8)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="absolute tolerance, scaled by each output's largest |value| when above 1 (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    q = p.add_argument_group("int8 (ONNX Runtime static quantisation, densenas/quantize.py)")
    q.add_argument("--int8", action="store_true", help="also write a statically quantised int8 (QDQ) file and "
                   "print the metric drop on the test split")
    q.add_argument("--int8-out", help="the int8 .onnx file (default: --out with .int8.onnx)")
    q.add_argument("--calib-images", type=int, default=32,
                   help="images of the train split to calibrate the activation ranges on (default 32)")
    q.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="calibration method (default minmax)")
    q.add_argument("--int8-activations", choices=("uint8", "int8"), default="uint8",
                   help="activation type (default uint8: ORT's x86 int8 kernels are uint8 x int8)")
    q.add_argument("--int8-reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="7-bit weights (ORT's reduce_range): on for a target CPU without VNNI (AVX2 only), where "
                        "full 8-bit weights saturate; auto (default): as this CPU (it runs the check)")
    q.add_argument("--eval-images", type=int, default=None,
                   help="evaluate the metric on at most this many test samples (default: the whole split)")
    q.add_argument("--latency-repeats", type=int, default=20,
                   help="timed runs per file after 5 warm-up runs (default 20)")
    args = p.parse_args(argv)
    for f in (args.config, args.checkpoint):
        if not Path(f).is_file():
            print(f"error: file not found: {f}", file=sys.stderr)
            return 2
    if args.images < 1:
        print("error: --images must be >= 1", file=sys.stderr)
        return 2
    int8_out = Path(args.int8_out) if args.int8_out else Path(args.out).with_suffix(".int8.onnx")
    if args.int8:
        bad = ("--calib-images must be >= 1" if args.calib_images < 1 else
               "--eval-images must be >= 1" if args.eval_images is not None and args.eval_images < 1 else
               "--latency-repeats must be >= 1" if args.latency_repeats < 1 else
               f"--int8-out {int8_out} is the fp32 file --out" if int8_out.resolve() == Path(args.out).resolve()
               else None)
        if bad:
            print(f"error: {bad}", file=sys.stderr)
            return 2

    import torch
    from densenas.config import ConfigError, read_config
    from mmengine.registry import MODELS, init_default_scope

    import densenas.tasks  # noqa: F401 - the task plugins' mm registrations
    from densenas.onnx_export import DeployError, export_onnx, flat_outputs, metadata_of, ort_session, parity
    from densenas.safeload import CheckpointLoadError, check_state_dict_keys, safe_torch_load
    from densenas.task import task_of_config

    try:  # refused before anything is built: a checkpoint that needs code to load, a config that cannot be read
        checkpoint, cfg = safe_torch_load(args.checkpoint), read_config(args.config, args.cfg_options)
    except (CheckpointLoadError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = task_of_config(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = MODELS.build(cfg.model)
    try:
        check_state_dict_keys(model, checkpoint, args.checkpoint)
    except CheckpointLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model.load_state_dict(checkpoint.get("state_dict", checkpoint), strict=True)
    del checkpoint
    model.eval()
    graph, params, _, what = task.test_cost_model(model, cfg)
    x = real_inputs(cfg, model, args.images)
    calib = None
    if args.int8:  # the calibration images first: a bad --calib-images is refused before anything is written
        from densenas.quantize import calibration_set

        try:
            calib = calibration_set(cfg, model, args.calib_images, tuple(x.shape[1:]))
        except DeployError as e:
            print(f"error: cannot quantise: {e}", file=sys.stderr)
            return 2
    with torch.no_grad():
        names = task.deploy_outputs(flat_outputs(graph(x[:1])), cfg)
    pre = dict(cfg.model.get("data_preprocessor") or {})
    preprocess = {**pre, "input_shape": ["batch", *x.shape[1:]], "dtype": "float32",
                  "note": "the image after the config's test pipeline, then this data_preprocessor "
                          "(mean / std, channel order, padding)"}
    meta = metadata_of(preprocess, task.deploy_note(cfg), task=task.name, config=str(args.config),
                       checkpoint=str(args.checkpoint), params=params, outputs=names)
    print(f"exporting {task.name} model ({params / 1e6:.3f} M params{what}) at input {tuple(x.shape[1:])} "
          f"with a symbolic batch -> {args.out}", flush=True)
    try:
        info = export_onnx(graph, x[: min(2, len(x))], args.out, output_names=names, metadata=meta)
        session = ort_session(info.path, threads=args.threads)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size_mb = info.path.stat().st_size / 2**20
    print(f"wrote {info.path} ({size_mb:.1f} MiB) in {info.seconds:.1f} s; onnx.checker: ok; "
          f"outputs: {', '.join(names)}")
    ok = True
    for batch in sorted({len(x), 1}, reverse=True):
        try:
            rep = parity(graph, session, x[:batch], names, atol=args.atol, rtol=args.rtol)
        except DeployError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        ok = ok and rep.ok
        worst = max(rep.per_output, key=rep.per_output.get)
        print(f"ONNX Runtime vs PyTorch on {batch} real image(s): largest |difference| {rep.max_abs:.3g} "
              f"(output {worst}; outputs up to {rep.scale:.3g}) -> {'ok' if rep.ok else 'MISMATCH'}")
    print(f"preprocessing (metadata densenas.preprocess): {json.dumps(preprocess, default=str)}")
    print(f"after the outputs (metadata densenas.postprocess): {task.deploy_note(cfg)}")
    if not ok:
        print(f"error: ONNX Runtime's outputs differ from PyTorch's by more than {args.atol} * max(1, max|output|) "
              f"+ {args.rtol} * |x|", file=sys.stderr)
        return 1
    if args.int8:
        return int8(args, cfg, task, model, graph, x, info.path, session, calib, int8_out)
    return 0


def int8(args: argparse.Namespace, cfg, task, model, graph, x, fp32_path: Path, fp32_session, calib,
         out: Path) -> int:
    """Quantise ``fp32_path`` into ``out``, evaluate PyTorch / fp32 ORT / int8 ORT on the test split, time both
    files and print the table (``--int8``). Returns the exit status (2: refused, nothing more written)."""
    import onnxruntime as ort

    from densenas.onnx_export import DeployError, ort_session
    from densenas.quantize import cpu_has_vnni, quantize_model
    from densenas.quantize_eval import evaluate_variants, latency_pair, metric_drop, output_difference, report_table

    print(f"int8: calibrating on {len(calib.inputs)} images of the train split ({calib.split}; "
          f"{calib.size} samples): {', '.join(Path(p).name for p in calib.paths[:4])}"
          f"{', ...' if len(calib.paths) > 4 else ''}", flush=True)
    try:
        qi = quantize_model(fp32_path, out, calib, method=args.calib_method, activations=args.int8_activations,
                            reduce_range={"auto": None, "on": True, "off": False}[args.int8_reduce_range])
        session = ort_session(qi.path, threads=args.threads)
    except DeployError as e:
        print(f"error: cannot quantise: {e}", file=sys.stderr)
        return 2
    sizes = {"fp32": fp32_path.stat().st_size, "int8": qi.path.stat().st_size}
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(qi.quantized_ops.items()))
    left = ", ".join(f"{k} x{v}" for k, v in sorted(qi.float_ops.items())) or "none"
    print(f"wrote {qi.path} ({sizes['int8'] / 2**20:.2f} MiB, {sizes['int8'] / sizes['fp32']:.2f}x the fp32 file) "
          f"in {qi.seconds:.1f} s: ONNX Runtime {ort.__version__} quantize_static, QDQ, per-channel "
          f"{qi.weight_type} weights{' (7-bit, reduce_range)' if qi.reduce_range else ''}, {qi.activation_type} "
          f"activations, {qi.method} calibration; onnx.checker: ok")
    if not qi.reduce_range and not cpu_has_vnni():
        print("int8: note: 8-bit weights checked on a CPU without VNNI, whose uint8 x int8 kernels saturate: the "
              "figures below understate the file on a VNNI target (--int8-reduce-range auto quantises for this CPU)")
    print(f"int8 weights: {ops}; QuantizeLinear x{qi.op_counts['QuantizeLinear']}, DequantizeLinear "
          f"x{qi.op_counts['DequantizeLinear']}; compute ops left in float: {left}", flush=True)

    try:
        rep = evaluate_variants(cfg, model, graph, {"fp32": fp32_session, "int8": session}, tuple(x.shape[1:]),
                                metric=task.test_metric, max_images=args.eval_images, log=print)
    except DeployError as e:  # the metric cannot be taken from ORT's outputs: compare the outputs only
        print(f"int8: the task's metric is NOT evaluated ({e}); comparing raw outputs only")
        for name, sess in (("fp32", fp32_session), ("int8", session)):
            d = output_difference(graph, sess, x)
            print(f"{name} ONNX Runtime vs PyTorch on {len(x)} test image(s): largest |difference| "
                  f"{d['max_abs']:.3g}, mean {d['mean_abs']:.3g} (outputs up to {d['range']:.3g})")
        rep = None
    lat = latency_pair(fp32_session, session, x[:1].float().numpy(), threads=args.threads,
                       repeats=args.latency_repeats)
    if rep is not None:
        evaluator = cfg.test_evaluator
        kinds = ", ".join(e.get("type", "?") for e in (evaluator if isinstance(evaluator, (list, tuple))
                                                        else [evaluator]))
        print(f"\nint8 vs fp32 on the test split ({kinds}, {rep.evaluated} samples"
              f"{f', {rep.skipped} of another input shape skipped' if rep.skipped else ''}):")
        print(report_table(rep, sizes={**sizes}, latency=lat))
        drop = metric_drop(rep)
        if drop is not None:
            better = "higher" if rep.higher_better else "lower"
            print(f"drop ({rep.headline}, {better} is better; fp32 ORT -> int8 ORT): {drop:+.4g}  "
                  f"(fp32 ORT vs PyTorch: {metric_drop(rep, 'torch', 'fp32'):+.4g})")
        else:
            print("drop: no headline metric among the evaluator's keys: see the metrics below")
        for name in ("fp32", "int8"):
            d = rep.output_diff[name]
            print(f"{name} ORT outputs vs PyTorch: largest |difference| {d['max_abs']:.3g}, mean "
                  f"{d['mean_abs']:.3g} (outputs up to {d['range']:.3g})")
        print("all metrics: " + json.dumps({n: {k: _num(v) for k, v in r.metrics.items()}
                                            for n, r in rep.variants.items()}))
    print(f"file size: fp32 {sizes['fp32'] / 2**20:.2f} MiB, int8 {sizes['int8'] / 2**20:.2f} MiB "
          f"({sizes['int8'] / sizes['fp32']:.2f}x)")
    print(f"latency (ONNX Runtime CPU, {lat.threads} intra-op thread{'s' if lat.threads != 1 else ''}, batch 1, "
          f"median of {lat.repeats} runs after {lat.warmup} warm-up, fp32 and int8 runs interleaved): fp32 "
          f"{lat.fp32_ms:.2f} ms, int8 {lat.int8_ms:.2f} ms, int8 / fp32 = {lat.ratio:.2f}x")
    return 0


def _num(v):
    try:
        return round(float(v), 6)
    except (TypeError, ValueError):
        return str(v)


if __name__ == "__main__":
    sys.exit(main())

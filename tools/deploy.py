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
    args = p.parse_args(argv)
    for f in (args.config, args.checkpoint):
        if not Path(f).is_file():
            print(f"error: file not found: {f}", file=sys.stderr)
            return 2
    if args.images < 1:
        print("error: --images must be >= 1", file=sys.stderr)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

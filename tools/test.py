#!/usr/bin/env python
"""Evaluate a fine-tuned model and report its metrics, parameters and multiply-adds.

Works for mmseg segmentors (aux heads excluded from the parameters), mmdet detectors (the whole detector;
MAdds of backbone, neck and head up to the raw head outputs, no box decoding or NMS) and our restorers.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--input-size 512 512] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # our own mmengine checkpoints


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--work-dir")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="image size for MAdds (default: the config's test resize)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    import torch
    from mmengine.config import Config, DictAction
    from mmengine.runner import Runner

    from densenas.export_det import empty_metric_note
    from densenas.objectives import count_madds, count_params

    for f in (args.config, args.checkpoint):
        if not Path(f).is_file():
            print(f"error: file not found: {f}", file=sys.stderr)
            return 2
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest="o")(None, ns, args.cfg_options)
        cfg.merge_from_dict(ns.o)
    cfg.work_dir = args.work_dir or str(Path(args.checkpoint).parent)
    cfg.load_from = args.checkpoint
    if isinstance(cfg.get("visualizer"), dict):
        # mmengine keeps one visualizer per name for the whole process: a fixed name (mmseg's configs use
        # "visualizer") would send a second run's files to the first run's, possibly deleted, log dir
        cfg.visualizer.pop("name", None)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    model = runner.model.eval()
    restoration = cfg.model.type == "DenseNASRestorer"
    detection = hasattr(model, "bbox_head") or cfg.get("default_scope") == "mmdet"
    size = args.input_size or (_restoration_size(cfg, runner) if restoration else _test_size(cfg))
    if detection and not args.input_size:  # the preprocessor pads every batch to this multiple
        div = int(cfg.model.get("data_preprocessor", {}).get("pad_size_divisor", 1) or 1)
        size = tuple(-(-s // div) * div for s in size)
    if restoration:
        params, channels = count_params(model.net), cfg.model.net.get("in_channels", 3)
    elif detection:
        params, channels = count_params(model), 3
    else:
        aux = getattr(getattr(model.decode_head, "decoder", None), "aux_heads", None)
        params, channels = count_params(model) - (count_params(aux) if aux is not None else 0), 3

    class _Tensor(torch.nn.Module):  # plain tensor -> logits / restored image, for the MAdds counter
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            if restoration:
                return self.m(x, mode="tensor")
            out = self.m._forward(x)
            if detection:  # per-output lists of per-level maps -> one flat tuple the tracer accepts
                return tuple(t for part in out for t in (part if isinstance(part, (list, tuple)) else [part])
                             if isinstance(t, torch.Tensor))
            return out

    madds = count_madds(_Tensor(model), torch.zeros(1, channels, *size))
    out = {"metrics": {k: _number(v) for k, v in metrics.items()}, "params": params, "madds": madds,
           "input_size": list(size), "config": args.config, "checkpoint": args.checkpoint}
    print(f"metrics: {out['metrics']}")
    if not metrics:
        print(empty_metric_note("test"))
    what = " (whole detector)" if detection else "" if restoration else " (inference, aux heads excluded)"
    print(f"params{what}: {params / 1e6:.3f} M; "
          f"MAdds at {size[0]}x{size[1]}: {madds / 1e9:.3f} G")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _number(v):
    """A metric as a float (metrics that are text, like a copy-paste summary line, are kept as text)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _test_size(cfg) -> tuple[int, int]:
    for step in cfg.test_dataloader.dataset.pipeline:
        if step.get("type") == "Resize":
            w, h = step["scale"]
            return (min(h, w), min(h, w)) if step.get("keep_ratio") else (h, w)
    return (512, 512)


def _restoration_size(cfg, runner) -> tuple[int, int]:
    crop = cfg.test_dataloader.dataset.get("crop")
    if crop:
        return (int(crop), int(crop))
    return tuple(runner.test_dataloader.dataset[0]["inputs"].shape[-2:])


if __name__ == "__main__":
    sys.exit(main())

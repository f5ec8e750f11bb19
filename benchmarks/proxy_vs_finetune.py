#!/usr/bin/env python
"""Does the search's proxy trainer train a candidate the way the exported mmengine recipe does?

A search ranks archs by training them in :mod:`densenas.evaluation.proxy`; the user fine-tunes the exported
config with ``tools/train.py``. When the two trainers disagree on some archs, the search's ranking cannot
hold whatever the budget. This tool measures both halves on the search's own validation set:

* ``proxy``: candidates of a finished search (``--ids``, or ``--heatmap-head`` for mmpose's ``HeatmapHead``
  built from mmpose itself, in the keypoint task's candidate wrapper) trained by the search's evaluator under
  ``--cfg-options`` overrides, e.g. an end-to-end run of the fine-tune's length::

      python benchmarks/proxy_vs_finetune.py proxy configs/search/keypoints_ext_proxy_1200_256x192.py \\
          --ids 2 --cfg-options evaluator.stage1.iters=20 evaluator.stage2.iters=300 evaluator.early_stop=False

* ``checkpoint``: an mmengine checkpoint of the exported model of candidate ``--id`` (backbone
  ``DenseNASBackbone``, head ``decoder_net``) scored by the search's validation, so the metrics of both
  trainers come from one function (they match mmpose's own evaluator: ``tests/test_kpt_resolution.py``)::

      python benchmarks/proxy_vs_finetune.py checkpoint configs/search/keypoints_ext_proxy_1200_256x192.py \\
          --id 2 --checkpoint work_dirs/<run>/iter_300.pth

One JSON line per result. Measured with it: docs/depth_keypoints.md, "The proxy trains the fused heads better
than the exported recipe".
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["proxy", "checkpoint"])
    p.add_argument("config", help="the search config")
    p.add_argument("--checkpoint", help="mode checkpoint: the fine-tuned model's .pth")
    p.add_argument("--work-dir", help="the search's work dir (default: the config's work_dir)")
    p.add_argument("--ids", default="", help="mode proxy: candidate ids of the search's history, e.g. 2,11")
    p.add_argument("--id", type=int, help="mode checkpoint: the candidate the checkpoint was exported from")
    p.add_argument("--heatmap-head", type=int, default=0, metavar="C",
                   help="mode proxy: also train mmpose's HeatmapHead with C deconvolution channels "
                        "(its own init_weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def heatmap_head_candidate(task, build, space, arch, shapes, channels: int):
    """mmpose's ``HeatmapHead`` (deconvolutions of ``channels``, 4x4) as a candidate of the keypoint task
    (``build``: the task's own ``build_candidate``)."""
    from mmpose.models.heads import HeatmapHead
    from torch import nn

    ref = build(space, arch, shapes)  # for its codec, crop size and flip test
    last = list(shapes.values())[-1].channels

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = HeatmapHead(in_channels=last, out_channels=int(task.data.num_keypoints),
                                    deconv_out_channels=(channels,) * 3, deconv_kernel_sizes=(4, 4, 4))
            self.head.init_weights()  # mmpose's Normal(std=0.001) convolutions, as the exported model starts

        def forward(self, feats):
            return self.head(tuple(feats))

    return type(ref)(Head(), ref.codec, ref.input_size, ref.flip)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.history import History

    cfg = load_config(args.config, args.cfg_options)
    work_dir = Path(args.work_dir or cfg.get("work_dir"))
    search = build_search(cfg, work_dir=work_dir)
    with History(work_dir / "history.sqlite") as h:
        cands = {c.id: c for c in h.candidates()}
    ev = getattr(search.evaluator, "inner", search.evaluator)
    if args.mode == "checkpoint":
        from densenas.safeload import safe_torch_load

        if args.checkpoint is None or args.id is None:
            raise SystemExit("mode checkpoint needs --checkpoint and --id")
        state = safe_torch_load(args.checkpoint, mmengine_types=True)["state_dict"]
        cand, enc = ev.candidate(cands[args.id].arch, args.seed), copy.deepcopy(ev.encoder)

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        enc.load_state_dict(part("backbone.encoder."))
        missing = cand.decoder.load_state_dict(part("head.decoder_net."), strict=False).missing_keys
        if any(not k.startswith("aux_heads.") for k in missing):  # only the training-time aux heads may lack
            raise SystemExit(f"{args.checkpoint}: not the model of candidate #{args.id} (missing {missing[:3]})")
        with torch.no_grad():
            metrics = ev._validate(cand, lambda idx: enc.eval()(ev.images["val"][idx]))
        print(json.dumps(dict(checkpoint=args.checkpoint, id=args.id, reward=round(search.task.reward(metrics), 4),
                              **{k: round(v, 4) for k, v in metrics.items()})), flush=True)
        return 0
    jobs = [(f"#{i}", cands[int(i)].arch, None) for i in filter(None, args.ids.split(","))]
    if args.heatmap_head:
        jobs.append((f"HeatmapHead{args.heatmap_head}", next(iter(cands.values())).arch, args.heatmap_head))
    build = search.task.build_candidate
    for name, arch, channels in jobs:
        search.task.build_candidate = build if channels is None else (
            lambda space, a, shapes, c=channels: heatmap_head_candidate(search.task, build, space, a, shapes, c))
        t0 = time.perf_counter()
        r = ev.evaluate(arch, seed=args.seed)
        keep = {k: round(v, 4) for k, v in r.metrics.items() if k.startswith(("stage1_", "stage2_"))}
        print(json.dumps(dict(candidate=name, reward=None if r.reward is None else round(r.reward, 4), seconds=round(time.perf_counter() - t0, 1),
                              error=r.error, **keep)), flush=True)
    search.task.build_candidate = build
    return 0


if __name__ == "__main__":
    sys.exit(main())

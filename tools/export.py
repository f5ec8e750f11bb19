#!/usr/bin/env python
"""Write an mmseg / mmengine config for a found architecture, or for a hand-designed baseline.

    python tools/export.py work_dirs/auxcell_proxy/best_arch.json --out configs/finetune/found_proxy.py
    python tools/export.py --baseline aspp --out configs/finetune/baseline_aspp_proxy.py
    # real data: --dataset voc --data-root data/VOCdevkit/VOC2012 --crop 512 --iters 40000

    # Auto-DeepLab (whole network + ASPP head), from a differentiable search:
    python tools/export.py work_dirs/autodeeplab_proxy/derived_arch.json --out adl.py --crop 64
    # IR-NAS restoration net, and DnCNN with at least as many parameters (same data and schedule):
    python tools/export.py work_dirs/irnas_denoise_proxy/derived_arch.json --out irnas.py --sigma 25
    python tools/export.py work_dirs/irnas_denoise_proxy/derived_arch.json --baseline dncnn --out dncnn.py

    # detection (mmdet, COCO AP): a NAS-FCOS / NAS-FPN arch, and FPN + FCOS head at the search's width
    python tools/export.py work_dirs/nasfcos_fpn_proxy/best_arch.json --out nasfcos.py
    python tools/export.py --baseline fpn_fcos --width 32 --out fpn_fcos.py

Both use the same data pipeline and schedule, so `tools/train.py` fine-tunes them under the same budget.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", nargs="?", help="arch JSON (best_arch.json of a search)")
    p.add_argument("--baseline", choices=["aspp", "deeplabv3plus", "lraspp", "fcn", "dncnn", "fpn_fcos",
                                          "fpn_retinanet"],
                   help="export a baseline (same data and schedule): an mmseg head on the same encoder, "
                        "DnCNN for restoration (with an IR-NAS arch: at least its parameter count), or "
                        "mmdet's FPN + FCOS / RetinaNet head for detection")
    p.add_argument("--out", required=True, help="config file to write")
    p.add_argument("--dataset", default="proxy", choices=["proxy", "voc", "cityscapes"])
    p.add_argument("--data-root", default=None,
                   help="default: data/proxy_voc (segmentation), data/proxy_restore (restoration), "
                        "data/proxy_coco (detection)")
    p.add_argument("--layout", choices=["coco", "voc"], default="coco", help="detection dataset layout")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="detection optimizer")
    p.add_argument("--crop", type=int, default=None,
                   help="training crop (height) in pixels (default 128; 48 for restoration)")
    p.add_argument("--task", choices=["denoise", "derain"], default="denoise", help="restoration task")
    p.add_argument("--sigma", type=float, default=25, help="denoising noise level (0..255)")
    p.add_argument("--width", type=int, default=None,
                   help="decoder channels (default: the search's width for an arch, 128 for a baseline)")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--lr", type=float, default=None,
                   help="default 3e-3 (segmentation), 1e-3 (restoration, detection)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--val-interval", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work-dir", default=None, help="work_dir written into the config")
    args = p.parse_args(argv)
    if (args.arch is None) == (args.baseline is None) and args.baseline != "dncnn":
        p.error("give an arch JSON or --baseline, not both (except --baseline dncnn with an IR-NAS arch)")

    from densenas.arch import Arch, InvalidArch
    from densenas.export import export_config
    from densenas.export_det import BASELINES as DET_BASELINES, DET_SPACES

    arch, width, extra, searched = None, args.width, {}, {}
    if args.arch:
        try:
            arch = Arch.load(args.arch)
        except (InvalidArch, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        searched = _search_space(Path(args.arch))
    if args.baseline in DET_BASELINES or (arch is not None and arch.space in DET_SPACES):
        return _export_detection(args, arch)
    if args.baseline == "dncnn" or (arch is not None and arch.space == "irnas"):
        from densenas.export_restoration import restoration_config

        try:
            out = restoration_config(
                args.out, arch=arch, baseline=args.baseline,
                data_root=args.data_root or "data/proxy_restore", layout="rain100" if args.task == "derain" else "bsd", task=args.task, sigma=args.sigma,
                crop=args.crop or 48, iters=args.iters, lr=args.lr or 1e-3, batch_size=args.batch_size,
                val_interval=args.val_interval, space=searched or None, width=args.width,
                workers=args.workers, work_dir=args.work_dir)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {args.arch or args.baseline}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {out}")
        return 0
    if arch is not None:
        if arch.space == "autodeeplab":
            extra["filter_multiplier"] = searched.get("filter_multiplier", 8)
            width = width or searched.get("aspp_channels", 64)
        elif width is None:
            width = searched.get("width", 48)
    try:
        out = export_config(args.out, arch=arch, baseline=args.baseline, dataset=args.dataset,
                            data_root=args.data_root or "data/proxy_voc", crop=args.crop or 128,
                            width=width or 128, iters=args.iters, lr=args.lr or 3e-3,
                            batch_size=args.batch_size,
                            val_interval=args.val_interval, workers=args.workers, work_dir=args.work_dir,
                            **extra)
    except (ValueError, FileNotFoundError) as e:  # InvalidArch is a ValueError
        print(f"error: {args.arch or args.baseline}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _export_detection(args: argparse.Namespace, arch) -> int:
    """Write the mmdet config of a NAS-FCOS / NAS-FPN arch or an FPN baseline (same data and schedule)."""
    from densenas.export_det import detection_config

    space = _search_space(Path(args.arch)) if args.arch else {}
    task = _search_space(Path(args.arch), "task") if args.arch else {}
    try:
        out = detection_config(
            args.out, arch=arch, baseline=args.baseline, space=space or None, task=task or None,
            data_root=args.data_root or "data/proxy_coco", layout=args.layout, crop=args.crop or 128,
            width=args.width, iters=args.iters, lr=args.lr or 1e-3, optimizer=args.optimizer,
            batch_size=args.batch_size, val_interval=args.val_interval, workers=args.workers,
            work_dir=args.work_dir)
    except (ValueError, FileNotFoundError) as e:  # InvalidArch and ConfigError are ValueErrors
        print(f"error: {args.arch or args.baseline}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _search_space(arch_path: Path, section: str = "space") -> dict:
    """A section (default ``space``) of the search's dumped config next to the arch JSON, if known."""
    cfg_path = arch_path.parent / "config.py"
    if not cfg_path.is_file():
        return {}
    from mmengine.config import Config

    return dict(Config.fromfile(str(cfg_path)).get(section, None) or {})


if __name__ == "__main__":
    sys.exit(main())

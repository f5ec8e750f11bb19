#!/usr/bin/env python
"""Peak memory of one supernet training step: IR-NAS vs the Auto-DeepLab lattice, side by side.

IR-NAS (Zhang et al., "Memory-Efficient Hierarchical Neural Architecture Search for Image Restoration")
reports about a third of Auto-DeepLab's search memory: it keeps every layer at full resolution and searches
widths (W / 2W / 4W), where Auto-DeepLab (Liu et al., CVPR 2019) runs a cell at each of four strides per
layer. Here both supernets get the same depth (layers), blocks per cell, base width (IR-NAS ``width`` =
Auto-DeepLab ``filter_multiplier``), input and batch, and run one forward + backward + optimiser step.

Measured per supernet, each in a fresh process (so one cannot inherit the other's allocator pool):

* ``activations``: bytes of the tensors autograd saves for the backward pass (exact, through
  ``torch.autograd.graph.saved_tensors_hooks``): the part of memory the two designs differ in;
* ``peak RSS``: growth of the process's peak resident memory over the step (what ``top`` would show);
* ``CUDA peak``: ``torch.cuda.max_memory_allocated`` when a GPU is present.

    python benchmarks/bench_supernet_memory.py [--layers 4] [--blocks 2] [--width 8] [--size 64] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def measure(kind: str, layers: int, blocks: int, width: int, size: int, batch: int) -> dict[str, float]:
    """One supernet step of ``kind`` (``irnas`` / ``autodeeplab``) in this process; memory figures."""
    import torch

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "irnas":
        from densenas.decoders.irnas import IRNASSpace
        from densenas.tasks.restoration.functional import restoration_loss

        net = IRNASSpace(width=width, layers=layers, blocks=blocks).build_supernet()
        x = torch.rand(batch, 3, size, size)
        target, loss_fn = x.clone(), restoration_loss
    else:
        from densenas.decoders.autodeeplab import AutoDeepLabSpace
        from densenas.tasks.segmentation.losses import seg_loss

        net = AutoDeepLabSpace(num_classes=5, layers=layers, blocks=blocks,
                               filter_multiplier=width).build_supernet()
        x = torch.rand(batch, 3, size, size)
        target, loss_fn = torch.randint(0, 5, (batch, size, size)), seg_loss
    net, x, target = net.to(device), x.to(device), target.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(net(x), target)
    loss.backward()
    opt.step()
    out = {"params": float(sum(p.numel() for p in net.parameters())), "activations": float(saved[0]),
           "rss": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024}
    if device.type == "cuda":
        out["cuda_peak"] = float(torch.cuda.max_memory_allocated())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--width", type=int, default=8, help="IR-NAS width W = Auto-DeepLab filter multiplier F")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--child", choices=["irnas", "autodeeplab"], help=argparse.SUPPRESS)
    args = p.parse_args()
    dims = (args.layers, args.blocks, args.width, args.size, args.batch)
    if args.child:
        print(json.dumps(measure(args.child, *dims)))
        return
    def run(kind: str, size: int) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--child", kind, "--layers", str(args.layers), "--blocks",
               str(args.blocks), "--width", str(args.width), "--size", str(size), "--batch", str(args.batch)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.splitlines()[-1])

    mib = 2 ** 20
    ir = run("irnas", args.size)
    print(f"one supernet step, {args.layers} layers x {args.blocks} blocks, base width {args.width}, "
          f"batch {args.batch}; IR-NAS at {args.size}x{args.size} (every layer at full resolution)")
    # Auto-DeepLab's stem goes to stride 4: compare at the same input, and at the same finest feature map
    for adl_size, what in ((args.size, "same input"), (4 * args.size, "same finest feature resolution")):
        adl = run("autodeeplab", adl_size)
        print(f" vs Auto-DeepLab at {adl_size}x{adl_size} ({what}):")
        for key, label in (("activations", "saved activations"), ("rss", "peak RSS growth"),
                           ("cuda_peak", "CUDA peak allocated")):
            if key in ir and key in adl:
                print(f"  {label:20s} IR-NAS {ir[key] / mib:8.1f} MiB vs Auto-DeepLab {adl[key] / mib:8.1f} MiB"
                      f" -> IR-NAS/Auto-DeepLab = {ir[key] / adl[key]:.2f}")
    print(f"  {'parameters':20s} IR-NAS {ir['params'] / 1e6:8.2f} M   vs Auto-DeepLab {adl['params'] / 1e6:8.2f} M")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""DCNv2 (Zhu et al., CVPR 2019) forward+backward time of the three backends of :mod:`densenas.deform`,
measured side by side in one run, rounds interleaved, at the sizes our searches use:

* ``nasfcos-head``: the NAS-FCOS head on a 128 px proxy image, batch 16, width 32, the five pyramid levels
  P3-P7 (16x16 ... 1x1) through one shared layer;
* ``irnas-w4`` / ``irnas-w16``: an IR-NAS cell edge at 32 px, batch 8, 4 or 16 channels;
* ``irnas-w16-64px``: the same at 64 px.

Prints milliseconds per forward+backward and each backend's time relative to the default (``auto``,
sampled on CPU). On CUDA, ``auto`` calls torchvision's kernel.

    python benchmarks/bench_deform.py [--rounds 5] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured);
# sleeping waits cost nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 (after OMP_WAIT_POLICY)

CASES = {  # name: (batch, channels, spatial sizes run through the same layer)
    "nasfcos-head": (16, 32, (16, 8, 4, 2, 1)),
    "irnas-w4": (8, 4, (32,)),
    "irnas-w16": (8, 16, (32,)),
    "irnas-w16-64px": (8, 16, (64,)),
}


def step_ms(layer: torch.nn.Module, inputs: list[torch.Tensor], reps: int) -> float:
    """Milliseconds per forward+backward over all ``inputs`` (mean of ``reps`` repetitions)."""
    def once() -> None:
        layer.zero_grad()
        loss = sum(layer(x).square().mean() for x in inputs)
        loss.backward()

    once()  # warm-up
    if inputs[0].is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    if inputs[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (median reported)")
    p.add_argument("--reps", type=int, default=3, help="forward+backward repetitions per round")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import numpy as np

    from densenas.deform import BACKENDS, modulated_deform_conv

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backends = []
    for name in BACKENDS:
        try:
            modulated_deform_conv(4, 4, name)
            backends.append(name)
        except ImportError as e:
            print(f"backend {name} unavailable ({e}); skipped")
    print(f"device {device}, {args.threads} thread(s), {args.rounds} interleaved rounds x {args.reps} reps")
    print(f"{'case':16s} " + " ".join(f"{b + ' ms':>15s}" for b in backends) + "   ratios to auto")
    for case, (batch, channels, sizes) in CASES.items():
        gen = torch.Generator().manual_seed(0)
        ref = modulated_deform_conv(channels, channels, "auto")
        with torch.no_grad():  # trained-looking offsets and masks, some samples outside the map
            ref.conv_offset.weight.normal_(0, 0.1, generator=gen)
            ref.conv_offset.bias.normal_(0, 1.0, generator=gen)
        layers = {}
        for b in backends:
            layers[b] = modulated_deform_conv(channels, channels, b).to(device)
            layers[b].load_state_dict(ref.state_dict())
        inputs = [torch.randn(batch, channels, s, s, generator=gen).to(device).requires_grad_(True) for s in sizes]
        times: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(args.rounds):
            for b in backends:
                times[b].append(step_ms(layers[b], inputs, args.reps))
        med = {b: float(np.median(t)) for b, t in times.items()}
        ratios = ", ".join(f"{b} {med[b] / med['auto']:.2f}x" for b in backends if b != "auto")
        print(f"{case:16s} " + " ".join(f"{med[b]:15.1f}" for b in backends) + f"   {ratios}", flush=True)


if __name__ == "__main__":
    main()

"""Subprocess entry of the data-parallel supernet test (tests/test_distributed.py).

    python tests/_dist_supernet.py OUT --launcher none --batch-size 8
    python -m torch.distributed.run --nproc_per_node 2 ... tests/_dist_supernet.py OUT --launcher pytorch ...

Trains a tiny IR-NAS supernet (denoising of random images, MSE loss: a mean over samples, so the global
batch's gradient is the shard-weighted sum of the ranks') with first-order DARTS through the one loop
(densenas.loop.run), as tools/search.py does: rank 0 writes its history and checkpoint into OUT/work, the
other ranks into a scratch dir. Every rank saves its final supernet state to OUT/rank<r>.pt.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from densenas import distributed as dist  # noqa: E402
from densenas.decoders.irnas import IRNASSpace  # noqa: E402
from densenas.evaluation.supernet import build_supernet_trainer  # noqa: E402
from densenas.history import History  # noqa: E402
from densenas.loop import Budget, default_hooks, run  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, 16, 16, generator=g)
    return (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1), clean


def score(net, split) -> tuple[float, dict[str, float]]:
    net.eval()  # running statistics, as the tasks' score functions do
    with torch.no_grad():
        mse = float(F.mse_loss(net(split[0]), split[1]))
    return -mse, {"mse": mse}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--launcher", default="none", choices=dist.LAUNCHERS)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    dist.init(args.launcher)
    out = Path(args.out)
    work = out / "work" if dist.is_main() else Path(tempfile.mkdtemp(prefix=f"dist_rank{dist.rank()}_"))
    space = IRNASSpace(width=2, layers=2, blocks=1, ops=("conv3x3", "sep_conv_3x3", "skip", "none"), aspp=False)
    strategy = build_strategy({"type": "darts", "seed": 0, "w_lr": 0.05, "arch_lr": 3e-2,
                               "batch_size": args.batch_size, "warmup_epochs": 0, "grad_clip": 5.0}, space)
    trainer = build_supernet_trainer(space, data(32, 1), data(8, 2), F.mse_loss, score, epochs=args.epochs,
                                     cfg=strategy.cfg, seed=0)
    with History(work / "history.sqlite") as h:
        outcome = run(space, strategy, trainer, h, Budget(epochs=args.epochs, seed=0), work_dir=work,
                      hooks=default_hooks(print if dist.is_main() else None, live=False, tensorboard=False))
    torch.save({"supernet": trainer.supernet.state_dict(), "arch": outcome.arch.to_dict(),
                "world_size": dist.world_size()}, out / f"rank{dist.rank()}.pt")
    dist.destroy()


if __name__ == "__main__":
    main()

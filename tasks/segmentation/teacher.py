"""Teacher for knowledge distillation in stage 1 (Nekrasov et al., CVPR 2019).

The paper distils from a stronger segmentation network. Here the teacher is a DeepLabv3+-style model
(torchvision's ASPP on the coarsest encoder level, fused with the stride-4 level) on a copy of the same
pretrained encoder, trained end to end once per search; its logits on the proxy training images are
cached, so distillation costs each candidate one extra KL term and no teacher forward pass.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from densenas.space import ShapeSpec
from densenas.tasks.segmentation.losses import seg_loss
from densenas.evaluation.cache import fingerprint
from densenas.evaluation.common import set_norm_eval


class TeacherNet(nn.Module):
    """Encoder + ASPP head + low-level fusion; logits at the finest encoder stride."""

    def __init__(self, encoder: nn.Module, shapes: list[ShapeSpec], num_classes: int,
                 width: int = 128, rates: tuple[int, ...] = (2, 4, 6)):
        super().__init__()
        self.encoder = encoder
        self.aspp = ASPP(shapes[-1].channels, list(rates), out_channels=width)
        self.low = nn.Sequential(nn.Conv2d(shapes[0].channels, 48, 1, bias=False),
                                 nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(width + 48, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, num_classes, 1))

    def forward_features(self, feats: list[Tensor]) -> Tensor:
        low = self.low(feats[0])
        high = F.interpolate(self.aspp(feats[-1]), size=low.shape[-2:], mode="bilinear",
                             align_corners=False)
        return self.fuse(torch.cat([high, low], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(self.encoder(x))


def train_teacher(encoder: nn.Module, shapes: list[ShapeSpec], images: Tensor, labels: Tensor,
                  num_classes: int, iters: int = 300, batch_size: int = 8, lr: float = 1e-3,
                  width: int = 128, seed: int = 0, device: str | torch.device = "cpu",
                  path: str | Path | None = None, log=print) -> TeacherNet:
    """Train the teacher end to end (encoder BN frozen), or load it from ``path`` if already trained.

    Args:
        encoder: pretrained encoder; a deep copy is fine-tuned, the argument is left untouched.
        shapes: the encoder's feature shapes.
        images, labels: the proxy training set (normalised images, label maps).
        path: where the trained teacher is stored; an existing file with a matching fingerprint is
            loaded instead of training again (resume).
    """
    torch.manual_seed(seed)
    model = TeacherNet(copy.deepcopy(encoder), shapes, num_classes, width=width).to(device)
    key = fingerprint(images[:4], labels[:4], module=encoder) + f"-{iters}-{batch_size}-{lr}-{seed}"
    if path is not None and Path(path).is_file():
        from densenas.safeload import safe_torch_load  # names the file (and the global) when refusing it

        blob = safe_torch_load(path, mmengine_types=False)
        if blob.get("key") == key:
            model.load_state_dict(blob["state_dict"])
            log(f"teacher loaded from {path}")
            return model.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(iters, 1))
    model.train()
    set_norm_eval(model.encoder)
    t0 = time.perf_counter()
    for it in range(iters):
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        logits = model(images[idx].to(device))
        loss = seg_loss(logits, labels[idx].to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"teacher training diverged at iter {it} (loss {loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % max(iters // 5, 1) == 0:
            log(f"teacher iter {it + 1}/{iters} loss {loss.item():.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        torch.save({"key": key, "state_dict": model.state_dict()}, tmp)
        tmp.replace(path)
    return model

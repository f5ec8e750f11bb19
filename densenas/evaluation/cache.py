"""Frozen-encoder feature cache (stage 1 of Nekrasov et al., CVPR 2019).

During stage 1 the pretrained encoder is frozen, so its outputs on the proxy training and validation
images are computed once per search and reused by every candidate decoder; optionally they are also
written to the work dir (keyed by a fingerprint of the images and encoder weights) so a resumed search
skips the recomputation.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn


def fingerprint(*tensors: Tensor, module: nn.Module | None = None) -> str:
    """Short content hash of tensors and a module's parameters (to key on-disk caches)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if module is not None:
        for name, p in module.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode(encoder: nn.Module, images: Tensor, batch_size: int = 16,
           device: str | torch.device = "cpu") -> list[Tensor]:
    """Run the encoder in eval mode over ``images`` in batches; returns one tensor per level (on CPU)."""
    was_training = encoder.training
    encoder.eval()
    outs: list[list[Tensor]] = []
    for i in range(0, len(images), batch_size):
        feats = encoder(images[i:i + batch_size].to(device))
        outs.append([f.cpu() for f in feats])
    encoder.train(was_training)
    return [torch.cat(level) for level in zip(*outs)]


class FeatureCache:
    """Encoder outputs for a fixed set of images, computed once (and optionally stored on disk)."""

    def __init__(self, encoder: nn.Module, images: Tensor, batch_size: int = 16,
                 device: str | torch.device = "cpu", path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        key = fingerprint(images, module=encoder) if self.path is not None else None
        loaded = None
        if self.path is not None and self.path.is_file():
            from ..safeload import safe_torch_load  # names the file (and the global) when refusing it

            blob = safe_torch_load(self.path, mmengine_types=False)
            if blob.get("key") == key:
                loaded = blob["features"]
        if loaded is None:
            loaded = encode(encoder, images, batch_size, device)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(f".tmp{os.getpid()}")  # concurrent writers never share it
                torch.save({"key": key, "features": loaded}, tmp)
                tmp.replace(self.path)
        self.features: list[Tensor] = loaded

    def __len__(self) -> int:
        return len(self.features[0])

    def batch(self, idx: Tensor, device: str | torch.device = "cpu") -> list[Tensor]:
        return [f[idx].to(device) for f in self.features]

"""Segmentation candidates and targets for the proxy trainer (:mod:`densenas.evaluation.proxy`).

After Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation Models via
Auxiliary Cells" (CVPR 2019): a candidate decoder is trained with pixel-wise cross entropy, the same loss
on the outputs of its auxiliary cells (heads that exist only in training), and knowledge distillation
from the cached logits of a teacher; it is scored by the geometric mean of mIoU, frequency-weighted IoU
and pixel accuracy from one confusion matrix over the proxy validation set.

* :class:`SegCandidate` wraps a decoder of the space (``space.build(arch, shapes)``, giving logits, or
  ``(logits, [aux logits])`` in training mode) into the candidate contract of the proxy trainer: ``loss``
  returns the unweighted terms ``loss_seg``, ``loss_aux0..`` and ``loss_kd`` (the trainer weights them by
  ``aux_weight`` / ``kd_weight``), ``predict`` the predicted label map, ``forward(*feats)`` the logits.
* :class:`SegTargets` holds the labels (and teacher logits) of the proxy splits and gives the task's
  ``batch``, ``metrics`` and ``reward``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.evaluation.common import Diverged
from densenas.evaluation.device_loop import DeviceCopies
from densenas.space import SearchSpace, ShapeSpec
from densenas.tasks.dense import split_outputs  # noqa: F401  (also this module's public name, as before)

from .losses import confusion_matrix, kd_loss, resize_logits, seg_loss, seg_metrics, seg_reward

SegBatch = dict[str, Tensor]


class SegCandidate(nn.Module):
    """A segmentation decoder as a proxy-trainer candidate.

    Args:
        decoder: takes the list of encoder features; returns logits, or ``(logits, aux_list)`` in training.
        kd_temperature: softening temperature of the distillation term (Hinton et al.).
    """

    def __init__(self, decoder: nn.Module, kd_temperature: float = 1.0):
        super().__init__()
        self.decoder, self.kd_temperature = decoder, float(kd_temperature)

    @property
    def aux_heads(self) -> nn.Module | None:
        """The decoder's training-only auxiliary heads (left out of the deployed parameter count)."""
        return getattr(self.decoder, "aux_heads", None)

    def forward(self, *feats: Tensor) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The decoder on the encoder levels ``feats`` (logits in eval mode)."""
        return self.decoder(list(feats))

    def loss(self, feats: Sequence[Tensor], batch: SegBatch) -> dict[str, Tensor]:
        """Unweighted terms: ``loss_seg``, one ``loss_aux<i>`` per auxiliary output, and ``loss_kd`` when
        ``batch`` carries ``teacher`` logits."""
        logits, aux = split_outputs(self.decoder(list(feats)))
        labels = batch["labels"]
        losses = {"loss_seg": seg_loss(logits, labels)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = seg_loss(a, labels)
        teacher = batch.get("teacher")
        if teacher is not None:
            losses["loss_kd"] = kd_loss(logits, teacher, labels, self.kd_temperature)
        return losses

    def predict(self, feats: Sequence[Tensor], batch: SegBatch) -> Tensor:
        """Predicted labels at the resolution of ``batch["labels"]`` (int64, on the CPU).

        Raises:
            Diverged: non-finite logits.
        """
        logits, _ = split_outputs(self.decoder(list(feats)))
        logits = resize_logits(logits.float(), tuple(batch["labels"].shape[-2:]))
        if not torch.isfinite(logits).all():
            raise Diverged("non-finite logits at validation")
        return logits.argmax(1).cpu()


def build_seg_candidate(space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec],
                        kd_temperature: float = 1.0) -> SegCandidate:
    """:class:`SegCandidate` around ``space.build(arch, shapes)``."""
    return SegCandidate(space.build(arch, shapes), kd_temperature)


class SegTargets:
    """Labels of the proxy splits (and teacher logits of the training images) for the proxy trainer.

    Args:
        train_y, val_y: ``N x H x W`` int64 labels (255 ignored) of the ``"train"`` / ``"val"`` images.
        num_classes: classes of the confusion matrix.
        teacher_logits: ``N_train x K x h x w`` cached teacher logits on the training images (``None``: no
            distillation); may be set later (once the teacher is trained).
    """

    def __init__(self, train_y: Tensor, val_y: Tensor, num_classes: int, teacher_logits: Tensor | None = None):
        self.labels = {"train": train_y, "val": val_y}
        self.num_classes = int(num_classes)
        self.teacher_logits = teacher_logits
        self._on = DeviceCopies()  # labels and teacher logits moved to the training device once

    def _labels(self, split: str) -> Tensor:
        if split not in self.labels:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.labels)}")
        return self.labels[split]

    def batch(self, split: str, idx: Tensor, device: Any) -> SegBatch:
        """``{"labels"}`` of images ``idx``, plus ``"teacher"`` logits on the training split when cached."""
        out = {"labels": self._on(self._labels(split), device)[idx]}
        if split == "train" and self.teacher_logits is not None:
            out["teacher"] = self._on(self.teacher_logits, device)[idx]
        return out

    def metrics(self, preds: list[Tensor], split: str) -> dict[str, float]:
        """``miou``, ``fwiou`` and ``pixel_acc`` from the predicted label maps of consecutive batches."""
        labels, k = self._labels(split), self.num_classes
        conf = torch.zeros(k, k, dtype=torch.long)
        i = 0
        for pred in preds:
            conf += confusion_matrix(pred, labels[i:i + len(pred)], k)
            i += len(pred)
        if i != len(labels):
            raise ValueError(f"predictions cover {i} images of split {split!r}, which has {len(labels)}")
        return seg_metrics(conf)

    @staticmethod
    def reward(metrics: Mapping[str, float]) -> float:
        """Geometric mean of mIoU, fwIoU and pixel accuracy."""
        return seg_reward(dict(metrics))

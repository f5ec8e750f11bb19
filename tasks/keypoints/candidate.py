"""Keypoint candidates and targets for the proxy trainer (:mod:`densenas.evaluation.proxy`).

A decoder of a segmentation space (Nekrasov et al., CVPR 2019) with ``num_classes = K`` output channels
is a top-down heatmap head (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV
2018): its logits are bilinearly resized to the heatmap size (input / 4) and trained with mmpose's
``KeypointMSELoss`` weighted by the codec's target weights; each auxiliary cell's output gets the same loss
(``loss_aux<i>``). ``predict`` decodes the heatmaps with the search's mmpose codec (``data.codec``: MSRA, DARK
or UDP, :mod:`.data`) and maps the keypoints back to image coordinates.

Flip test (``task.flip_test``), as mmpose's ``HeatmapHead.predict`` with ``test_cfg=dict(flip_test=True,
flip_mode='heatmap', shift_heatmap=...)``: the validation images the trainer sees are the ``N`` crops followed
by the same crops mirrored (:meth:`KptTargets.batch` tells which is which), so both go through the stage's own
encoder (the cached features in stage 1, the fine-tuned encoder in stage 2). ``predict`` returns each batch's
heatmaps (:class:`FlipHeatmaps`; a mirrored crop's flipped back by :func:`.metrics.flip_back`), and
:meth:`KptTargets.metrics` averages each person's two and decodes the mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.evaluation.common import Diverged
from densenas.evaluation.device_loop import DeviceCopies
from densenas.space import SearchSpace, ShapeSpec
from densenas.tasks.dense import split_outputs  # the decoders' (main, aux) outputs

from .metrics import decode_heatmaps, flip_back, keypoint_metrics, keypoint_reward, to_image


@dataclass
class FlipTest:
    """How the search flip-tests (mmpose's ``test_cfg`` with ``flip_mode='heatmap'``).

    Attributes:
        flip_indices: per keypoint, its mirror image's index (the dataset's ``flip_indices``).
        shift_heatmap: shift the flipped-back heatmaps one cell right (:func:`.data.flip_shift`).
    """

    flip_indices: list[int]
    shift_heatmap: bool


@dataclass
class FlipHeatmaps:
    """``predict``'s output under the flip test: the heatmaps of one validation batch in the unflipped frame.

    Attributes:
        person: ``B`` person indices of the split (each comes twice over the whole split: crop and mirror).
        heatmaps: ``B x K x h x w`` float32; a mirrored crop's already flipped back.
    """

    person: np.ndarray
    heatmaps: np.ndarray


def resize_heatmaps(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of ``N x K x h x w`` outputs to ``size = (H, W)`` (no-op when equal)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class KptCandidate(nn.Module):
    """A decoder of a segmentation space as a top-down heatmap head for the proxy trainer.

    Args:
        decoder: takes the list of encoder features; returns ``K``-channel logits, or ``(logits, aux)`` in
            training mode.
        codec: the mmpose codec (its ``heatmap_size`` is the target size; its ``decode`` predicts).
        input_size: the crop size ``(w, h)``.
        flip: the flip test, or ``None``; with it, validation batches carry ``flipped`` and ``person``
            (:meth:`KptTargets.batch`) and ``predict`` returns :class:`FlipHeatmaps`.
    """

    def __init__(self, decoder: nn.Module, codec: Any, input_size: tuple[int, int], flip: FlipTest | None = None):
        super().__init__()
        from mmpose.models.losses import KeypointMSELoss

        self.decoder, self.codec, self.input_size, self.flip = decoder, codec, tuple(input_size), flip
        self.heatmap_hw = (int(codec.heatmap_size[1]), int(codec.heatmap_size[0]))
        self.loss_fn = KeypointMSELoss(use_target_weight=True)

    @property
    def aux_heads(self) -> nn.Module | None:
        return getattr(self.decoder, "aux_heads", None)

    def forward(self, *feats: Tensor) -> Tensor:
        """Heatmaps at the heatmap size (eval mode: the deployed computation)."""
        out, _ = split_outputs(self.decoder(list(feats)))
        return resize_heatmaps(out, self.heatmap_hw)

    def loss(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``loss_kpt`` and one ``loss_aux<i>`` per auxiliary head (unweighted; the trainer weights aux)."""
        out, aux = split_outputs(self.decoder(list(feats)))
        target, weights = batch["heatmaps"], batch["weights"]
        losses = {"loss_kpt": self.loss_fn(resize_heatmaps(out, self.heatmap_hw), target, weights)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = self.loss_fn(resize_heatmaps(a, self.heatmap_hw), target, weights)
        return losses

    def predict(self, feats: Sequence[Tensor], batch: Mapping[str, Any]
                ) -> tuple[np.ndarray, np.ndarray] | FlipHeatmaps:
        """``(keypoints N x K x 2 in image coordinates, scores N x K)``; under the flip test (a batch with
        ``flipped``) the batch's :class:`FlipHeatmaps`, decoded by :meth:`KptTargets.metrics`.

        Raises:
            Diverged: non-finite heatmaps.
            ValueError: a flip-test batch without a :class:`FlipTest` to flip it back with.
        """
        heat = self.forward(*feats).float()
        if not torch.isfinite(heat).all():
            raise Diverged("non-finite heatmaps at validation")
        if "flipped" not in batch:
            kps, scores = decode_heatmaps(heat, self.codec)
            return to_image(kps, batch["centers"], batch["scales"], self.input_size), scores
        if self.flip is None:
            raise ValueError("a flip-test validation batch (with 'flipped') for a candidate built without flip=")
        mirrored = torch.as_tensor(np.asarray(batch["flipped"], bool), device=heat.device)
        if bool(mirrored.any()):
            heat = heat.clone()
            heat[mirrored] = flip_back(heat[mirrored], self.flip.flip_indices, self.flip.shift_heatmap)
        return FlipHeatmaps(np.asarray(batch["person"], np.int64), heat.cpu().numpy())


def build_kpt_candidate(space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec],
                        codec: Any, input_size: tuple[int, int], flip: FlipTest | None = None) -> KptCandidate:
    """:class:`KptCandidate` around ``space.build(arch, shapes)``."""
    return KptCandidate(space.build(arch, shapes), codec, input_size, flip)


class KptTargets:
    """Heatmap targets and metric ground truth of the proxy splits.

    Args:
        data: a :class:`.data.KptData`.
        codec: the mmpose codec decoding flip-tested heatmaps (``None``: no flip test).
        flip_test: the ``"val"`` images are the crops followed by their mirror images (``2 N`` of them).
    """

    def __init__(self, data: Any, codec: Any = None, flip_test: bool = False):
        if flip_test and codec is None:
            raise ValueError("flip_test=True needs the codec that decodes the averaged heatmaps")
        self.data, self.codec, self.flip_test = data, codec, bool(flip_test)
        self.splits = {"train": data.train, "val": data.val}
        self._on = DeviceCopies()  # heatmaps and weights moved to the training device once

    def _split(self, split: str) -> Any:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]

    def batch(self, split: str, idx: Tensor, device: Any) -> dict[str, Any]:
        """``heatmaps``, ``weights`` (on ``device``) of persons ``idx`` and, outside ``"train"`` (where only the
        loss needs the batch, so the indices are not read on the host), their crop ``centers`` / ``scales``.

        Under the flip test, ``"val"`` image ``i`` of ``2 N`` is person ``i mod N``, mirrored when ``i >= N``;
        its batch adds ``person`` and ``flipped`` (host arrays)."""
        s = self._split(split)
        if split != "train" and self.flip_test:
            i = idx.cpu().numpy()
            person = i % len(s)
            j = torch.as_tensor(person, device=idx.device)
            return {"heatmaps": self._on(s.heatmaps, device)[j], "weights": self._on(s.weights, device)[j],
                    "centers": s.centers[person].astype(np.float64), "scales": s.scales[person].astype(np.float64),
                    "person": person, "flipped": i >= len(s)}
        out = {"heatmaps": self._on(s.heatmaps, device)[idx], "weights": self._on(s.weights, device)[idx]}
        if split != "train":
            i = idx.cpu().numpy()
            out.update(centers=s.centers[i].astype(np.float64), scales=s.scales[i].astype(np.float64))
        return out

    def decode_flip_test(self, preds: list[FlipHeatmaps], split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(keypoints N x K x 2 in image coordinates, scores N x K)`` from the mean of each person's two
        heatmaps (crop and flipped-back mirror), decoded by the codec."""
        s = self._split(split)
        person = np.concatenate([p.person for p in preds])
        heat = np.concatenate([p.heatmaps for p in preds])
        counts = np.bincount(person, minlength=len(s))
        if len(counts) != len(s) or (counts != 2).any():
            bad = int(np.flatnonzero(counts != 2)[0])
            raise ValueError(f"flip test: every person of split {split!r} needs 2 heatmaps (crop and mirror); "
                             f"person {bad} has {int(counts[bad])}")
        mean = np.zeros((len(s), *heat.shape[1:]), np.float32)
        np.add.at(mean, person, heat)
        kps, scores = decode_heatmaps(mean * 0.5, self.codec)
        return to_image(kps, s.centers.astype(np.float64), s.scales.astype(np.float64), self.data.input_size), scores

    def metrics(self, preds: list[tuple[np.ndarray, np.ndarray] | FlipHeatmaps], split: str) -> dict[str, float]:
        """PCKh@0.5/0.1 and COCO AP/AR (:func:`.metrics.keypoint_metrics`) of consecutive batches' predictions:
        ``(keypoints, scores)`` of consecutive persons, or the flip test's :class:`FlipHeatmaps`."""
        s = self._split(split)
        k = self.data.num_keypoints
        if preds and all(isinstance(p, FlipHeatmaps) for p in preds):
            return keypoint_metrics(*self.decode_flip_test(preds, split), s, self.data.sigmas)
        if any(isinstance(p, FlipHeatmaps) for p in preds):
            raise ValueError("predictions mix flip-tested heatmaps and decoded keypoints")
        kps = np.concatenate([p[0] for p in preds]).reshape(-1, k, 2) if preds else np.zeros((0, k, 2))
        scores = np.concatenate([p[1] for p in preds]).reshape(-1, k) if preds else np.zeros((0, k))
        if len(kps) != len(s):
            raise ValueError(f"predictions cover {len(kps)} persons of split {split!r}, which has {len(s)}")
        return keypoint_metrics(kps, scores, s, self.data.sigmas)

    @staticmethod
    def reward(metrics: Mapping[str, float]) -> float:
        return keypoint_reward(dict(metrics))

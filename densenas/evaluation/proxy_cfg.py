"""Settings of the two-stage proxy trainer (:mod:`densenas.evaluation.proxy`) of Nekrasov et al., "Fast
Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells" (CVPR 2019): the
``evaluator=dict(type="proxy", ...)`` section of a search config, checked when it is built."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from .common import StageCfg
from .device_loop import AMP
from .graphed import GRAPH_MODES

SAMPLING = ("without_replacement", "with_replacement")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def to_format(x: Tensor, fmt: torch.memory_format) -> Tensor:
    """``x`` in memory format ``fmt`` when it is a 4-D tensor (others as they are)."""
    return x.contiguous(memory_format=fmt) if x.dim() == 4 else x


@dataclass
class ProxyCfg:
    """Proxy-training settings (``evaluator=dict(type="proxy", ...)`` in a search config).

    Attributes:
        stage1: candidate training on cached features (``encoder_lr_mult`` unused).
        stage2: end-to-end fine-tuning (``None`` or ``iters=0`` disables it).
        early_stop: skip stage 2 when the stage-1 reward is below the running mean of earlier ones.
        sampling: how a training batch is drawn from the proxy training images each iteration:
            ``"without_replacement"`` (default: ``batch_size`` distinct images, a fresh random subset every
            iteration; a duplicate image in a small batch only shrinks it and skews BatchNorm statistics) or
            ``"with_replacement"`` (independent uniform draws; the old segmentation evaluator's rule).
        grad_clip: max global gradient norm (``None``, the default: no clipping; the old detection
            evaluator clipped at 35, mmdet's FCOS/RetinaNet setting).
        polyak: EMA decay of the stage-1 weights; ``0`` disables averaging (the last weights are scored).
        polyak_cap: cap the decay at ``1 - 4 / max(iters, 8)`` (default ``True``). Proxy runs are short: with
            decay 0.99 and 80 iterations an uncapped average still gives 45 % (0.99 ** 79) of its weight to
            the weights after the first step; capped (0.95) that share is 2 % and the average covers about
            the last quarter of the run. ``False`` keeps the old segmentation evaluator's behaviour.
        aux_weight: weight of the candidate's ``loss_aux*`` terms (auxiliary heads).
        kd_weight: weight of its ``loss_kd*`` terms (knowledge distillation; stage 1 only; 0 disables).
        eval_batch_size: images per validation batch (the batch size shapes a per-batch normalised loss,
            such as the detection ``neg_loss``; 16 keeps the detection rewards of before).
        measure_cost: record params and MAdds in ``Result.cost``.
        memory_format: ``"channels_last"`` (default) or ``"contiguous"``: the layout of the candidate's
            weights, the cached features and the images. Channels-last lets oneDNN (CPU) and cuDNN (GPU)
            use their NHWC kernels: on 2 CPU cores the depthwise and dilated convolutions of the decoder
            spaces train 2-3x faster (``benchmarks/bench_evaluator.py`` measures a whole candidate). Same
            maths; only the summation order differs (rewards agree to about 1e-6).
        fused_adamw: the single-kernel AdamW step (``torch.optim.AdamW(fused=True)``, CPU and CUDA) instead
            of one small op per parameter tensor.
        cpu_threads: torch intra-op threads while a candidate trains on the CPU (``None``: torch's setting,
            e.g. ``parallel.cpus_per_worker``). Default 1: a proxy candidate's ops are small (8 images of
            8x8 to 32x32 feature maps take microseconds each) and waking a second OpenMP thread for each
            costs more than it saves. Measured on 2 cores, whole candidates (both stages): 1 thread took
            15-18 s whether or not the other core was busy; 2 threads 23 s idle and 29 s with the other
            core busy (``OMP_WAIT_POLICY=PASSIVE``, as the tools set it) or 13 s idle and 40 s busy
            (spinning waits). The other cores each train a candidate of their own (``parallel.workers="auto"``).
        amp: mixed precision of the training steps (:func:`~.device_loop.autocast`): ``"auto"`` (default)
            bf16 autocast on CUDA and none on the CPU (where bf16 convolutions are slower); ``"bf16"``
            everywhere; ``"off"`` never. Weights, optimiser and validation stay fp32.
        check_every: steps between two host reads of the losses' finiteness
            (:class:`~.device_loop.LossWatch`): on CUDA each read waits for the GPU to drain. A diverging
            candidate is reported with the step and value of its first non-finite loss, as with 1.
        cudnn_benchmark: autotune cuDNN's convolution algorithms while a candidate trains on CUDA (the
            proxy's shapes are fixed, so the choice is reused every step).
        cuda_graphs: replay each stage's training step from one CUDA graph (:mod:`~.graphed`): ``"auto"``
            (default) on CUDA, ``"off"`` never (the eager loop), ``"emulate"`` the graph path's bookkeeping
            without a graph on any device (tests). A stage whose step cannot be captured (a host read in
            its loss) finishes eagerly and later candidates train eagerly; the search log says why once. The
            graph path always uses the fused, capturable AdamW (``fused_adamw`` applies to the eager loop).
    """

    stage1: StageCfg = field(default_factory=StageCfg)
    stage2: StageCfg | None = field(default_factory=lambda: StageCfg(iters=30, batch_size=8, lr=1e-3))
    early_stop: bool = True
    sampling: str = "without_replacement"
    grad_clip: float | None = None
    polyak: float = 0.99
    polyak_cap: bool = True
    aux_weight: float = 0.4
    kd_weight: float = 0.5
    eval_batch_size: int = 16
    measure_cost: bool = True
    memory_format: str = "channels_last"
    fused_adamw: bool = True
    cpu_threads: int | None = 1
    amp: str = "auto"
    check_every: int = 25
    cudnn_benchmark: bool = True
    cuda_graphs: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.stage1, Mapping):
            self.stage1 = StageCfg(**self.stage1)
        if isinstance(self.stage2, Mapping):
            self.stage2 = StageCfg(**self.stage2)
        if self.sampling not in SAMPLING:
            raise ValueError(f"evaluator.sampling must be one of {list(SAMPLING)}, got {self.sampling!r}")
        if not 0.0 <= self.polyak < 1.0:
            raise ValueError(f"evaluator.polyak must be in [0, 1), got {self.polyak}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"evaluator.grad_clip must be positive or None, got {self.grad_clip}")
        if int(self.eval_batch_size) < 1:
            raise ValueError(f"evaluator.eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.cpu_threads is not None and (isinstance(self.cpu_threads, bool) or int(self.cpu_threads) < 1):
            raise ValueError(f"evaluator.cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        if self.amp not in AMP:
            raise ValueError(f"evaluator.amp must be one of {list(AMP)}, got {self.amp!r}")
        if isinstance(self.check_every, bool) or int(self.check_every) < 1:
            raise ValueError(f"evaluator.check_every must be a positive integer, got {self.check_every!r}")
        if self.cuda_graphs not in GRAPH_MODES:
            raise ValueError(f"evaluator.cuda_graphs must be one of {list(GRAPH_MODES)}, got {self.cuda_graphs!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"evaluator.memory_format must be one of {list(MEMORY_FORMATS)}, "
                             f"got {self.memory_format!r}")

    @property
    def torch_memory_format(self) -> torch.memory_format:
        return MEMORY_FORMATS[self.memory_format]

    def ema_decay(self, iters: int) -> float:
        """The Polyak decay used for a stage 1 of ``iters`` iterations (0: no averaging)."""
        if self.polyak <= 0 or not self.polyak_cap:
            return float(self.polyak)
        return min(self.polyak, 1.0 - 4.0 / max(iters, 8))

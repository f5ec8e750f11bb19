"""Thin mmseg adapters (decode heads) of the ``dense_map`` spaces.

The OpenMMLab modules of "Fast Neural Architecture Search of Compact Semantic Segmentation
Models via Auxiliary Cells" (Nekrasov, Chen, Shen, Reid; CVPR 2019) and of the template networks (Nekrasov
et al., WACV 2020), and a generic one, registered in mmseg's ``MODELS`` when this module is imported (so any
task that hosts a ``dense_map`` space as an mmseg ``decode_head`` imports this module in its configs, never
a sibling task's; the depth task derives its depth heads from them):

* decode head ``AuxCellHead``: an :class:`~densenas.decoders.auxcell.AuxCellDecoder` built from an arch
  (``Arch``, its ``to_dict()`` form, or a path to its JSON), following the ``BaseDecodeHead`` contract
  (``in_channels``, ``in_index``, ``input_transform='multiple_select'``, losses keyed ``loss_*``). Its
  ``forward`` (and so inference) returns the main logits only; ``loss`` adds one ``loss_aux{i}`` per
  auxiliary head, weighted by ``aux_weight``.
* decode head ``TemplateHead``: the template network, with the same ``forward`` / ``loss``.
* decode head ``DenseMapHead``: the found module of any ``dense_map`` space, rebuilt from the search's ``space``
  section through the space plugins (:func:`densenas.space.space_from_section`): what a plugin space without an
  mmseg adapter of its own names in its ``mm_fragment``.

Use it from a config with ``custom_imports=dict(imports=["densenas.decoders.mmseg_adapters"],
allow_failed_imports=False)`` (the segmentation task's :mod:`densenas.tasks.segmentation.mm` imports it).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

try:
    with warnings.catch_warnings():
        # mmseg imports timm, whose hrnet module uses ``torch.jit.interface`` (deprecated in torch 2.14):
        # a notice about third-party code at import time, shown before every run otherwise.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated",
                                category=FutureWarning)
        from mmseg.models.decode_heads.decode_head import BaseDecodeHead
        from mmseg.registry import MODELS
except ImportError as e:  # pragma: no cover - exercised only without the OpenMMLab stack
    raise ImportError("densenas.decoders.mmseg_adapters needs mmengine and mmsegmentation 1.x; "
                      "run `bash tools/install.sh`") from e

from densenas.arch import Arch, as_arch
from densenas.backbones import named_shapes
from densenas.decoders.auxcell import space_for_arch
from densenas.space import ShapeSpec, dense_map_forward, space_from_section


def losses_with_aux(head: BaseDecodeHead, logits: Tensor, aux: Sequence[Tensor], batch_data_samples: list
                    ) -> dict[str, Tensor]:
    """``head``'s decode losses on the main map plus ``loss_aux{i}`` (``head.aux_weight`` times the sum of that
    map's loss terms) for every auxiliary map: one rule for every found head."""
    losses = head.loss_by_feat(logits, batch_data_samples)
    for i, aux_logits in enumerate(aux):
        terms = head.loss_by_feat(aux_logits, batch_data_samples)
        losses[f"loss_aux{i}"] = head.aux_weight * torch.stack(
            [v for k, v in terms.items() if k.startswith("loss")]).sum()
    return losses


@MODELS.register_module()
class AuxCellHead(BaseDecodeHead):
    """mmseg decode head wrapping an auxiliary-cell decoder.

    ``forward`` returns the main logits ``(N, out_channels, H / s, W / s)`` (``s`` =
    ``self.decoder.output_stride``); ``predict`` therefore ignores the auxiliary heads. ``loss`` returns the
    usual ``loss_ce``/``acc_seg`` entries of :meth:`loss_by_feat` for the main logits, plus ``loss_aux{i}``
    (``aux_weight`` times the sum of the ``loss_*`` terms on auxiliary logits ``i``).

    Args:
        arch: the decoder arch (``Arch``, ``Arch.to_dict()`` dict, or path to a JSON file).
        in_channels: channels of the selected encoder levels (finest first).
        channels: decoder width.
        num_classes: number of classes.
        in_index: indices of the backbone outputs fed to the decoder.
        input_transform: must be ``"multiple_select"``.
        in_strides: strides of the selected levels (only used for ``output_stride``/``describe``);
            default ``4, 8, 16, ...``.
        num_cells: decoder cells; default inferred from the arch.
        blocks_per_cell: template blocks; default inferred from the arch.
        ops: candidate operation names of the space; default every registered op.
        aux: build the auxiliary heads (``False``: no ``loss_aux*``).
        aux_weight: weight of every auxiliary loss.
        dropout_ratio: unused by the decoder; kept at 0 so no dropout module is created.
        init_cfg: mmengine init config; default ``None`` keeps PyTorch's initialisation.
        **kwargs: the other ``BaseDecodeHead`` arguments (``loss_decode``, ``ignore_index``, ...).
    """

    def __init__(self, arch: Arch | Mapping[str, Any] | str | Path, in_channels: Sequence[int],
                 channels: int = 48, *, num_classes: int, in_index: Sequence[int] = (0, 1, 2, 3),
                 input_transform: str = "multiple_select", in_strides: Sequence[int] | None = None,
                 num_cells: int | None = None, blocks_per_cell: int | None = None,
                 ops: Sequence[str] | None = None, aux: bool = True, aux_weight: float = 0.4,
                 dropout_ratio: float = 0.0, init_cfg: dict | list | None = None, **kwargs: Any):
        if input_transform != "multiple_select":
            raise ValueError(f"AuxCellHead needs input_transform='multiple_select', got {input_transform!r}")
        super().__init__(list(in_channels), channels, num_classes=num_classes, in_index=list(in_index),
                         input_transform=input_transform, dropout_ratio=dropout_ratio,
                         init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # the decoder owns its classifiers
        self.arch = as_arch(arch)
        self.space = space_for_arch(self.arch, self.out_channels, width=channels,
                                    num_inputs=len(self.in_channels), ops=ops, aux=aux)
        if num_cells is not None and num_cells != self.space.num_cells or \
                blocks_per_cell is not None and blocks_per_cell != self.space.blocks_per_cell:
            raise ValueError(f"AuxCellHead: num_cells={num_cells}/blocks_per_cell={blocks_per_cell} "
                             f"disagree with the arch ({self.space.num_cells}/"
                             f"{self.space.blocks_per_cell})")
        strides = list(in_strides) if in_strides is not None else \
            [2 ** (i + 2) for i in range(len(self.in_channels))]
        shapes = named_shapes([ShapeSpec(int(c), int(s)) for c, s in zip(self.in_channels, strides, strict=True)])
        self.decoder = self.space.build(self.arch, shapes)
        self.aux_weight = float(aux_weight)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Main logits from the backbone outputs (auxiliary heads are not run)."""
        return self.decoder.forward_with_aux(self._transform_inputs(inputs), with_aux=False)[0]

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: list, train_cfg: Any) -> dict[str, Tensor]:
        """Main decode losses plus ``loss_aux{i}`` for every auxiliary head.

        Args:
            inputs: backbone outputs.
            batch_data_samples: ``SegDataSample`` s holding ``gt_sem_seg``.
            train_cfg: the segmentor's training config (unused).

        Returns:
            Loss and metric tensors keyed ``loss_*`` / ``acc_seg``.
        """
        logits, aux = self.decoder.forward_with_aux(self._transform_inputs(inputs),
                                                    with_aux=self.decoder.has_aux)
        return losses_with_aux(self, logits, aux, batch_data_samples)


@MODELS.register_module()
class TemplateHead(BaseDecodeHead):
    """mmseg decode head wrapping a template network (:mod:`densenas.decoders.template`, Nekrasov et al.,
    WACV 2020) on the first layers of the backbone (strides 4 and 8). ``forward`` / ``loss`` are those of
    :class:`AuxCellHead` (main logits; ``loss_aux{i}`` per auxiliary head, weighted by ``aux_weight``).

    Args:
        arch: the template arch (``Arch``, its dict, or a JSON path).
        in_channels: channels of the two selected encoder levels (stride 4, stride 8).
        widths: channels of every layer, as searched.
        num_classes: number of classes.
        in_index: indices of the two backbone outputs.
        in_strides: strides of those levels (default ``4, 8``).
        ops: candidate operation names (default: the whole template table).
        aux: build the auxiliary heads; aux_weight: their loss weight.
        **kwargs: the other ``BaseDecodeHead`` arguments (``loss_decode``, ``norm_cfg``, ...).
    """

    def __init__(self, arch: Arch | Mapping[str, Any] | str | Path, in_channels: Sequence[int],
                 widths: Sequence[int], *, num_classes: int, in_index: Sequence[int] = (0, 1),
                 in_strides: Sequence[int] = (4, 8), ops: Sequence[str] | None = None, aux: bool = True,
                 aux_weight: float = 0.4, init_cfg: dict | list | None = None, **kwargs: Any):
        from densenas.decoders.template import space_for_arch as template_space

        kwargs.pop("input_transform", None)
        kwargs.pop("channels", None)
        super().__init__(list(in_channels), int(widths[-1]), num_classes=num_classes, in_index=list(in_index),
                         input_transform="multiple_select", dropout_ratio=0.0, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # the network owns its classifiers
        self.arch = as_arch(arch)
        self.space = template_space(self.arch, self.out_channels, widths=list(widths), ops=ops, aux=aux)
        shapes = named_shapes([ShapeSpec(int(c), int(s)) for c, s in zip(self.in_channels, in_strides, strict=True)])
        self.decoder = self.space.build(self.arch, shapes)
        self.aux_weight = float(aux_weight)

    # the same contract as the aux-cell head: the decoder returns (logits, aux logits)
    forward = AuxCellHead.forward
    loss = AuxCellHead.loss


@MODELS.register_module()
class DenseMapHead(BaseDecodeHead):
    """mmseg decode head hosting the found module of any ``dense_map`` space (a plugin's included).

    The module is ``space_from_section(space, arch, num_classes).build(arch, levels)``; ``forward`` returns its
    main map, ``loss`` adds ``loss_aux{i}`` (``aux_weight`` times the sum of the ``loss_*`` terms) per auxiliary
    map the module returns in training (:func:`densenas.space.dense_map_forward`).

    Args:
        arch: the found arch (``Arch``, its dict, or a JSON path).
        space: the search's ``space`` section (``type`` and settings).
        in_channels: channels of the selected encoder levels (finest first).
        num_classes: output channels.
        in_index: indices of the backbone outputs fed to the module (default: all of ``in_channels``).
        in_strides: strides of those levels (default ``4, 8, 16, ...``).
        aux: build the auxiliary heads where the space has them; aux_weight: their loss weight.
        **kwargs: the other ``BaseDecodeHead`` arguments (``loss_decode``, ``norm_cfg``, ...).
    """

    def __init__(self, arch: Arch | Mapping[str, Any] | str | Path, space: Mapping[str, Any],
                 in_channels: Sequence[int], *, num_classes: int, in_index: Sequence[int] | None = None,
                 in_strides: Sequence[int] | None = None, aux: bool = True, aux_weight: float = 0.4,
                 init_cfg: dict | list | None = None, **kwargs: Any):
        kwargs.pop("input_transform", None)
        channels = int(kwargs.pop("channels", 1))  # BaseDecodeHead's own layers are not used
        index = list(range(len(in_channels))) if in_index is None else list(in_index)
        super().__init__(list(in_channels), channels, num_classes=num_classes, in_index=index,
                         input_transform="multiple_select", dropout_ratio=0.0, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # the module owns its classifiers
        self.arch = as_arch(arch)
        self.space = space_from_section(space, self.arch, self.out_channels, aux=aux)
        strides = list(in_strides) if in_strides is not None else [2 ** (i + 2) for i in range(len(self.in_channels))]
        shapes = named_shapes([ShapeSpec(int(c), int(s)) for c, s in zip(self.in_channels, strides, strict=True)])
        self.decoder = self.space.build(self.arch, shapes)
        self.aux_weight = float(aux_weight)

    def _outputs(self, inputs: Sequence[Tensor], with_aux: bool) -> tuple[Tensor, list[Tensor]]:
        """``(main map, [aux maps])`` of the module on the selected levels."""
        return dense_map_forward(self.decoder, self._transform_inputs(inputs), with_aux)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """The main map (no auxiliary head run)."""
        return self._outputs(inputs, False)[0]

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: list, train_cfg: Any) -> dict[str, Tensor]:
        """Main decode losses plus ``loss_aux{i}`` per auxiliary map."""
        logits, aux = self._outputs(inputs, True)
        return losses_with_aux(self, logits, aux, batch_data_samples)

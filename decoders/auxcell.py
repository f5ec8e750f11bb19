"""Auxiliary-cell decoder search space.

After "Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells"
(Nekrasov, Chen, Shen, Reid; CVPR 2019). The encoder (e.g. MobileNetV2) is fixed; the controller emits

* for every decoder cell ``k``, the two features it fuses (``cell{k}.in0``, ``cell{k}.in1``), chosen from a
  pool holding the encoder levels ``0..num_inputs-1`` followed by the outputs of cells ``0..k-1``
  (pool index ``num_inputs + j`` is the output of cell ``j``);
* one cell template shared by all cells: per block ``b``, two inputs ``tmpl.b{b}.in0/in1`` (``0``/``1``
  are the cell's two inputs, ``2 + j`` the output of block ``j < b``), an operation on each
  (``tmpl.b{b}.op0/op1``, names of the space's table :data:`OPS`, the core :data:`densenas.ops.OPS`)
  and how to merge them
  (``tmpl.b{b}.merge``: ``sum``, or ``concat`` followed by conv1x1-BN-ReLU).

Every index decision's options are in range by construction; the one constraint :meth:`AuxCellSpace.check`
adds is that the template reads both cell inputs (otherwise a cell's second input choice is dead, its
projection gets no gradient and distinct archs encode the same network), so every parameter of a built
decoder receives a gradient. Errors name the field (``cell1.in0=9 out of range 0..4``).

Built decoder (:class:`AuxCellDecoder`): every encoder level some cell uses is projected to ``width``
channels (conv1x1-BN-ReLU, input channels read from the given shapes). A cell bilinearly resizes the
coarser of its two inputs to the finer one's size, runs the template blocks and sums the block outputs no
later block consumed. The outputs of cells no later cell consumed are resized to the finest of them,
concatenated, fused by conv1x1-BN-ReLU and classified by a conv1x1. For training, each non-final cell also
feeds an *auxiliary head*: a separately parameterised copy of the same cell template (its two inputs both
the cell's output) followed by a classifier, giving over-parameterised intermediate supervision.

Named variants. The *paper* variant (the default: ``ops=PRIMITIVES``, ``proj_ops=None``, ``fuse_ops=None``)
has exactly the decisions above. It cannot express the heads it is compared with (mmseg's ``ASPPHead`` and
DeepLabV3+'s ``DepthwiseSeparableASPPHead``): their ASPP reads the raw deepest level (320 channels on
MobileNetV2) with parallel dilated 3x3 convolutions and a 3x3 projection, while every op here acts on the
``width``-channel projection (ASPP's branches hold ``29 * 320 * width`` weights on the raw level, a cell op at
most ``9 * width**2``), and DeepLabV3+'s two separable convolutions after the concatenation have no
counterpart in the conv1x1 fuse. The
*extended* variant (:data:`EXTENDED`: ``proj_ops=tuple(PROJ_OPS)``, ``fuse_ops=tuple(FUSE_OPS)``;
``configs/search/auxcell_ext_proxy.py``) adds, after the paper's decisions,

* ``enc{i}.proj`` per encoder level: how a level some cell reads is brought to ``width`` channels, one of
  :data:`PROJ_OPS` (the paper's conv1x1, DeepLabV3's ``aspp``, DeepLabV3+'s ``sep_aspp``, and on the deepest
  level only SimpleBaseline's ``deconv``, Xiao et al., ECCV 2018: three 4x4 stride-2 deconvolutions taking it
  to ``width`` channels at an 8x finer stride, e.g. stride 32 -> 4; ``proj_ops`` must hold conv1x1). A level
  no cell reads is never projected, so its ``enc{i}.proj`` must be ``conv1x1`` (one arch per network);
* ``head.fuse``: what fuses the concatenated output cells, one of :data:`FUSE_OPS` (the paper's conv1x1 or
  DeepLabV3+'s two 3x3 separable convolutions, ``sep_conv_3x3_x2``).

:meth:`AuxCellSpace.baseline_archs` gives the points of the extended variant that express the two baselines
(empty for the paper variant), and for the keypoint task (``task="keypoints"``) mmpose's ``HeatmapHead``
(SimpleBaseline, Xiao et al., ECCV 2018) as a third, ``heatmap``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision, InvalidArch
from densenas.ops import (ASPP_OPS, OPS, PRIMITIVES, ConvBNReLU, DeconvStack, DeepLabV3PlusRefine, build_op,
                          check_ops)
from densenas.space import SearchSpace, ShapeSpec, aux_head_options, as_shapes, memoized_decisions

MERGES = ("sum", "concat")
# The operation table of this space is the core one, :data:`densenas.ops.OPS` (default candidates
# :data:`densenas.ops.PRIMITIVES`); both are re-exported here as ``OPS`` / ``PRIMITIVES``.

PROJ_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "conv1x1": lambda c_in, c_out: ConvBNReLU(c_in, c_out, 1),  # the paper's projection
    **ASPP_OPS,  # "aspp" (DeepLabV3), "sep_aspp" (DeepLabV3+, Chen et al., ECCV 2018)
    # SimpleBaseline (Xiao et al., ECCV 2018; mmpose's HeatmapHead): 3 x (deconv 4x4 s2, BN, ReLU), 8x upsampling
    "deconv": lambda c_in, c_out: DeconvStack(c_in, c_out, 3),
}
"""Projections ``(level channels, width) -> module`` of an encoder level (``enc{i}.proj``, extended variant)."""

PROJ_UPSAMPLE: dict[str, int] = {"deconv": 8}
"""Projections that change the spatial size: output size / input size (the others keep it). Offered on the
deepest encoder level only (``deconv`` on the stride-4 level would decode at stride 1/2)."""

FUSE_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "conv1x1": lambda c_in, c_out: ConvBNReLU(c_in, c_out, 1),  # the paper's fuse
    # DeepLabV3+ (Chen et al., ECCV 2018): two 3x3 depthwise-separable convs after the concatenation
    "sep_conv_3x3_x2": lambda c_in, c_out: DeepLabV3PlusRefine(c_in, c_out),
}
"""Fusions ``(k * width, width) -> module`` of the ``k`` concatenated output cells (``head.fuse``, extended
variant)."""

EXTENDED: dict[str, tuple[str, ...]] = {"proj_ops": tuple(PROJ_OPS), "fuse_ops": tuple(FUSE_OPS)}
"""Keyword arguments of :class:`AuxCellSpace` for the extended variant (``AuxCellSpace(k, **EXTENDED)``), which
can express the ASPP and DeepLabV3+ baselines; the paper's variant is the default (no such arguments)."""


class BlockSpec(NamedTuple):
    """One block of the cell template: ``merge(op0(state[in0]), op1(state[in1]))``."""

    in0: int
    in1: int
    op0: str
    op1: str
    merge: str


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Block(nn.Module):
    """Two operations on two (already chosen) states, merged by sum or by concat + conv1x1-BN-ReLU."""

    def __init__(self, spec: BlockSpec, width: int):
        super().__init__()
        self.spec = spec
        self.op0 = build_op(spec.op0, width, OPS)
        self.op1 = build_op(spec.op1, width, OPS)
        self.fuse = ConvBNReLU(2 * width, width, 1) if spec.merge == "concat" else None

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        a = self.op0(states[self.spec.in0])
        b = self.op1(states[self.spec.in1])
        return a + b if self.fuse is None else self.fuse(torch.cat([a, b], dim=1))


class Cell(nn.Module):
    """The shared template instantiated once (own weights): two ``width``-channel inputs -> ``width``."""

    def __init__(self, template: Sequence[BlockSpec], width: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(s, width) for s in template)
        used = {i for s in template for i in (s.in0, s.in1)}
        #: states summed into the output: the blocks no later block consumed (always includes the last)
        self.out_states = [2 + j for j in range(len(template)) if 2 + j not in used]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[-2] * a.shape[-1] >= b.shape[-2] * b.shape[-1]:
            b = _resize(b, a.shape[-2:])
        else:
            a = _resize(a, b.shape[-2:])
        states = [a, b]
        for block in self.blocks:
            states.append(block(states))
        out = states[self.out_states[0]]
        for i in self.out_states[1:]:
            out = out + states[i]
        return out


class AuxHead(nn.Module):
    """Auxiliary head: the cell template applied to one cell's output, then a conv1x1 classifier."""

    def __init__(self, template: Sequence[BlockSpec], width: int, num_classes: int):
        super().__init__()
        self.cell = Cell(template, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cell(x, x))


class AuxCellDecoder(nn.Module):
    """Decoder built from one arch of :class:`AuxCellSpace`.

    Forward contract:

    * ``forward(feats)`` in ``eval()`` mode, or when built with ``aux=False``: a tensor of logits
      ``(N, num_classes, H / output_stride, W / output_stride)``.
    * ``forward(feats)`` in ``train()`` mode with auxiliary heads: a tuple ``(logits, aux_logits)`` where
      ``aux_logits`` is a list with one tensor per non-final cell (``num_cells - 1`` of them), each at that
      cell's own resolution (callers resize to the target before the loss).
    * ``forward_with_aux(feats)`` always returns ``(logits, aux_logits)`` regardless of the mode
      (``aux_logits`` is empty when built with ``aux=False``).

    ``feats`` is the list of encoder features in the order of the ``in_shapes`` the decoder was built for.

    Args:
        cell_inputs: per cell, the two pool indices it fuses.
        template: the shared cell template.
        in_shapes: shape of every encoder level.
        width: decoder channels.
        num_classes: output channels.
        aux: build the auxiliary heads.
        arch: the arch this decoder was built from (kept for export / printing).
        proj: per encoder level, the key of :data:`PROJ_OPS` that projects it (``None``: conv1x1 for all,
            the paper's projection).
        fuse: the key of :data:`FUSE_OPS` fusing the output cells (default the paper's conv1x1).
    """

    def __init__(self, cell_inputs: Sequence[tuple[int, int]], template: Sequence[BlockSpec],
                 in_shapes: Sequence[ShapeSpec], width: int, num_classes: int, aux: bool = True,
                 arch: Arch | None = None, proj: Sequence[str] | None = None, fuse: str = "conv1x1"):
        super().__init__()
        self.arch = arch
        self.num_inputs = n = len(in_shapes)
        proj = ["conv1x1"] * n if proj is None else list(proj)
        if len(proj) != n:
            raise ValueError(f"proj names {len(proj)} projections for {n} encoder levels: {proj}")
        self.cell_inputs = [tuple(int(i) for i in c) for c in cell_inputs]
        self.used_levels = sorted({i for c in self.cell_inputs for i in c if i < n})
        self.proj = nn.ModuleDict({str(i): PROJ_OPS[proj[i]](in_shapes[i].channels, width)
                                   for i in self.used_levels})
        # a projection's stride: the level's, divided by its upsampling (deconv: 8x)
        strides = [max(1, s.stride // PROJ_UPSAMPLE.get(p, 1)) for s, p in zip(in_shapes, proj)]
        self.cells = nn.ModuleList(Cell(template, width) for _ in self.cell_inputs)
        consumed = {i for c in self.cell_inputs for i in c}
        self.out_cells = [k for k in range(len(self.cell_inputs)) if n + k not in consumed]
        self.fuse = FUSE_OPS[fuse](len(self.out_cells) * width, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.aux_heads = nn.ModuleList(
            AuxHead(template, width, num_classes) for _ in range(len(self.cell_inputs) - 1)) if aux \
            else nn.ModuleList()
        for a, b in self.cell_inputs:
            strides.append(min(strides[a], strides[b]))
        #: stride of every pool entry (projected encoder levels, then cell outputs)
        self.pool_strides = strides

    @property
    def output_stride(self) -> int:
        """Stride of the main logits relative to the input image."""
        return min(self.pool_strides[self.num_inputs + k] for k in self.out_cells)

    @property
    def has_aux(self) -> bool:
        return len(self.aux_heads) > 0

    def forward_with_aux(self, feats: Sequence[torch.Tensor], with_aux: bool = True
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and the auxiliary logits (one per non-final cell), whatever the mode.

        Args:
            feats: encoder features, one per input shape, in order.
            with_aux: compute the auxiliary heads (``False`` returns an empty list).

        Returns:
            ``(logits, aux_logits)``.
        """
        if len(feats) != self.num_inputs:
            raise ValueError(f"decoder built for {self.num_inputs} encoder levels, got {len(feats)}")
        pool: list[torch.Tensor | None] = [None] * self.num_inputs
        for i in self.used_levels:
            pool[i] = self.proj[str(i)](feats[i])
        for (a, b), cell in zip(self.cell_inputs, self.cells):
            pool.append(cell(pool[a], pool[b]))
        outs = [pool[self.num_inputs + k] for k in self.out_cells]
        size = max((o.shape[-2:] for o in outs), key=lambda s: s[0] * s[1])
        logits = self.classifier(self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1)))
        aux = [head(pool[self.num_inputs + k]) for k, head in enumerate(self.aux_heads)] \
            if with_aux else []
        return logits, aux

    def forward(self, feats: Sequence[torch.Tensor]
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits in eval mode; ``(logits, aux_logits)`` in training mode when aux heads exist."""
        if self.training and self.has_aux:
            return self.forward_with_aux(feats)
        return self.forward_with_aux(feats, with_aux=False)[0]


class AuxCellSpace(SearchSpace):
    """The auxiliary-cell decoder space (decision names and semantics in the module docstring).

    Args:
        num_classes: output channels of the decoder and its auxiliary heads.
        width: decoder channels (every projected level, block and cell output).
        num_cells: decoder cells.
        blocks_per_cell: blocks in the shared cell template.
        num_inputs: encoder levels the decoder receives (finest first, by convention).
        ops: candidate operations (keys of :data:`OPS`); default :data:`PRIMITIVES`.
        aux: build auxiliary heads (training-time intermediate supervision).
        proj_ops: candidate projections of the encoder levels (keys of :data:`PROJ_OPS`, conv1x1 among
            them), one decision ``enc{i}.proj`` per level (those of :data:`PROJ_UPSAMPLE`, ``deconv``, on the
            deepest level only); ``None`` (the paper's variant): conv1x1, no decision.
        fuse_ops: candidate fusions of the output cells (keys of :data:`FUSE_OPS`), decision ``head.fuse``;
            ``None`` (the paper's variant): conv1x1, no decision.
        task: the task the decoder is searched for (the keypoint task passes ``"keypoints"``); it only adds
            the task's own hand-designed heads to :meth:`baseline_archs` (``"heatmap"`` for keypoints).
    """

    name = "auxcell"
    output_kind = "dense_map"
    #: the decoder's OpenMMLab heads by export host (``SearchSpace.mm_fragment``): mmseg's ``AuxCellHead``
    #: (:mod:`densenas.decoders.mmseg_adapters`), its depth regressor and the mmpose heatmap head, registered by
    #: the segmentation, depth and keypoint tasks' ``mm`` modules
    mm_heads = {"decode_head": "AuxCellHead", "depth_head": "DepthAuxCellHead", "heatmap_head": "AuxCellHeatmapHead"}

    def __init__(self, num_classes: int, width: int = 48, num_cells: int = 3, blocks_per_cell: int = 2,
                 num_inputs: int = 4, ops: Sequence[str] | None = None, aux: bool = True,
                 proj_ops: Sequence[str] | None = None, fuse_ops: Sequence[str] | None = None,
                 task: str | None = None):
        ops = check_ops(PRIMITIVES if ops is None else ops, OPS)
        self.proj_ops = None if proj_ops is None else check_ops(proj_ops, PROJ_OPS, "proj_ops")
        if self.proj_ops is not None and "conv1x1" not in self.proj_ops:
            raise ValueError(f"proj_ops must include 'conv1x1' (the paper's projection, and the value of a "
                             f"level no cell reads), got {list(self.proj_ops)}")
        self.fuse_ops = None if fuse_ops is None else check_ops(fuse_ops, FUSE_OPS, "fuse_ops")
        for k, v in dict(num_classes=num_classes, width=width, num_cells=num_cells,
                         blocks_per_cell=blocks_per_cell, num_inputs=num_inputs).items():
            if int(v) < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
        self.num_classes, self.width, self.num_cells = int(num_classes), int(width), int(num_cells)
        self.blocks_per_cell, self.num_inputs = int(blocks_per_cell), int(num_inputs)
        self.ops, self.aux = ops, bool(aux)
        self.task = None if task is None else str(task)

    # ------------------------------------------------------------- decisions
    @memoized_decisions
    def decisions(self) -> list[Decision]:
        decs = []
        for k in range(self.num_cells):
            pool = tuple(range(self.num_inputs + k))
            decs += [Decision(f"cell{k}.in0", pool), Decision(f"cell{k}.in1", pool)]
        for b in range(self.blocks_per_cell):
            states = tuple(range(2 + b))
            p = f"tmpl.b{b}"
            decs += [Decision(f"{p}.in0", states), Decision(f"{p}.in1", states),
                     Decision(f"{p}.op0", self.ops), Decision(f"{p}.op1", self.ops),
                     Decision(f"{p}.merge", MERGES)]
        if self.proj_ops is not None:  # extended variant: after the paper's decisions
            decs += [Decision(f"enc{i}.proj", self._proj_options(i)) for i in range(self.num_inputs)]
        if self.fuse_ops is not None:
            decs.append(Decision("head.fuse", self.fuse_ops))
        return decs

    def _proj_options(self, level: int) -> tuple[str, ...]:
        """The ``enc{level}.proj`` options: ``proj_ops``, less the upsampling ones (``deconv``) below the deepest
        level."""
        assert self.proj_ops is not None
        if level == self.num_inputs - 1:
            return self.proj_ops
        return tuple(o for o in self.proj_ops if o not in PROJ_UPSAMPLE)

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad field (``cell1.in0=9 out of range 0..4``)."""
        values = self.check_values(arch)
        for d in self.decisions():
            v = values[d.name]
            if d.name.endswith((".in0", ".in1")):
                self.check_index(d, v, "encoder levels / earlier cells" if d.name.startswith("cell")
                                 else "cell inputs / earlier blocks")
            elif d.name.endswith((".op0", ".op1")) and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not an operation of this space "
                                  f"(choices: {list(d.options)})")
            elif d.name.endswith(".merge") and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not a merge mode (choices: {list(MERGES)})")
            elif d.name.endswith(".proj") and v in PROJ_UPSAMPLE and v in (self.proj_ops or ()) \
                    and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r}: the deconvolution stack is offered on the deepest level "
                                  f"only (enc{self.num_inputs - 1}.proj)")
            elif d.name.endswith(".proj") and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not a projection of this space "
                                  f"(choices: {list(d.options)})")
            elif d.name == "head.fuse" and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not a fusion of this space (choices: {list(d.options)})")
        super().check(arch)  # unknown extra decisions
        used = {arch[f"tmpl.b{b}.{f}"] for b in range(self.blocks_per_cell) for f in ("in0", "in1")}
        for i in (0, 1):
            if i not in used:
                raise InvalidArch(f"tmpl: cell input {i} is never read (no tmpl.b*.in0/in1 equals {i}); "
                                  f"the cell's choice of input {i} would be dead")
        if self.proj_ops is not None:
            read = {i for c in self.cell_inputs(arch) for i in c}
            for i in range(self.num_inputs):
                v = arch[f"enc{i}.proj"]
                if i not in read and v != "conv1x1":
                    raise InvalidArch(f"enc{i}.proj={v!r}: no cell reads encoder level {i}, so it is never "
                                      f"projected; an unread level keeps 'conv1x1' (one arch per network)")

    # ---------------------------------------------------------------- reading
    def cell_inputs(self, arch: Arch) -> list[tuple[int, int]]:
        """Pool indices fused by every cell."""
        return [(arch[f"cell{k}.in0"], arch[f"cell{k}.in1"]) for k in range(self.num_cells)]

    def template(self, arch: Arch) -> list[BlockSpec]:
        """The shared cell template."""
        return [BlockSpec(*(arch[f"tmpl.b{b}.{f}"] for f in BlockSpec._fields))
                for b in range(self.blocks_per_cell)]

    def projections(self, arch: Arch) -> list[str]:
        """Per encoder level, the :data:`PROJ_OPS` key projecting it (conv1x1 in the paper's variant)."""
        if self.proj_ops is None:
            return ["conv1x1"] * self.num_inputs
        return [arch[f"enc{i}.proj"] for i in range(self.num_inputs)]

    def fusion(self, arch: Arch) -> str:
        """The :data:`FUSE_OPS` key fusing the output cells (conv1x1 in the paper's variant)."""
        return "conv1x1" if self.fuse_ops is None else arch["head.fuse"]

    def _extended_choices(self, choices: dict, proj: Mapping[int, str], fuse: str) -> dict:
        """``choices`` plus the extended decisions: levels in ``proj`` get that projection, every other
        level conv1x1 (the value of an unread level); ``fuse`` for ``head.fuse``."""
        if self.proj_ops is not None:
            for i in range(self.num_inputs):
                choices[f"enc{i}.proj"] = proj.get(i, "conv1x1")
        if self.fuse_ops is not None:
            choices["head.fuse"] = fuse
        return choices

    def default_arch(self) -> Arch:
        """A hand-picked baseline: a top-down (RefineNet-like) path with separable-conv cells.

        Cell 0 fuses the two coarsest levels, every later cell fuses the previous cell with the next finer
        level; block 0 sums ``sep_conv_3x3`` of both inputs, later blocks refine the previous block
        (``sep_conv_3x3_dil2`` + ``skip`` of input 0). Ops missing from ``ops`` fall back to the first op.
        In the extended variant every level is projected by conv1x1 and ``head.fuse`` is conv1x1 when
        offered, so the default network is the paper variant's.
        """
        def op(*prefs: str) -> str:
            return next((p for p in prefs if p in self.ops), self.ops[0])

        n, choices = self.num_inputs, {}
        for k in range(self.num_cells):
            choices[f"cell{k}.in0"] = n - 1 if k == 0 else n + k - 1
            choices[f"cell{k}.in1"] = max(n - 2 - k, 0)
        for b in range(self.blocks_per_cell):
            p = f"tmpl.b{b}"
            choices.update({f"{p}.in0": 0 if b == 0 else b + 1, f"{p}.in1": 1 if b == 0 else 0,
                            f"{p}.op0": op("sep_conv_3x3") if b == 0 else op("sep_conv_3x3_dil2",
                                                                             "sep_conv_3x3"),
                            f"{p}.op1": op("sep_conv_3x3") if b == 0 else op("skip"),
                            f"{p}.merge": "sum"})
        # extended variant: the paper's conv1x1 projections (every level) and fuse where offered
        self._extended_choices(choices, {}, "conv1x1" if self.fuse_ops is None or "conv1x1" in self.fuse_ops
                               else self.fuse_ops[0])
        arch = Arch(self.name, tuple((d.name, choices[d.name]) for d in self.decisions()))
        self.check(arch)
        return arch

    def baseline_archs(self) -> dict[str, Arch]:
        """The hand-designed heads this space can express, built from its own decisions.

        * ``"aspp"``: mmseg's ``ASPPHead`` (DeepLabV3), the baseline ``--baseline aspp`` exports: the deepest
          level projected by ``enc{n-1}.proj='aspp'`` (branches at rates 1/6/12/18 and image pooling on the raw
          level, concatenated, 3x3 projection to ``width``), cells that only pass it on (every template op
          ``skip``, merges ``sum``: cell ``k`` reads the previous cell twice, so the output is the ASPP
          features times a constant, which the BN of the next conv removes), the paper's conv1x1 fuse and the
          classifier. Output stride 32, as mmseg's head on MobileNetV2. Needs ``"aspp"`` in ``proj_ops``,
          ``"skip"`` in ``ops`` and conv1x1 for ``head.fuse`` (when that is a decision).
        * ``"deeplabv3plus"``: mmseg's ``DepthwiseSeparableASPPHead`` (DeepLabV3+, Chen et al., ECCV 2018),
          ``--baseline deeplabv3plus``: ``enc{n-1}.proj='sep_aspp'`` (separable ASPP) on the deepest level,
          ``enc0.proj='conv1x1'`` (the 1x1 reduction of the stride-4 level; level 0 is the finest by
          convention), cell 0 passing the ASPP features on, cell 1 the stride-4 features, later cells
          continuing the ASPP path; the two output cells are upsampled to stride 4, concatenated and fused by
          ``head.fuse='sep_conv_3x3_x2'`` (DeepLabV3+'s two 3x3 separable convs) before the classifier. Needs
          ``"sep_aspp"`` in ``proj_ops``, ``"sep_conv_3x3_x2"`` in ``fuse_ops``, ``"skip"`` in ``ops``,
          ``num_cells >= 2`` and ``num_inputs >= 2``.
        * ``"heatmap"`` (only for ``task="keypoints"``): mmpose's ``HeatmapHead``, SimpleBaseline (Xiao et al.,
          ECCV 2018), the keypoint task's ``--baseline heatmap``: ``enc{n-1}.proj='deconv'`` (three 4x4
          stride-2 deconvolution-BN-ReLU layers taking the deepest level to ``width`` channels at stride 4),
          relay cells as for ``aspp``, the conv1x1 fuse and the 1x1 classifier (the head's final layer). Needs
          ``"deconv"`` in ``proj_ops``, ``"skip"`` in ``ops`` and conv1x1 for ``head.fuse``. Its parameters are
          the head's plus the fuse's ``width**2 + 2 * width`` (``tests/test_kpt_resolution.py``: 1.007 x
          mmpose's at width 48, 1.019 at width 256; MobileNetV2's 320-channel level, 14 keypoints). Its
          auxiliary heads classify the deconvolution features times 9 and 27 (relay cells of ``skip`` ops, no
          BN before their classifiers): with the proxy trainer's ``aux_weight=0.4`` they dominate its first
          loss and the point trains poorly (``configs/search/keypoints_ext_proxy.py``, seed 0: PCKh@0.5 0.004
          vs 0.296 with ``aux_weight=0``).

        How close (parameters without auxiliary heads, against the mmseg head built with the same channels:
        ``channels=width``, ``c1_channels=max(width // 4, 8)`` as the exporter; MobileNetV2 levels of
        24/32/96/320 channels, 6 classes; ``tests/test_space_baselines.py``): ``aspp`` 1.004 at width 48
        and 1.009 at width 128 (the fuse conv1x1 added, the pooling branch's BN left out); ``deeplabv3plus``
        1.015 at width 48 and 1.016 at width 128 (the stride-4 level is projected to ``width``, not to
        ``max(width // 4, 8)``, so the first separable conv reads ``2 * width`` channels). The networks differ
        from mmseg's only in those channel counts, in the constant factors above and in the pooling branch.

        Returns:
            ``{name: arch}`` of the baselines this configuration can express, each valid under
            :meth:`check`; empty for the paper's variant (no ``proj_ops``: its ops act on the
            ``width``-channel projection only and cannot hold an ASPP on the raw level).
        """
        n, out = self.num_inputs, {}
        proj, fuse = self.proj_ops or (), self.fuse_ops
        if "skip" not in self.ops:
            return out
        relay = {}  # a template that passes its inputs on: b0 = x0 + x1, b_j = b_{j-1} + x0
        for b in range(self.blocks_per_cell):
            relay.update({f"tmpl.b{b}.in0": 0 if b == 0 else b + 1, f"tmpl.b{b}.in1": 1 if b == 0 else 0,
                          f"tmpl.b{b}.op0": "skip", f"tmpl.b{b}.op1": "skip", f"tmpl.b{b}.merge": "sum"})

        def arch_of(cells: Sequence[tuple[int, int]], projs: Mapping[int, str], fusion: str) -> Arch:
            choices = {f"cell{k}.in{j}": c[j] for k, c in enumerate(cells) for j in (0, 1)}
            choices.update(relay)
            self._extended_choices(choices, projs, fusion)
            arch = Arch(self.name, tuple((d.name, choices[d.name]) for d in self.decisions()))
            self.check(arch)
            return arch

        if "aspp" in proj and (fuse is None or "conv1x1" in fuse):
            # ASPP on the deepest level, then a chain of relay cells, the paper's conv1x1 fuse
            cells = [(n - 1, n - 1)] + [(n + k - 1, n + k - 1) for k in range(1, self.num_cells)]
            out["aspp"] = arch_of(cells, {n - 1: "aspp"}, "conv1x1")
        if "sep_aspp" in proj and fuse is not None and "sep_conv_3x3_x2" in fuse \
                and self.num_cells >= 2 and n >= 2:
            # DeepLabV3+ (Chen et al., ECCV 2018): separable ASPP on the deepest level (cell 0 and the chain of
            # cells 2.. after it) and the 1x1-reduced stride-4 level (cell 1), concatenated by the decoder's
            # fuse and refined by two 3x3 separable convs
            cells = [(n - 1, n - 1), (0, 0)] + [(n, n) if k == 2 else (n + k - 1, n + k - 1)
                                                for k in range(2, self.num_cells)]
            out["deeplabv3plus"] = arch_of(cells, {n - 1: "sep_aspp", 0: "conv1x1"}, "sep_conv_3x3_x2")
        if "deconv" in proj and self.task == "keypoints" and (fuse is None or "conv1x1" in fuse):
            # SimpleBaseline (Xiao et al., ECCV 2018): the deconvolution stack on the deepest level, relayed
            out["heatmap"] = arch_of([(n - 1, n - 1)] + [(n + k - 1, n + k - 1) for k in range(1, self.num_cells)],
                                     {n - 1: "deconv"}, "conv1x1")
        return out

    # ----------------------------------------------------------------- export
    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``width``: the searched decoder width (48 when there is no search config saying it)."""
        return {"width": dict(space_cfg or {}).get("width", 48)}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The decoder of ``arch`` as the head of :attr:`mm_heads` for ``host``, on every level of ``in_shapes``,
        ``options["width"]`` channels, auxiliary heads weighted ``options["aux_weight"]`` (the search's
        ``evaluator.aux_weight``, else 0.4; none at 0), then ``task_keys``. The space is read off the arch
        (:func:`space_for_arch`: any searched op set fits) and checks it."""
        cls.check_host(host)
        shapes = list((as_shapes(in_shapes, cls.name) or {}).values())
        if not shapes:
            raise ValueError(f"space {cls.name!r}: the decoder needs the backbone's levels (in_shapes)")
        width = options["width"]
        out = task_keys["out_channels" if host == "heatmap_head" else "num_classes"]
        space_for_arch(arch, out, width, num_inputs=len(shapes)).check(arch)  # fail here, naming the field
        where = dict(in_strides=[s.stride for s in shapes]) if host == "heatmap_head" else \
            dict(in_index=list(range(len(shapes))))
        return dict(type=cls.mm_heads[host], arch=arch.to_dict(), in_channels=[s.channels for s in shapes], **where,
                    channels=width, **aux_head_options(options), **task_keys)

    # ------------------------------------------------------------------ build
    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> AuxCellDecoder:
        """Build the decoder for ``arch`` on encoder levels of the given shapes (finest first).

        Args:
            arch: a valid arch of this space.
            in_shapes: ``{level name: ShapeSpec}`` of the ``num_inputs`` encoder levels, finest first (the
                shapes ``densenas.backbones.build_backbone`` returns).

        Returns:
            The decoder (see :class:`AuxCellDecoder` for the forward contract).

        Raises:
            InvalidArch: ``arch`` is not in this space.
            TypeError: ``in_shapes`` is a list (pass the dict).
            ValueError: ``in_shapes`` is ``None`` or does not hold ``num_inputs`` levels.
        """
        self.check(arch)
        shapes = self.encoder_shapes(in_shapes, self.num_inputs)
        return AuxCellDecoder(self.cell_inputs(arch), self.template(arch), shapes, self.width,
                              self.num_classes, aux=self.aux, arch=arch, proj=self.projections(arch),
                              fuse=self.fusion(arch))

    def output_stride(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec]) -> int:
        """Stride of the logits ``build(arch, in_shapes)`` would produce (without building it)."""
        self.check(arch)
        strides = [max(1, s.stride // PROJ_UPSAMPLE.get(p, 1))  # deconv: the level's stride / 8
                   for s, p in zip(self.encoder_shapes(in_shapes, self.num_inputs), self.projections(arch))]
        for a, b in self.cell_inputs(arch):
            strides.append(min(strides[a], strides[b]))
        consumed = {i for c in self.cell_inputs(arch) for i in c}
        return min(strides[self.num_inputs + k] for k in range(self.num_cells)
                   if self.num_inputs + k not in consumed)

    def describe(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> str:
        """Multi-line human-readable summary of ``arch`` (with strides when ``in_shapes`` is given)."""
        self.check(arch)
        n = self.num_inputs
        strides: list[int | None] = [s.stride for s in self.encoder_shapes(in_shapes, n)] \
            if as_shapes(in_shapes, self.name) is not None else [None] * n

        def name(i: int) -> str:
            s = f" (s{strides[i]})" if strides[i] else ""
            return (f"enc{i}" if i < n else f"cell{i - n}") + s

        lines = [f"auxcell decoder: {self.num_cells} cells x {self.blocks_per_cell} blocks, "
                 f"width {self.width}, {self.num_classes} classes, aux heads: {self.aux}"]
        consumed = {i for c in self.cell_inputs(arch) for i in c}
        projected = self.projections(arch)

        def after_proj(i: int) -> int | None:  # a level's stride once projected (deconv: 8x finer)
            s = strides[i]
            return max(1, s // PROJ_UPSAMPLE.get(projected[i], 1)) if s and i < n else s

        for k, (a, b) in enumerate(self.cell_inputs(arch)):
            sa, sb = after_proj(a), after_proj(b)
            strides.append(min(sa, sb) if sa and sb else None)
            lines.append(f"  cell{k} = cell({name(a)}, {name(b)})")
        if self.proj_ops is not None:
            projs = self.projections(arch)
            used = sorted({i for c in self.cell_inputs(arch) for i in c if i < n})
            lines.append("  projections: " + ", ".join(f"{name(i)}: {projs[i]}" for i in used))
        outs = [name(n + k) for k in range(self.num_cells) if n + k not in consumed]
        fuse = "" if self.fuse_ops is None else f"{self.fusion(arch)} of "
        lines.append(f"  output = classify({fuse}concat({', '.join(outs)}))")
        lines.append("  template (x0, x1 = cell inputs; bj = block j; output = sum of unused blocks):")
        for b, s in enumerate(self.template(arch)):
            ins = [f"x{i}" if i < 2 else f"b{i - 2}" for i in (s.in0, s.in1)]
            lines.append(f"    b{b} = {s.merge}({s.op0}({ins[0]}), {s.op1}({ins[1]}))")
        return "\n".join(lines)


def space_for_arch(arch: Arch, num_classes: int, width: int = 48, num_inputs: int = 4,
                   ops: Sequence[str] | None = None, aux: bool = True) -> AuxCellSpace:
    """The aux-cell space an exported ``arch`` belongs to: cell and block counts are read off its
    decision names, the op set defaults to every op of :data:`OPS` (so any searched op set fits); an arch
    with ``enc{i}.proj`` / ``head.fuse`` decisions gets the extended variant with every op of
    :data:`PROJ_OPS` / :data:`FUSE_OPS`."""
    names = [k for k, _ in arch.choices]
    extended = any(n.startswith("enc") and n.endswith(".proj") for n in names)
    return AuxCellSpace(
        num_classes, width=width,
        num_cells=sum(n.startswith("cell") and n.endswith(".in0") for n in names),
        blocks_per_cell=sum(n.startswith("tmpl.") and n.endswith(".in0") for n in names),
        num_inputs=num_inputs, ops=tuple(OPS) if ops is None else ops, aux=aux,
        proj_ops=tuple(PROJ_OPS) if extended else None,
        fuse_ops=tuple(FUSE_OPS) if "head.fuse" in names else None)

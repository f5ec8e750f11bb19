"""The NAS-FCOS decoder search space: a searched FPN and a searched, partially shared FCOS head.

After Wang, Gao, Chen, Wang, Tian, Shen, "NAS-FCOS: Fast Neural Architecture Search for Object Detection"
(CVPR 2020). One space, :class:`NASFCOSSpace`, with a ``part`` that says what the controller decides:

* ``part="fpn"`` (space name ``nasfcos_fpn``): per FPN cell ``k``, two pool indices
  ``fpn.cell{k}.in0/in1`` (the pool holds the backbone levels ``0..num_inputs-1``, e.g. C3..C5, then the
  outputs of cells ``0..k-1``), an operation on each (``fpn.cell{k}.op0/op1``, :data:`FPN_OPS`) and an
  aggregation (``fpn.cell{k}.agg``: ``sum`` or ``concat``). The head is fixed (``fixed_head``; default an
  FCOS head: four shared ``gn_conv3x3`` layers).
* ``part="head"`` (``nasfcos_head``): the op of every head layer (``head.op{i}``, :data:`HEAD_OPS`) and
  how many layers are shared across pyramid levels (``head.shared``, ``0..num_head_layers``). The FPN is
  fixed (``fixed_fpn``: the best FPN of the first stage; default :func:`default_fpn_arch`).
* ``part="joint"`` (``nasfcos``): both sets of decisions.

This is the paper's progressive search: search ``part="fpn"``, then ``part="head"`` with
``fixed_fpn=<best fpn arch>``. :func:`fpn_part` / :func:`head_part` cut either part out of any arch.

Variants (``variant=``): ``"paper"`` (default) searches the authors' op lists; ``"with_fpn"`` adds
``conv3x3`` and ``zero`` to the FPN candidates (:data:`~densenas.decoders.nasfcos_ops.FPN_OPS_WITH_FPN`) so
that the hand-designed FPN is in the space. The authors' head list already holds the FCOS head (four shared
``gn_conv3x3``). :meth:`NASFCOSSpace.baseline_archs` gives these points (:func:`plain_fpn_arch`,
:func:`fcos_head_arch`).
The built modules (:class:`NASFCOSDecoder`: :class:`~densenas.decoders.nasfcos_ops.NASFCOSFPN` +
:class:`NASFCOSHeadNet`) are described in :mod:`densenas.decoders.nasfcos_ops`; the mmdet neck and head are
in :mod:`densenas.decoders.mmdet_adapters`.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from densenas.arch import Arch, Decision, InvalidArch, as_arch
from densenas.decoders.nasfcos_ops import (AGGREGATIONS, FPN_OPS, FPN_OPS_WITH_FPN, HEAD_OPS, NUM_BACKBONE_OUTS,
                                           OPS, FPNCellSpec, HeadTower, NASFCOSFPN, collected_cells)
from densenas.ops import check_ops
from densenas.space import SearchSpace, ShapeSpec, memoized_decisions

PARTS = {"fpn": "nasfcos_fpn", "head": "nasfcos_head", "joint": "nasfcos"}
"""``part`` -> space (and arch) name."""
VARIANTS = {"paper": FPN_OPS, "with_fpn": FPN_OPS_WITH_FPN}
"""``variant`` -> its default FPN candidates (both use the authors' head list)."""
FPN_NUM_CELLS = 5
"""Cells the plain FPN needs (:func:`plain_fpn_arch`): two top-down sums and three output convs."""

ArchLike = Arch | Mapping[str, Any] | str | Path


def _part(arch: Arch, prefix: str, part: str) -> Arch:
    choices = tuple((k, v) for k, v in arch.choices if k.startswith(prefix))
    if not choices:
        raise InvalidArch(f"arch for space {arch.space!r} has no {prefix}* decisions")
    if arch.space == PARTS[part] and len(choices) == len(arch.choices):
        return arch  # already that part (every check of a sampled arch comes here)
    return Arch(PARTS[part], choices)


def fpn_part(arch: ArchLike) -> Arch:
    """The ``fpn.*`` decisions of an FPN or joint arch, as an arch of space ``nasfcos_fpn``."""
    return _part(as_arch(arch), "fpn.", "fpn")


def head_part(arch: ArchLike) -> Arch:
    """The ``head.*`` decisions of a head or joint arch, as an arch of space ``nasfcos_head``."""
    return _part(as_arch(arch), "head.", "head")


def fpn_decisions(num_inputs: int, num_cells: int, ops: Sequence[str]) -> list[Decision]:
    """The FPN decisions, in controller order (cell by cell: in0, in1, op0, op1, agg)."""
    return list(_fpn_decisions(int(num_inputs), int(num_cells), tuple(ops)))


@functools.lru_cache(maxsize=64)  # every check of an FPN arch asks for them: built once per setting
def _fpn_decisions(num_inputs: int, num_cells: int, ops: tuple[str, ...]) -> tuple[Decision, ...]:
    decs: list[Decision] = []
    for k in range(num_cells):
        pool, p = tuple(range(num_inputs + k)), f"fpn.cell{k}"
        decs += [Decision(f"{p}.in0", pool), Decision(f"{p}.in1", pool), Decision(f"{p}.op0", ops),
                 Decision(f"{p}.op1", ops), Decision(f"{p}.agg", AGGREGATIONS)]
    return tuple(decs)


def head_decisions(num_layers: int, ops: Sequence[str]) -> list[Decision]:
    """The head decisions: ``head.op0..op{L-1}``, then ``head.shared`` (shared layers, ``0..L``)."""
    return list(_head_decisions(int(num_layers), tuple(ops)))


@functools.lru_cache(maxsize=64)
def _head_decisions(num_layers: int, ops: tuple[str, ...]) -> tuple[Decision, ...]:
    return tuple([Decision(f"head.op{i}", ops) for i in range(num_layers)]
                 + [Decision("head.shared", tuple(range(num_layers + 1)))])


def check_decision_values(decisions: Sequence[Decision], values: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidArch` naming the first decision whose value is missing or not an option."""
    for d in decisions:
        if d.name not in values:
            raise InvalidArch(f"arch misses decision {d.name!r}")
        v = values[d.name]
        if d.name.endswith((".in0", ".in1", ".shared")):
            SearchSpace.check_index(d, v, "backbone levels / earlier cells" if d.name.startswith("fpn")
                                    else "shared head layers")
        elif v not in d.options:
            kind = "aggregation" if d.name.endswith(".agg") else "operation of this space"
            raise InvalidArch(f"{d.name}={v!r} is not an {kind} (choices: {list(d.options)})")
    extra = sorted(set(values) - {d.name for d in decisions})
    if extra:
        raise InvalidArch(f"arch has unknown decisions {extra}")


def fpn_specs(arch: Arch) -> list[FPNCellSpec]:
    """The FPN cells of an arch holding ``fpn.cell{k}.*`` decisions."""
    n = sum(1 for k, _ in arch.choices if k.startswith("fpn.cell") and k.endswith(".in0"))
    return [FPNCellSpec(*(arch[f"fpn.cell{k}.{f}"] for f in FPNCellSpec._fields)) for k in range(n)]


def head_spec(arch: Arch) -> tuple[list[str], int]:
    """``(ops, num_shared)`` of an arch holding ``head.op{i}`` and ``head.shared``."""
    n = sum(1 for k, _ in arch.choices if k.startswith("head.op"))
    return [arch[f"head.op{i}"] for i in range(n)], int(arch["head.shared"])


def check_fpn(arch: Arch, num_inputs: int, ops: Sequence[str] | None = None) -> list[FPNCellSpec]:
    """Validate the ``fpn.*`` decisions of ``arch`` (any number of cells) and return its cells.

    Besides option values, at least three cell outputs must stay unconsumed (they become P3..P5).
    """
    fpn = fpn_part(arch)
    values = fpn.as_dict()
    num_cells = sum(1 for k in values if k.endswith(".in0"))
    check_decision_values(fpn_decisions(num_inputs, num_cells, tuple(OPS) if ops is None else ops), values)
    return _fpn_cells(fpn, num_inputs)


def _fpn_cells(fpn: Arch, num_inputs: int) -> list[FPNCellSpec]:
    """The cells of an FPN arch whose values are checked; raises unless three outputs are left for P3-P5."""
    specs = fpn_specs(fpn)
    collect = collected_cells(specs, num_inputs)
    if len(collect) < NUM_BACKBONE_OUTS:
        raise InvalidArch(f"fpn: only cells {collect} are consumed by no later cell; P3-P5 need "
                          f"{NUM_BACKBONE_OUTS} such outputs (change some fpn.cell*.in0/in1)")
    return specs


def check_head(arch: Arch, ops: Sequence[str] | None = None) -> tuple[list[str], int]:
    """Validate the ``head.*`` decisions of ``arch`` (any number of layers) and return its spec."""
    values = head_part(arch).as_dict()
    num_layers = sum(1 for k in values if k.startswith("head.op"))
    check_decision_values(head_decisions(num_layers, tuple(OPS) if ops is None else ops), values)
    return head_spec(head_part(arch))


def default_fpn_arch(num_inputs: int = 3) -> Arch:
    """The FPN the paper found (7 cells, DCNv2 and concatenation everywhere; C2 unused).

    Read off the authors' released config; pool indices are shifted so the last three of ``num_inputs``
    backbone levels are C3, C4, C5.
    """
    if num_inputs < NUM_BACKBONE_OUTS:
        raise ValueError(f"num_inputs must be >= {NUM_BACKBONE_OUTS}, got {num_inputs}")
    s = num_inputs - 3
    c3, c4, c5 = s, s + 1, s + 2
    cell = [num_inputs + k for k in range(7)]
    d, skip = "deform_conv3x3", "skip"
    cells = [(c5, c5, d, d), (c5, c5, d, d), (cell[0], c5, d, skip), (c3, c5, d, skip),
             (cell[1], c5, d, d), (cell[0], cell[3], d, d), (cell[3], c4, d, d)]
    choices = []
    for k, (a, b, o0, o1) in enumerate(cells):
        p = f"fpn.cell{k}"
        choices += [(f"{p}.in0", a), (f"{p}.in1", b), (f"{p}.op0", o0), (f"{p}.op1", o1),
                    (f"{p}.agg", "concat")]
    return Arch(PARTS["fpn"], tuple(choices))


def default_head_arch(num_layers: int = 6) -> Arch:
    """The head the paper found: dconv3x3, conv3x3, dconv3x3, conv1x1 (then skips), all layers shared."""
    found = ["gn_deform_conv3x3", "gn_conv3x3", "gn_deform_conv3x3", "gn_conv1x1"]
    if num_layers < len(found):
        raise ValueError(f"the found head has {len(found)} layers; num_layers={num_layers} is too small")
    ops = found + ["skip"] * (num_layers - len(found))
    return Arch(PARTS["head"], tuple((f"head.op{i}", o) for i, o in enumerate(ops)) + (("head.shared",
                                                                                        num_layers),))


def plain_head_arch(num_layers: int = 4) -> Arch:
    """An FCOS head: ``num_layers`` shared ``gn_conv3x3`` layers (the fixed head of the FPN search)."""
    return Arch(PARTS["head"], tuple((f"head.op{i}", "gn_conv3x3") for i in range(num_layers))
                + (("head.shared", num_layers),))


def fcos_head_arch(num_layers: int = 6, num_convs: int = 4) -> Arch:
    """The FCOS head (Tian et al., ICCV 2019; mmdet's ``FCOSHead`` with ``stacked_convs=num_convs``) in a head
    of ``num_layers`` searched layers: ``num_convs`` ``gn_conv3x3`` then ``skip``, all shared.

    Raises:
        ValueError: ``num_layers < num_convs``.
    """
    if num_layers < num_convs:
        raise ValueError(f"the FCOS head has {num_convs} conv layers; num_layers={num_layers} is too small")
    ops = ["gn_conv3x3"] * num_convs + ["skip"] * (num_layers - num_convs)
    return Arch(PARTS["head"], tuple((f"head.op{i}", o) for i, o in enumerate(ops)) + (("head.shared",
                                                                                        num_layers),))


def plain_fpn_arch(num_inputs: int = 3, num_cells: int = 7) -> Arch:
    """The hand-designed FPN (Lin et al., CVPR 2017; mmdet's ``FPN`` on C3-C5) as NAS-FCOS FPN cells.

    Needs the ``with_fpn`` op set (``conv3x3`` and ``zero``). With ``c3, c4, c5`` the last three backbone
    levels: ``inner5`` is C5 (through ``num_cells - 5`` alias cells ``sum(skip(x), zero(x))``, per-channel
    weights initialised to 1), ``inner4 = sum(skip(C4), skip(inner5))``, ``inner3 = sum(skip(C3),
    skip(inner4))`` (top-down: the coarser input upsampled to the finer), then the output cells ``P5, P4, P3 =
    sum(conv3x3(inner), zero(inner))`` in the order the FPN collects them (P5 first). P6 / P7 are the FPN's own
    stride-2 convs on P5, as mmdet's ``add_extra_convs="on_output"``.

    Raises:
        ValueError: ``num_inputs < 3`` or ``num_cells < 5`` (:data:`FPN_NUM_CELLS`).
    """
    if num_inputs < NUM_BACKBONE_OUTS or num_cells < FPN_NUM_CELLS:
        raise ValueError(f"the plain FPN needs num_inputs >= {NUM_BACKBONE_OUTS} and num_cells >= "
                         f"{FPN_NUM_CELLS}, got {num_inputs}, {num_cells}")
    c3, c4, c5 = num_inputs - 3, num_inputs - 2, num_inputs - 1
    cells: list[tuple[int, int, str, str]] = []

    def add(a: int, b: int, op0: str, op1: str) -> int:
        cells.append((a, b, op0, op1))
        return num_inputs + len(cells) - 1

    inner5 = c5
    for _ in range(num_cells - FPN_NUM_CELLS):
        inner5 = add(inner5, inner5, "skip", "zero")
    inner4 = add(c4, inner5, "skip", "skip")
    inner3 = add(c3, inner4, "skip", "skip")
    for inner in (inner5, inner4, inner3):  # collected as P5, P4, P3
        add(inner, inner, "conv3x3", "zero")
    choices = []
    for k, (a, b, o0, o1) in enumerate(cells):
        p = f"fpn.cell{k}"
        choices += [(f"{p}.in0", a), (f"{p}.in1", b), (f"{p}.op0", o0), (f"{p}.op1", o1), (f"{p}.agg", "sum")]
    return Arch(PARTS["fpn"], tuple(choices))


def is_plain_fpn(arch: ArchLike, num_inputs: int = 3) -> bool:
    """Whether the ``fpn.*`` decisions of ``arch`` are :func:`plain_fpn_arch` (with as many cells)."""
    specs = fpn_specs(fpn_part(arch))
    return len(specs) >= FPN_NUM_CELLS and specs == fpn_specs(plain_fpn_arch(num_inputs, len(specs)))


def is_fcos_head(arch: ArchLike, shared_position: str = "last") -> bool:
    """Whether the ``head.*`` decisions of ``arch`` build the FCOS head: four ``gn_conv3x3`` layers, all shared
    across levels (with ``shared_position``), every other layer ``skip``."""
    ops, k = head_spec(head_part(arch))
    shared = range(len(ops) - k, len(ops)) if shared_position == "last" else range(k)
    convs = [i for i, o in enumerate(ops) if o != "skip"]
    return [ops[i] for i in convs] == ["gn_conv3x3"] * 4 and all(i in shared for i in convs)


class NASFCOSHeadNet(nn.Module):
    """Plain-PyTorch FCOS head with searched towers (the mmdet head reuses :class:`HeadTower`).

    ``forward(feats)`` returns FCOS's raw outputs per level: class logits ``(N, num_classes, H, W)``, box
    distances ``exp(scale_l * reg)`` ``(N, 4, H, W)`` and centerness logits ``(N, 1, H, W)`` (computed on
    the classification branch, as FCOS does by default).

    Args:
        ops: head layer operations.
        num_shared: layers shared across levels.
        num_classes: classes.
        in_channels: channels of the pyramid features.
        channels: width of the head layers.
        num_levels: pyramid levels.
        shared_position: see :class:`HeadTower`.
        prior_prob: initial foreground probability of the classifier (focal-loss bias init).
    """

    def __init__(self, ops: Sequence[str], num_shared: int, num_classes: int, in_channels: int, channels: int,
                 num_levels: int = 5, shared_position: str = "last", prior_prob: float = 0.01):
        super().__init__()
        kw = dict(in_channels=in_channels, shared_position=shared_position)
        self.cls_tower = HeadTower(ops, num_shared, num_levels, channels, **kw)
        self.reg_tower = HeadTower(ops, num_shared, num_levels, channels, **kw)
        self.conv_cls = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))
        for conv in (self.conv_cls, self.conv_reg, self.conv_centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Class logits, box distances and centerness logits per pyramid level."""
        if len(feats) != len(self.scales):
            raise ValueError(f"head built for {len(self.scales)} levels, got {len(feats)}")
        cls, box, ctr = [], [], []
        for level, x in enumerate(feats):
            c = self.cls_tower(x, level)
            cls.append(self.conv_cls(c))
            ctr.append(self.conv_centerness(c))
            box.append((self.scales[level] * self.conv_reg(self.reg_tower(x, level))).float().exp())
        return cls, box, ctr


class NASFCOSDecoder(nn.Module):
    """Searched FPN + head. ``forward(backbone_feats)`` gives the head outputs; ``neck`` the pyramid.

    Args:
        neck: the FPN.
        head: the head.
        arch: the (joint) arch it was built from.
    """

    def __init__(self, neck: NASFCOSFPN, head: NASFCOSHeadNet, arch: Arch | None = None):
        super().__init__()
        self.neck, self.head, self.arch = neck, head, arch

    @property
    def strides(self) -> list[int]:
        return list(self.neck.strides)

    def forward(self, feats: Sequence[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        return self.head(self.neck(feats))


class NASFCOSSpace(SearchSpace):
    """The NAS-FCOS space (decisions and parts in the module docstring).

    Args:
        num_classes: detection classes (head output channels).
        part: ``"fpn"``, ``"head"`` or ``"joint"``: which decisions the controller makes.
        width: FPN channels.
        head_width: head channels (default ``width``; the paper's "@128-256" is 128 / 256).
        num_inputs: backbone levels in the FPN pool (finest first; the last three are C3..C5).
        num_cells: FPN cells.
        num_head_layers: head layers.
        num_outs: pyramid levels (P3 up to P(2 + num_outs)).
        fpn_ops: FPN candidate operations (default :data:`FPN_OPS`).
        head_ops: head candidate operations (default :data:`HEAD_OPS`).
        shared_position: which head layers are shared (``"last"``, authors' code, or ``"first"``).
        fixed_fpn: FPN used when ``part="head"``: an arch (or its JSON path), ``"paper"`` (the default,
            :func:`default_fpn_arch`) or ``"plain"`` (mmdet's FPN, :func:`plain_fpn_arch`).
        fixed_head: head used when ``part="fpn"`` (default :func:`plain_head_arch`, an FCOS head).
        variant: ``"paper"`` or ``"with_fpn"``: the default of ``fpn_ops`` (:data:`VARIANTS`; an explicit
            ``fpn_ops`` replaces it).
    """

    name = "nasfcos"
    output_kind = "detector"
    #: the detector family of the head this space builds (the task gives it that family's losses)
    head_detector = "fcos"

    def __init__(self, num_classes: int = 80, part: str = "fpn", width: int = 64,
                 head_width: int | None = None, num_inputs: int = 3, num_cells: int = 7,
                 num_head_layers: int = 6, num_outs: int = 5,
                 fpn_ops: Sequence[str] | None = None, head_ops: Sequence[str] | None = None,
                 shared_position: str = "last", fixed_fpn: ArchLike | None = None,
                 fixed_head: ArchLike | None = None, variant: str = "paper"):
        if part not in PARTS:
            raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.fpn_ops = check_ops(VARIANTS[variant] if fpn_ops is None else fpn_ops, OPS, "fpn_ops")
        self.head_ops = check_ops(HEAD_OPS if head_ops is None else head_ops, OPS, "head_ops")
        if num_inputs < NUM_BACKBONE_OUTS or num_cells < NUM_BACKBONE_OUTS or num_outs < NUM_BACKBONE_OUTS:
            raise ValueError(f"num_inputs, num_cells and num_outs must be >= {NUM_BACKBONE_OUTS}, got "
                             f"{num_inputs}, {num_cells}, {num_outs}")
        for k, v in dict(num_classes=num_classes, width=width, num_head_layers=num_head_layers).items():
            if int(v) < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
        if shared_position not in ("last", "first"):
            raise ValueError(f"shared_position must be 'last' or 'first', got {shared_position!r}")
        self.part, self.name = part, PARTS[part]
        self.num_classes, self.width = int(num_classes), int(width)
        self.head_width = int(width if head_width is None else head_width)
        self.num_inputs, self.num_cells, self.num_outs = int(num_inputs), int(num_cells), int(num_outs)
        self.num_head_layers, self.shared_position = int(num_head_layers), shared_position
        self.fixed_fpn = fpn_part(self._named_fpn(fixed_fpn))
        self.fixed_head = head_part(plain_head_arch() if fixed_head is None else fixed_head)
        try:
            check_fpn(self.fixed_fpn, self.num_inputs)
            check_head(self.fixed_head)
        except InvalidArch as e:
            raise ValueError(f"fixed part: {e}") from None

    def _named_fpn(self, fixed_fpn: ArchLike | None) -> ArchLike:
        """``fixed_fpn`` with its names resolved: ``None`` or ``"paper"`` the FPN the paper found
        (:func:`default_fpn_arch`), ``"plain"`` the hand-designed FPN (:func:`plain_fpn_arch`: needs
        ``num_cells >= FPN_NUM_CELLS``), anything else an arch, its mapping or a JSON path."""
        if fixed_fpn is None or fixed_fpn == "paper":
            return default_fpn_arch(self.num_inputs)
        if fixed_fpn == "plain":
            if self.num_cells < FPN_NUM_CELLS:
                raise ValueError(f"fixed_fpn='plain' needs num_cells >= {FPN_NUM_CELLS}, got {self.num_cells}")
            return plain_fpn_arch(self.num_inputs, self.num_cells)
        return fixed_fpn

    # ------------------------------------------------------------- decisions
    @memoized_decisions
    def decisions(self) -> list[Decision]:
        decs = []
        if self.part in ("fpn", "joint"):
            decs += fpn_decisions(self.num_inputs, self.num_cells, self.fpn_ops)
        if self.part in ("head", "joint"):
            decs += head_decisions(self.num_head_layers, self.head_ops)
        return decs

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad decision (``fpn.cell2.in0=9 out of range``)."""
        check_decision_values(self.decisions(), self.check_values(arch))
        if self.part in ("fpn", "joint"):  # the values are checked: only the structure is left
            _fpn_cells(fpn_part(arch), self.num_inputs)

    def default_arch(self) -> Arch:
        """The paper's found FPN / head for this part (needs 7 cells / >= 4 layers and their ops)."""
        parts = []
        if self.part in ("fpn", "joint"):
            parts.append(default_fpn_arch(self.num_inputs))
        if self.part in ("head", "joint"):
            parts.append(default_head_arch(self.num_head_layers))
        arch = Arch(self.name, tuple(c for a in parts for c in a.choices))
        self.check(arch)
        return arch

    def baseline_archs(self) -> dict[str, Arch]:
        """The hand-designed baselines this space (its searched part, with its fixed part) expresses.

        * ``"fpn_fcos"``: mmdet's FPN + ``FCOSHead`` (the ``--baseline fpn_fcos`` export): the searched part's
          decisions of :func:`plain_fpn_arch` / :func:`fcos_head_arch`, when the fixed part is the other
          one (``part="fpn"``: ``fixed_head`` is four shared ``gn_conv3x3``, the default; ``part="head"``:
          ``fixed_fpn`` is :func:`plain_fpn_arch`) and the FPN ops include ``conv3x3`` and ``zero``
          (``variant="with_fpn"``).
        * ``"fcos_head"`` (``part="head"`` with any other fixed FPN): the FCOS head on the fixed FPN.

        The paper's variant with ``part="fpn"`` or ``"joint"`` expresses neither (no plain 3x3 conv and no
        way to output one op of one input): ``{}``.

        How close (MobileNetV2 C3-C5, 32/96/320 channels, width 32, 4 classes, P3-P7; measured in
        tests/test_space_baselines_det.py): the FPN has 61,312 parameters against 60,672 of mmdet's
        ``FPN(in_channels=[32, 96, 320], out_channels=32, num_outs=5, add_extra_convs="on_output",
        relu_before_extra_convs=True)`` (ratio 1.011); the head has exactly the parameters of mmdet's
        ``FCOSHead(num_classes=4, in_channels=32, feat_channels=32, stacked_convs=4, GN 8 groups)``
        (76,846; ratio 1.000). Differences of the FPN, all from this space's fixed structure: laterals are
        conv1x1-BN-ReLU (mmdet: conv1x1 with bias), outputs conv3x3-BN-ReLU (mmdet: conv3x3 with bias),
        upsampling is bilinear (mmdet: nearest) and the top-down sums are learnt per-channel weighted sums
        initialised to 1 (the plain sum at initialisation).
        """
        out: dict[str, Arch] = {}
        fpn = plain_fpn_arch(self.num_inputs, self.num_cells) if self.num_cells >= FPN_NUM_CELLS else None
        head = fcos_head_arch(self.num_head_layers) if self.num_head_layers >= 4 else None
        if self.part == "fpn" and fpn is not None and is_fcos_head(self.fixed_head, self.shared_position):
            out["fpn_fcos"] = Arch(self.name, fpn.choices)
        elif self.part == "head" and head is not None:
            name = "fpn_fcos" if is_plain_fpn(self.fixed_fpn, self.num_inputs) else "fcos_head"
            out[name] = Arch(self.name, head.choices)
        elif self.part == "joint" and fpn is not None and head is not None:
            out["fpn_fcos"] = Arch(self.name, fpn.choices + head.choices)
        return {k: a for k, a in out.items() if self.is_valid(a)}

    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``space``: the searched settings (without ``type``), ``part`` the arch's own (its name) unless the
        search config says."""
        settings = {k: v for k, v in dict(space_cfg or {}).items() if k != "type"}
        settings.setdefault("part", {v: k for k, v in PARTS.items()}.get(arch.space, "fpn"))
        return {"space": settings}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The mmdet FCOS model dict of ``arch`` (``host="detector"``): :meth:`mm_detector` of the space of
        ``options["space"]`` (width ``options["width"]`` when set) with the task keys ``num_classes``, ``losses``,
        ``backbone``, ``in_channels`` (other task keys, NAS-FPN's head options, do not apply)."""
        cls.check_host(host)
        settings = dict(options.get("space") or {})
        if options.get("width") is not None:
            settings["width"] = int(options["width"])
        k = int(task_keys.pop("num_classes"))
        try:
            space = cls(**{"num_classes": k, **settings})
        except TypeError as e:
            raise ValueError(f"search space settings {settings}: {e}") from None
        return space.mm_detector(arch, k, **task_keys).to_dict()

    def mm_detector(self, arch: Arch, num_classes: int, *, losses: Mapping[str, Any], backbone: Mapping[str, Any],
                    in_channels: Sequence[int] | None = None, **task_options: Any) -> Any:
        """This space's OpenMMLab adapter: the mmdet FCOS ``model`` config (a ``ConfigDict``) of ``arch``,
        completed with the fixed part, on ``backbone``, with the task's head ``losses``. ``task_options``
        (NAS-FPN's ``detector``, ``stacked_convs``, ``feat_channels``) do not apply: NAS-FCOS searches its own
        head tower."""
        from densenas.decoders.mmdet_adapters import nasfcos_detector_cfg

        full = self.full_arch(arch)  # checks the arch; completes it with the searched-with fixed part
        return nasfcos_detector_cfg(full, full, int(num_classes), in_channels=in_channels, width=self.width,
                                    head_width=self.head_width, shared_position=self.shared_position,
                                    backbone=backbone, losses=losses)

    def full_arch(self, arch: Arch) -> Arch:
        """The joint arch (``nasfcos``) of ``arch`` completed with the fixed part."""
        self.check(arch)
        fpn = fpn_part(arch) if self.part != "head" else self.fixed_fpn
        head = head_part(arch) if self.part != "fpn" else self.fixed_head
        return Arch(PARTS["joint"], fpn.choices + head.choices)

    # ------------------------------------------------------------------ build
    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> NASFCOSDecoder:
        """Build FPN + head for ``arch`` (the other part fixed) on backbone levels of the given shapes.

        Args:
            arch: a valid arch of this space.
            in_shapes: ``{level name: ShapeSpec}`` of the ``num_inputs`` backbone levels, finest first
                (e.g. ``c3``..``c5`` from ``densenas.backbones.build_backbone``).

        Returns:
            The decoder; ``decoder.neck(feats)`` gives P3.. at ``decoder.strides``.

        Raises:
            InvalidArch: ``arch`` is not in this space.
            TypeError: ``in_shapes`` is a list (pass the dict).
            ValueError: ``in_shapes`` is ``None`` or does not hold ``num_inputs`` levels.
        """
        full = self.full_arch(arch)
        shapes = self.encoder_shapes(in_shapes, self.num_inputs)
        neck = NASFCOSFPN(fpn_specs(full), shapes, self.width, self.num_outs)
        ops, k = head_spec(full)
        head = NASFCOSHeadNet(ops, k, self.num_classes, self.width, self.head_width, self.num_outs,
                              self.shared_position)
        return NASFCOSDecoder(neck, head, full)

    def describe(self, arch: Arch) -> str:
        """Multi-line human-readable summary of the full (fixed part included) architecture."""
        full = self.full_arch(arch)
        n, specs = self.num_inputs, fpn_specs(full)
        names = [f"C{i + 6 - n}" for i in range(n)] + [f"cell{k}" for k in range(len(specs))]
        lines = [f"NAS-FCOS ({self.part} searched), FPN width {self.width}, head width {self.head_width}"]
        for k, s in enumerate(specs):
            lines.append(f"  cell{k} = {s.agg}({s.op0}({names[s.in0]}), {s.op1}({names[s.in1]}))")
        collect = collected_cells(specs, n)
        extra = " + ".join(f"cell{k}" for k in collect[:-NUM_BACKBONE_OUTS])
        for p, k in zip(("P5", "P4", "P3"), collect[-NUM_BACKBONE_OUTS:]):
            lines.append(f"  {p} = cell{k}" + (f" + {extra}" if extra else ""))
        ops, shared = head_spec(full)
        lines.append(f"  head ({shared} of {len(ops)} layers shared, {self.shared_position}): "
                     + " -> ".join(ops))
        return "\n".join(lines)

"""NAS-FPN search space: a feature pyramid made of searched merging cells.

After Ghiasi, Lin, Le, "NAS-FPN: Learning Scalable Feature Pyramid Architecture for Object Detection"
(CVPR 2019). The backbone levels C3..C5 are projected to ``C`` channels (1x1 conv + BN, skipped when the
channels already match) and P6, P7 are made from P5 by stride-2 max pooling, giving the input pool
P3..P7 (pool indices ``0..4``; for other ``levels`` the pool holds one entry per level). Merging cell
``i`` makes four choices, in the controller's order:

* ``cell{i}.in0``, ``cell{i}.in1``: two *different* pool entries (the paper selects the second "without
  replacement"); the pool grows by one per cell, so cell ``i`` chooses among ``0..L + i - 1`` where pool
  index ``L + j`` is the output of cell ``j``;
* ``cell{i}.level``: the output resolution (pyramid level, stride ``2**level``). Intermediate cells may not
  output the finest level (the paper: "we avoid selecting stride 8 feature in intermediate merging cells");
  the last ``L`` cells are the outputs and must produce every level exactly once, in an order the
  controller chooses (:meth:`NASFPNSpace.check` enforces this permutation; ``sample`` draws a random
  permutation and ``mutate`` swaps two output levels);
* ``cell{i}.op``: ``sum`` or ``gp_attention`` (global-pooling attention).

Variants (``NASFPNSpace(variant=...)``): ``"paper"`` (the default) is the space above, decision for
decision. ``"with_fpn"`` extends it so that it contains the hand-designed FPN (Lin et al., CVPR 2017) it is
compared with (:meth:`NASFPNSpace.baseline_archs`): a third binary op ``first`` (``in0`` alone; ``in1`` is
still wired, so it counts as consumed for the output sums below, but is not read) and a fifth decision per
cell, ``cell{i}.post`` (:data:`POST_OPS`): the paper's ``relu_conv_bn``, FPN's plain output ``conv`` (3x3
with bias, no norm or activation) or ``none`` (the merged map itself, e.g. FPN's top-down sum before its
output conv). The paper's archs are in it (every ``post`` = ``relu_conv_bn``).

Each input is resampled to the output resolution (nearest upsampling, or max pooling with "same"
padding), the binary op merges them, and for output cells every earlier pool entry of the same level that
no cell has consumed yet (backbone levels included) is summed in; the result goes through ReLU -> conv3x3
-> BN. The whole block maps P3..P7 to P3..P7, so it can be stacked ``stack`` times (separate weights).

Follows the authors' reference implementation (TF ``NASFPN_BLOCK_SPECS``; :meth:`NASFPNSpace.paper_arch`
expresses the published architecture, the same wiring as mmdet's ``NASFPN``). Differences from the paper
and from mmdet's ``NASFPN``: ``gp_attention`` is ``coarse + fine * sigmoid(global_max_pool(coarse))``
(the attention comes from the coarser input, ``in0`` on a tie) as in the reference code, whereas mmcv's
``GlobalPoolingCell`` uses average pooling of its second input; P6/P7 are max-pooled P5 (the paper) rather
than mmdet's extra 1x1 conv before each pooling; resampling is by size, so inputs whose sides are not
multiples of 128 still work (nearest resize / adaptive max pooling where the integer factors do not fit).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision, InvalidArch
from densenas.space import SearchSpace, ShapeSpec, describe_shapes, memoized_decisions

BINARY_OPS = ("sum", "gp_attention")
"""The paper's binary ops."""
FPN_BINARY_OPS = BINARY_OPS + ("first",)
"""Binary ops of the ``with_fpn`` variant: the paper's and ``first`` (``in0`` alone)."""
POST_OPS = ("relu_conv_bn", "conv", "none")
"""What a ``with_fpn`` cell does after merging: the paper's ReLU-conv3x3-BN, a plain conv3x3 with bias (FPN's
output conv) or nothing."""
VARIANTS = ("paper", "with_fpn")
"""Named variants of :class:`NASFPNSpace` (module docstring)."""
FPN_BACKBONE_LEVELS = 3
"""Levels the FPN baseline takes from the backbone (C3..C5, as mmdet's FPN on ``out_indices`` C3-C5); the
coarser levels are its extra convolutions on the outputs (``add_extra_convs="on_output"``)."""
#: The published NAS-FPN (authors' ``NASFPN_BLOCK_SPECS``): ``(level, op, in0, in1)`` per cell.
PAPER_CELLS = ((4, "gp_attention", 1, 3), (4, "sum", 1, 5), (3, "sum", 0, 6), (4, "sum", 6, 7),
               (5, "gp_attention", 7, 8), (7, "gp_attention", 6, 9), (6, "gp_attention", 9, 10))


class CellSpec(NamedTuple):
    """One merging cell: ``post(op(pool[in0], pool[in1]))`` at pyramid level ``level``."""

    in0: int
    in1: int
    level: int
    op: str
    post: str = "relu_conv_bn"


def resample(x: torch.Tensor, size: Sequence[int], factor: int = 1) -> torch.Tensor:
    """Resize ``x`` to spatial ``size``: max pooling ("same" padding) to go down, nearest to go up.

    Args:
        x: feature map ``(N, C, H, W)``.
        size: target ``(H', W')``.
        factor: the level ratio ``2**(target level - source level)`` when going down; used as the pooling
            window and stride (adaptive max pooling takes over when that does not give ``size``).
    """
    h, w = x.shape[-2:]
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return x
    if h >= size[0] and w >= size[1]:
        y = F.max_pool2d(x, factor, factor, ceil_mode=True) if factor > 1 else x
        return y if tuple(y.shape[-2:]) == size else F.adaptive_max_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


def global_attention(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """NAS-FPN's global-pooling op on same-size maps: ``coarse + fine * sigmoid(max over H, W of coarse)``."""
    return coarse + fine * torch.sigmoid(coarse.amax(dim=(-2, -1), keepdim=True))


class MergingCell(nn.Module):
    """Binary op on two resampled inputs, plus the unconsumed same-level entries, then ``spec.post``
    (the paper: ReLU-conv3x3-BN).

    Args:
        spec: the cell's choices.
        in_levels: pyramid levels of ``in0`` and ``in1``.
        channels: feature channels (in and out).
        extras: pool indices summed into the output before ``post`` (output cells only).

    Raises:
        ValueError: an unknown ``spec.op`` or ``spec.post``.
    """

    def __init__(self, spec: CellSpec, in_levels: tuple[int, int], channels: int,
                 extras: Sequence[int] = ()):
        super().__init__()
        if spec.op not in FPN_BINARY_OPS or spec.post not in POST_OPS:
            raise ValueError(f"cell op={spec.op!r} / post={spec.post!r}: use one of {list(FPN_BINARY_OPS)} / "
                             f"{list(POST_OPS)}")
        self.spec, self.in_levels, self.extras = spec, tuple(in_levels), list(extras)
        self.conv: nn.Conv2d | None = None
        if spec.post == "relu_conv_bn":  # the paper's cell (same modules, names and order as ever)
            self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        elif spec.post == "conv":  # FPN's output conv (Lin et al., CVPR 2017; mmdet's fpn_convs)
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn: nn.Module = nn.BatchNorm2d(channels) if spec.post == "relu_conv_bn" else nn.Identity()

    def merge(self, a: torch.Tensor, b: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The binary op alone on inputs ``a`` (``in0``) and ``b`` (``in1``), at spatial ``size``."""
        down = [2 ** max(self.spec.level - lv, 0) for lv in self.in_levels]
        if self.spec.op == "first":
            return resample(a, size, down[0])
        a, b = resample(a, size, down[0]), resample(b, size, down[1])
        if self.spec.op == "sum":
            return a + b
        if self.in_levels[0] >= self.in_levels[1]:
            return global_attention(a, b)
        return global_attention(b, a)

    def forward(self, pool: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        x = self.merge(pool[self.spec.in0], pool[self.spec.in1], size)
        for j in self.extras:
            x = x + resample(pool[j], size)
        if self.spec.post == "relu_conv_bn":
            return self.bn(self.conv(F.relu(x)))
        return x if self.conv is None else self.conv(x)


def plan_extras(cells: Sequence[CellSpec], levels: Sequence[int]) -> list[list[int]]:
    """Pool entries summed into each cell: at every output cell, the same-level entries not yet consumed.

    Replays the reference order: a cell first consumes its two inputs; if it is one of the last
    ``len(levels)`` cells it then takes every earlier entry of its level with no consumer so far.
    """
    num_out = len(levels)
    pool_levels, used, extras = list(levels), [0] * num_out, []
    for i, c in enumerate(cells):
        used[c.in0] += 1
        used[c.in1] += 1
        mine = []
        if i >= len(cells) - num_out:
            mine = [j for j, lv in enumerate(pool_levels) if used[j] == 0 and lv == c.level]
            for j in mine:
                used[j] += 1
        extras.append(mine)
        pool_levels.append(c.level)
        used.append(0)
    return extras


class NASFPNBlock(nn.Module):
    """One copy of the searched pyramid: ``L`` maps (finest first) -> ``L`` maps at the same levels."""

    def __init__(self, cells: Sequence[CellSpec], levels: Sequence[int], channels: int):
        super().__init__()
        self.levels = tuple(levels)
        pool_levels = list(levels) + [c.level for c in cells]
        self.cells = nn.ModuleList(
            MergingCell(c, (pool_levels[c.in0], pool_levels[c.in1]), channels, ex)
            for c, ex in zip(cells, plan_extras(cells, levels)))
        out_levels = [c.level for c in cells[len(cells) - len(levels):]]
        #: pool index of the output at every level, finest first
        self.out_index = [len(cells) + out_levels.index(lv) for lv in levels]

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        sizes = {lv: tuple(f.shape[-2:]) for lv, f in zip(self.levels, feats)}
        pool = list(feats)
        for cell in self.cells:
            pool.append(cell(pool, sizes[cell.spec.level]))
        return [pool[i] for i in self.out_index]


class NASFPNNeck(nn.Module):
    """The built NAS-FPN: backbone maps -> ``L`` maps of ``channels`` channels at strides ``2**levels``.

    Args:
        cells: the merging cells (shared wiring of every stacked block).
        in_shapes: the backbone levels fed in, finest first; their strides must be ``2**levels[0]``,
            ``2**(levels[0] + 1)``, ... (coarser levels are made by stride-2 max pooling).
        channels: pyramid width ``C``.
        levels: pyramid levels (contiguous, finest first).
        stack: number of stacked blocks.
        arch: the arch this neck was built from (kept for export / printing).
    """

    def __init__(self, cells: Sequence[CellSpec], in_shapes: Sequence[ShapeSpec], channels: int,
                 levels: Sequence[int], stack: int = 1, arch: Arch | None = None):
        super().__init__()
        self.arch, self.levels, self.out_channels = arch, tuple(levels), int(channels)
        want = [2 ** lv for lv in self.levels[:len(in_shapes)]]
        if not in_shapes or len(in_shapes) > len(self.levels) or [s.stride for s in in_shapes] != want:
            raise ValueError(f"NAS-FPN on levels {list(self.levels)} needs backbone strides starting "
                             f"{[2 ** lv for lv in self.levels]}, got {[s.stride for s in in_shapes]}")
        self.lateral = nn.ModuleList(
            nn.Identity() if s.channels == channels else
            nn.Sequential(nn.Conv2d(s.channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            for s in in_shapes)
        self.blocks = nn.ModuleList(NASFPNBlock(cells, self.levels, channels) for _ in range(stack))

    @property
    def strides(self) -> list[int]:
        """Stride of every output, finest first."""
        return [2 ** lv for lv in self.levels]

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``L`` pyramid maps (finest first) from the backbone maps of the built ``in_shapes``."""
        if len(feats) != len(self.lateral):
            raise ValueError(f"neck built for {len(self.lateral)} backbone levels, got {len(feats)}")
        p = [proj(f) for proj, f in zip(self.lateral, feats)]
        while len(p) < len(self.levels):
            p.append(F.max_pool2d(p[-1], 2, 2, ceil_mode=True))
        for block in self.blocks:
            p = block(p)
        return tuple(p)


class NASFPNSpace(SearchSpace):
    """The NAS-FPN merging-cell space (decisions and semantics in the module docstring).

    Args:
        num_cells: merging cells per block (the paper: 7); at least ``len(levels)``.
        out_channels: pyramid width ``C``.
        stack: how many copies of the found block the built neck stacks.
        levels: output pyramid levels, contiguous and finest first (the paper: P3..P7).
        finest_intermediate: let intermediate cells output the finest level too (the paper: no).
        variant: ``"paper"`` (the paper's decisions) or ``"with_fpn"`` (adds the ``first`` op and the
            ``cell{i}.post`` decisions, so that the plain FPN is in the space; module docstring).

    Raises:
        ValueError: names the bad argument (``variant='x'``, ``levels``, ``num_cells``, ...).
    """

    name = "nasfpn"
    output_kind = "detector"

    def __init__(self, num_cells: int = 7, out_channels: int = 64, stack: int = 1,
                 levels: Sequence[int] = (3, 4, 5, 6, 7), finest_intermediate: bool = False,
                 variant: str = "paper"):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.variant = variant
        #: the binary ops and the post-merge choices of this variant (``post`` is no decision in the paper's)
        self.ops = BINARY_OPS if variant == "paper" else FPN_BINARY_OPS
        self.post_ops = POST_OPS if variant == "with_fpn" else ()
        self.levels = tuple(int(lv) for lv in levels)
        if not self.levels or self.levels != tuple(range(self.levels[0], self.levels[0] + len(self.levels))):
            raise ValueError(f"levels must be contiguous increasing integers, got {list(levels)}")
        if int(num_cells) < len(self.levels):
            raise ValueError(f"num_cells={num_cells} < {len(self.levels)} output levels")
        if int(out_channels) < 1 or int(stack) < 1:
            raise ValueError(f"out_channels and stack must be >= 1, got {out_channels}, {stack}")
        self.num_cells, self.out_channels, self.stack = int(num_cells), int(out_channels), int(stack)
        self.finest_intermediate = bool(finest_intermediate)

    def mm_detector(self, arch: Arch, num_classes: int, *, losses: Mapping, backbone: Mapping,
                    in_channels: Sequence[int] | None = None, detector: str = "retinanet",
                    feat_channels: int | None = None, stacked_convs: int = 4, **_: object) -> dict:
        """This space's OpenMMLab adapter: the mmdet ``model`` config of ``arch`` (the searched neck stacked
        ``stack`` times) with a RetinaNet or FCOS head and the task's head ``losses``, on ``backbone``."""
        from densenas.decoders.nasfpn_mmdet import nasfpn_model_dict

        return nasfpn_model_dict(arch, int(num_classes), detector, in_channels=in_channels,
                                 out_channels=self.out_channels, stack=self.stack, backbone=backbone,
                                 feat_channels=feat_channels, stacked_convs=int(stacked_convs),
                                 num_outs=len(self.levels), losses=losses)

    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``space``: the searched settings (without ``type``)."""
        return {"space": {k: v for k, v in dict(space_cfg or {}).items() if k != "type"}}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The mmdet model dict of ``arch`` (``host="detector"``): :meth:`mm_detector` of the space of
        ``options["space"]``, pyramid width ``options["width"]`` when set (else the searched ``out_channels``,
        default 64), with the task keys ``num_classes``, ``losses``, ``backbone``, ``in_channels`` and the head
        options ``detector`` (default ``retinanet``), ``stacked_convs``, ``feat_channels``."""
        cls.check_host(host)
        settings = dict(options.get("space") or {})
        settings["out_channels"] = int(options.get("width") or settings.get("out_channels", 64))
        try:
            space = cls(**settings)
        except TypeError as e:
            raise ValueError(f"search space settings {settings}: {e}") from None
        return space.mm_detector(arch, int(task_keys.pop("num_classes")), **task_keys)

    @property
    def first_output(self) -> int:
        """Index of the first output cell (the last ``len(levels)`` cells are the outputs)."""
        return self.num_cells - len(self.levels)

    @memoized_decisions
    def decisions(self) -> list[Decision]:
        inner = self.levels if self.finest_intermediate or len(self.levels) == 1 else self.levels[1:]
        decs = []
        for i in range(self.num_cells):
            pool = tuple(range(len(self.levels) + i))
            decs += [Decision(f"cell{i}.in0", pool), Decision(f"cell{i}.in1", pool),
                     Decision(f"cell{i}.level", self.levels if i >= self.first_output else inner),
                     Decision(f"cell{i}.op", self.ops)]
            if self.post_ops:
                decs.append(Decision(f"cell{i}.post", self.post_ops))
        return decs

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad field (``cell3.in1=12 out of range 0..7``)."""
        values = self.check_values(arch)
        for d in self.decisions():
            v, field = values[d.name], d.name.split(".")[1]
            if field in ("in0", "in1", "level") and (isinstance(v, bool) or not isinstance(v, int)):
                raise InvalidArch(f"{d.name}={v!r} is not an integer")
            if field in ("in0", "in1") and v not in d.options:
                raise InvalidArch(f"{d.name}={v} out of range 0..{len(d) - 1} (pyramid inputs / earlier "
                                  f"cells)")
            if field == "level" and v not in d.options:
                why = " (intermediate cells may not output the finest level)" if v in self.levels else ""
                raise InvalidArch(f"{d.name}={v} is not an allowed level {list(d.options)}{why}")
            if field == "op" and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not a binary op of variant {self.variant!r} (choices: "
                                  f"{list(d.options)})")
            if field == "post" and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not a post-merge op (choices: {list(d.options)})")
        super().check(arch)  # unknown extra decisions
        seen: dict[int, int] = {}
        for i in range(self.num_cells):
            if arch[f"cell{i}.in0"] == arch[f"cell{i}.in1"]:
                raise InvalidArch(f"cell{i}.in1={arch[f'cell{i}.in1']} equals cell{i}.in0: a cell merges "
                                  f"two different features")
            if i >= self.first_output:
                lv = arch[f"cell{i}.level"]
                if lv in seen:
                    raise InvalidArch(f"cell{i}.level={lv} repeats cell{seen[lv]}.level: the last "
                                      f"{len(self.levels)} cells must output each of "
                                      f"{list(self.levels)} once")
                seen[lv] = i

    # ---------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over valid archs: distinct inputs per cell, a random permutation of output levels."""
        out_levels = [int(v) for v in rng.permutation(self.levels)]
        choices = {}
        for d in self.decisions():
            i, field = int(d.name.split(".")[0][4:]), d.name.split(".")[1]
            if field == "in1":
                others = [p for p in d.options if p != choices[f"cell{i}.in0"]]
                choices[d.name] = int(others[rng.integers(len(others))])
            elif field == "level" and i >= self.first_output:
                choices[d.name] = out_levels[i - self.first_output]
            else:
                v = d.options[rng.integers(len(d))]
                choices[d.name] = v if field in ("op", "post") else int(v)
        arch = Arch(self.name, tuple(choices.items()))
        self.check(arch)
        return arch

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one decision; an output cell's level is swapped with another output cell's."""
        self.check(arch)
        decs = self.decisions()
        for _ in range(self.max_tries):
            d = decs[rng.integers(len(decs))]
            i, field = int(d.name.split(".")[0][4:]), d.name.split(".")[1]
            if field == "level" and i >= self.first_output:
                j = [k for k in range(self.first_output, self.num_cells) if k != i][
                    rng.integers(len(self.levels) - 1)] if len(self.levels) > 1 else None
                if j is None:
                    continue
                child = arch.replace(**{d.name: arch[f"cell{j}.level"], f"cell{j}.level": arch[d.name]})
            else:
                others = [v for v in d.options if v != arch[d.name]]
                if not others:
                    continue
                child = arch.replace(**{d.name: others[rng.integers(len(others))]})
            if self.is_valid(child):
                return child
        raise RuntimeError(f"space {self.name!r}: no valid mutation of {arch}")

    def size(self) -> int:
        """Exact number of valid archs."""
        n, inner = len(self.levels), len(self.decisions()[2].options)
        count = math.factorial(n) * inner ** self.first_output * len(self.ops) ** self.num_cells
        count *= max(len(self.post_ops), 1) ** self.num_cells
        for i in range(self.num_cells):
            count *= (n + i) * (n + i - 1)
        return count

    # ---------------------------------------------------------------- reading
    def cells(self, arch: Arch) -> list[CellSpec]:
        """The merging cells of ``arch``, in order."""
        self.check(arch)
        return [CellSpec(*(arch[f"cell{i}.{f}"] for f in CellSpec._fields[:4]),
                         post=arch.get(f"cell{i}.post", "relu_conv_bn")) for i in range(self.num_cells)]

    def paper_arch(self) -> Arch:
        """The published NAS-FPN (7 cells on P3..P7) as an arch of this space."""
        if self.num_cells != len(PAPER_CELLS) or self.levels != (3, 4, 5, 6, 7) or self.finest_intermediate:
            raise ValueError("the paper's architecture needs num_cells=7, levels=(3, ..., 7) and "
                             "finest_intermediate=False")
        choices = []
        for i, (level, op, a, b) in enumerate(PAPER_CELLS):
            choices += [(f"cell{i}.in0", a), (f"cell{i}.in1", b), (f"cell{i}.level", level),
                        (f"cell{i}.op", op)]
            if self.post_ops:
                choices.append((f"cell{i}.post", "relu_conv_bn"))
        arch = Arch(self.name, tuple(choices))
        self.check(arch)
        return arch

    def _arch_of(self, cells: Sequence[CellSpec]) -> Arch:
        """The arch of ``cells`` (all ``num_cells`` of them), checked."""
        choices = []
        for i, c in enumerate(cells):
            choices += [(f"cell{i}.in0", int(c.in0)), (f"cell{i}.in1", int(c.in1)),
                        (f"cell{i}.level", int(c.level)), (f"cell{i}.op", c.op)]
            if self.post_ops:
                choices.append((f"cell{i}.post", c.post))
        arch = Arch(self.name, tuple(choices))
        self.check(arch)
        return arch

    def fpn_cells(self) -> list[CellSpec] | None:
        """The plain FPN (Lin et al., CVPR 2017, as mmdet's ``FPN``) as merging cells, or ``None`` when this
        space cannot express it (variant ``"paper"``, ``stack > 1``, a single level, or too few cells).

        The first ``min(3, L)`` levels are the backbone's (:data:`FPN_BACKBONE_LEVELS`): the top-down path
        ``inner_j = lateral_j + up(inner_{j+1})`` is made of ``sum`` cells with ``post="none"`` (the finest
        sum is the input of its output cell), every output cell is ``conv`` (3x3 with bias) of its level's
        inner map (``first``), and each coarser level is ``conv`` of the previous output, resampled down
        (mmdet's ``add_extra_convs="on_output"``; from the second one on ``relu_conv_bn``, mmdet's
        ``relu_before_extra_convs=True``). The pooled P6/P7 inputs are the ``in1`` of those cells, so they
        are consumed and not summed in. Cells beyond what FPN needs are ``first`` aliases (``post="none"``,
        no parameters) of the coarsest backbone level at the head of the top-down path.
        """
        L, n = len(self.levels), self.num_cells
        B = min(FPN_BACKBONE_LEVELS, L)
        pad = n - L - max(B - 2, 0)
        if self.variant != "with_fpn" or self.stack != 1 or L < 2 or pad < 0:
            return None
        lv, cells = self.levels, []

        def add(in0: int, in1: int, level: int, op: str, post: str) -> int:
            cells.append(CellSpec(in0, in1, level, op, post))
            return L + len(cells) - 1

        top = [0] * B  # pool index of each backbone level's inner (top-down) map
        top[B - 1] = B - 1
        for _ in range(pad):  # parameter-free aliases of the coarsest backbone level (level > finest)
            top[B - 1] = add(top[B - 1], 0, lv[B - 1], "first", "none")
        for j in range(B - 2, 0, -1):  # the top-down path: inner_j = lateral_j + up(inner_{j+1})
            top[j] = add(j, top[j + 1], lv[j], "sum", "none")
        out = add(0, top[1], lv[0], "sum", "conv")  # P_finest = conv(lateral_0 + up(inner_1))
        for j in range(1, B):
            out = add(top[j], 0, lv[j], "first", "conv")
        for e, j in enumerate(range(B, L)):  # extra levels from the previous output
            out = add(out, j, lv[j], "first", "conv" if e == 0 else "relu_conv_bn")
        return cells

    def baseline_archs(self) -> dict[str, Arch]:
        """The hand-designed baselines this space expresses: ``{"fpn": arch}`` (:meth:`fpn_cells`) in the
        ``with_fpn`` variant, ``{}`` in the paper's (it has neither ``first`` nor a plain output conv).

        How close: on MobileNetV2 C3-C5 (32/96/320 channels) at ``out_channels=32``, P3-P7 and 7 cells, the
        built neck has 59,712 parameters against 60,672 of mmdet's ``FPN(in_channels=[32, 96, 320],
        out_channels=32, num_outs=5, add_extra_convs="on_output", relu_before_extra_convs=True)`` (ratio
        0.984; tests/test_space_baselines_det.py). The differences are this space's, not the arch's: the
        laterals are conv1x1-BN without bias and are skipped where the backbone already has ``C`` channels
        (C3 here), P6/P7 are conv3x3 on max-pooled maps instead of stride-2 conv3x3, and P7's conv has BN.
        Top-down nearest upsampling + sum and the 3x3 output convs are exactly FPN's.
        """
        cells = self.fpn_cells()
        return {} if cells is None else {"fpn": self._arch_of(cells)}

    def default_arch(self) -> Arch:
        """The baseline arch: :meth:`paper_arch` when the space has the paper's shape, otherwise a fixed
        valid arch (the sample of seed 0)."""
        try:
            return self.paper_arch()
        except ValueError:
            return self.sample(np.random.default_rng(0))

    def describe(self, arch: Arch) -> str:
        """Multi-line human-readable summary of ``arch``."""
        cells = self.cells(arch)
        names = [f"P{lv}" for lv in self.levels] + [f"c{i}" for i in range(self.num_cells)]
        lines = [f"NAS-FPN: {self.num_cells} merging cells, C={self.out_channels}, stack {self.stack}"
                 + (f", variant {self.variant}" if self.variant != "paper" else "")]
        for i, (c, ex) in enumerate(zip(cells, plan_extras(cells, self.levels))):
            tail = "".join(f" + {names[j]}" for j in ex)
            out = f"  -> output P{c.level}" if i >= self.first_output else ""
            merged = f"{c.op}({names[c.in0]}, {names[c.in1]}){tail}"
            if self.post_ops:
                merged = f"{c.post}[{merged}]"
            lines.append(f"  c{i} (P{c.level}) = {merged}{out}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ build
    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> NASFPNNeck:
        """Build the neck for ``arch`` on backbone levels of the given shapes (finest first).

        Args:
            arch: a valid arch of this space.
            in_shapes: ``{level name: ShapeSpec}`` of the backbone levels fed in, finest first, at strides
                ``2**levels[0]``, ``2**levels[1]``, ... (e.g. ``c3``..``c5`` at 8/16/32); levels past the
                last given one are made by max pooling.

        Returns:
            The neck; ``forward(feats)`` returns ``len(levels)`` maps of ``out_channels`` channels.

        Raises:
            InvalidArch: ``arch`` is not in this space.
            TypeError: ``in_shapes`` is a list (pass the dict).
            ValueError: ``in_shapes`` is ``None`` or empty, or its strides do not match the levels.
        """
        cells = self.cells(arch)
        shapes = self.encoder_shapes(in_shapes)
        want = [2 ** lv for lv in self.levels]
        if len(shapes) > len(want) or [s.stride for s in shapes] != want[:len(shapes)]:
            raise ValueError(f"space {self.name!r} on levels {list(self.levels)} needs backbone levels at the "
                             f"first strides of {want} (finest first, from {want[0]}), got "
                             f"{describe_shapes(in_shapes)}; pick the levels with the backbone's out_indices")
        return NASFPNNeck(cells, shapes, self.out_channels, self.levels, self.stack, arch=arch)


def space_for_arch(arch: Arch, out_channels: int = 64, stack: int = 1,
                   levels: Sequence[int] = (3, 4, 5, 6, 7)) -> NASFPNSpace:
    """The space an exported ``arch`` belongs to (the cell count and the variant are read off its decision
    names: ``cell{i}.post`` decisions mean ``variant="with_fpn"``)."""
    names = [k for k, _ in arch.choices]
    num_cells = sum(n.startswith("cell") and n.endswith(".in0") for n in names)
    finest = any(arch.get(f"cell{i}.level") == levels[0] for i in range(num_cells - len(levels)))
    variant = "with_fpn" if any(n.endswith(".post") for n in names) else "paper"
    return NASFPNSpace(num_cells, out_channels, stack, levels, finest_intermediate=finest, variant=variant)

"""Auto-DeepLab: a hierarchical (cell + network level) differentiable search space for segmentation.

After Liu, Chen, Schroff, Adam, Hua, Yuille, Fei-Fei, "Auto-DeepLab: Hierarchical Neural Architecture
Search for Semantic Image Segmentation" (CVPR 2019).

Discrete decisions of an arch (``Arch`` of space ``"autodeeplab"``):

* the cell genotype shared by every layer: for block ``b < B``, two inputs ``cell.b{b}.in0 < cell.b{b}.in1``
  among the states ``0`` = H^{l-2}, ``1`` = H^{l-1}, ``2 + j`` = block ``j < b``, and an op on each
  (``cell.b{b}.op0`` / ``op1``, the paper's ops except ``none``); the cell outputs the concatenation of
  its ``B`` blocks (``B * F * s / 4`` channels at stride ``s``);
* the network-level path ``path.l{i}`` in ``(4, 8, 16, 32)`` for each of the ``L`` layers: layer 0 follows
  the stride-4 stem so it is at stride 4 or 8, and consecutive layers differ by at most one level.

The supernet (:class:`AutoDeepLabSupernet`) relaxes both levels (paper eq. 2-7): every cell edge is a
mixed op weighted by softmax(α) (α shared by all cells), and every lattice node ``(l, s)`` sums the cells
from ``(l-1, s/2)``, ``(l-1, s)``, ``(l-1, 2s)`` weighted by β. β is normalised over the *outgoing* moves
of each node (``β_{s→s/2} + β_{s→s} + β_{s→2s} = 1``, invalid moves excluded), so it reads as
transition probabilities and the path is decoded by Viterbi (:mod:`densenas.viterbi`) with the
one-level band mask. Only lattice nodes reachable from the stem are built and computed; ``none`` ops are
never computed; cells can be gradient-checkpointed (``checkpoint_cells``) to trade compute for memory.
An ASPP head sits on every stride of the last layer; their logits are upsampled to the input and summed.

A cell's H^{l-2} input is the node at the same stride two layers back when it exists, else the nearest
reachable one; the stem's stride-2 and stride-4 maps play H^{-2} and H^{-1}. Inputs at another stride are
bilinearly resized (:class:`~densenas.decoders.autodeeplab_ops.Preprocess`).
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from densenas.arch import Arch, Decision, InvalidArch
from densenas.ops import check_ops
from densenas.space import ShapeSpec, as_shapes, describe_shapes, memoized_decisions
from densenas.differentiable import DifferentiableSpace, Supernet
from densenas.viterbi import band_transitions, viterbi

from .autodeeplab_ops import (ASPP, AUTODEEPLAB_OPS, NONE, OP_FACTORIES, Cell, SearchCell, Stem,
                              edge_index, num_edges, resize)

STRIDES = (4, 8, 16, 32)
Genotype = list[tuple[int, int, str, str]]


def levels_at(layer: int) -> list[int]:
    """Stride levels (0 = stride 4 ... 3 = stride 32) reachable at ``layer``; -1 = stem (4), -2 = stem (2)."""
    if layer == -2:
        return [-1]
    if layer == -1:
        return [0]
    return list(range(min(layer + 1, 3) + 1))


def _nearest(level: int, available: Sequence[int]) -> int:
    return min(available, key=lambda a: (abs(a - level), a))


def _level_sizes(h4: int, w4: int) -> list[tuple[int, int]]:
    return [(-(-h4 // 2 ** k), -(-w4 // 2 ** k)) for k in range(len(STRIDES))]


def _in_channels(in_shapes: Mapping[str, ShapeSpec] | None) -> int:
    """Image channels from ``None`` (3) or ``{"image": ShapeSpec(channels, 1)}`` (no encoder shapes)."""
    shapes = as_shapes(in_shapes, "autodeeplab")
    values = [ShapeSpec(3, 1)] if shapes is None else list(shapes.values())
    if len(values) != 1 or values[0].stride != 1:
        raise ValueError(f"Auto-DeepLab reads one input image, e.g. {{'image': ShapeSpec(3, 1)}}, got "
                         f"{describe_shapes(shapes)}")
    return int(values[0].channels)


# ------------------------------------------------------------------------------------------ decoding
def decode_cell(alpha: np.ndarray, ops: Sequence[str], blocks: int) -> Genotype:
    """Per block, the two states with the strongest non-``none`` op weight and their argmax ops
    (DARTS / Auto-DeepLab sec. 3.3). ``alpha``: softmax weights ``(num_edges, len(ops))``."""
    keep = [k for k, o in enumerate(ops) if o != NONE]
    genotype: Genotype = []
    for b in range(blocks):
        rows = np.asarray([alpha[edge_index(b, j)][keep] for j in range(2 + b)])
        strength = rows.max(axis=1)
        top = sorted(np.argsort(-strength, kind="stable")[:2].tolist())
        genotype.append((top[0], top[1], ops[keep[int(rows[top[0]].argmax())]],
                         ops[keep[int(rows[top[1]].argmax())]]))
    return genotype


def beta_transitions(beta: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Viterbi inputs from normalised β ``(L, 4, 3)`` (``[l, source level, move]``, move 0 = to the finer
    level, 1 = same, 2 = to the coarser): ``(log_trans, log_init)``; the first layer leaves the stem at
    stride 4, later layers move by at most one level (band mask)."""
    n = len(STRIDES)
    band = band_transitions(n, 1)
    with np.errstate(divide="ignore"):
        log_init = np.full(n, -np.inf)
        log_init[0], log_init[1] = np.log(beta[0, 0, 1]), np.log(beta[0, 0, 2])
        trans = []
        for l in range(1, beta.shape[0]):
            t = np.zeros((n, n))
            for i, m in itertools.product(range(n), range(3)):
                if 0 <= i + m - 1 < n:
                    t[i, i + m - 1] = beta[l, i, m]
            trans.append(np.log(t) + band)
    return trans, log_init


def decode_path(beta: np.ndarray) -> list[int]:
    """Most probable path (stride levels, one per layer) under normalised β, by Viterbi."""
    trans, log_init = beta_transitions(np.asarray(beta, dtype=np.float64))
    return viterbi(trans, log_init)[0]


# -------------------------------------------------------------------------------------------- space
class AutoDeepLabSpace(DifferentiableSpace):
    """The Auto-DeepLab space (decisions in the module docstring).

    Args:
        num_classes: output classes.
        layers: network layers ``L`` (12 in the paper; small by default for CPU).
        blocks: blocks per cell ``B`` (5 in the paper).
        filter_multiplier: ``F``; a block at stride ``s`` has ``F * s / 4`` channels.
        ops: candidate ops of the supernet (default the paper's eight, :data:`AUTODEEPLAB_OPS`); the
            discrete op decisions take them without ``none``.
        aspp_rates: atrous rate of the ASPP 3x3 branch at strides 4, 8, 16, 32 (paper: ``96 / s``).
        aspp_channels: ASPP width.
        stem_channels: stem width (default ``B * F``).
        checkpoint_cells: gradient-checkpoint every supernet cell (less memory, ~30% more compute;
            batch-norm running statistics then update twice per step).
    """

    name = "autodeeplab"
    output_kind = "segmenter"

    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``filter_multiplier`` as searched (default 8) and ``width``: the ASPP head's channels, the searched
        ``aspp_channels`` (64 when the search config does not say; the paper fine-tunes wider than it searches)."""
        sp = dict(space_cfg or {})
        return {"filter_multiplier": sp.get("filter_multiplier", 8), "width": sp.get("aspp_channels", 64)}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The whole mmseg ``EncoderDecoder`` of ``arch`` (``host="segmenter"``): ``AutoDeepLabBackbone`` with
        ``options["filter_multiplier"]`` and mmseg's ``ASPPHead`` of ``options["width"]`` channels with the
        task's ``loss_decode`` (:func:`~densenas.decoders.autodeeplab_mmseg.autodeeplab_model_dict`; task keys
        ``num_classes``, ``loss_decode``). The network has its own stem: ``in_shapes`` is unused."""
        from densenas.decoders.autodeeplab_mmseg import autodeeplab_model_dict

        cls.check_host(host)
        return autodeeplab_model_dict(arch, task_keys["num_classes"], filter_multiplier=options["filter_multiplier"],
                                      channels=options["width"], loss_decode=task_keys["loss_decode"])

    def __init__(self, num_classes: int, layers: int = 4, blocks: int = 3, filter_multiplier: int = 8,
                 ops: Sequence[str] | None = None, aspp_rates: Sequence[int] = (24, 12, 6, 3),
                 aspp_channels: int = 32, stem_channels: int | None = None,
                 checkpoint_cells: bool = False):
        ops = check_ops(AUTODEEPLAB_OPS if ops is None else ops, OP_FACTORIES)  # the Auto-DeepLab table
        if ops == (NONE,):
            raise ValueError(f"ops must hold at least one besides {NONE!r} (a real operation), got {list(ops)}")
        for k, v in dict(num_classes=num_classes, layers=layers, blocks=blocks,
                         filter_multiplier=filter_multiplier, aspp_channels=aspp_channels).items():
            if int(v) < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
        if len(aspp_rates) != len(STRIDES) or min(aspp_rates) < 1:
            raise ValueError(f"aspp_rates needs one rate >= 1 per stride {STRIDES}, got {list(aspp_rates)}")
        self.num_classes, self.layers, self.blocks = int(num_classes), int(layers), int(blocks)
        self.filter_multiplier, self.aspp_channels = int(filter_multiplier), int(aspp_channels)
        self.ops, self.aspp_rates = ops, tuple(int(r) for r in aspp_rates)
        self.op_options = tuple(o for o in ops if o != NONE)
        self.stem_channels = int(stem_channels or blocks * filter_multiplier)
        self.checkpoint_cells = bool(checkpoint_cells)

    # ----------------------------------------------------------------- shapes
    def block_channels(self, level: int) -> int:
        return self.filter_multiplier * 2 ** level

    def channels(self, layer: int, level: int) -> int:
        """Channels of the lattice node (stem for ``layer < 0``)."""
        return self.stem_channels if layer < 0 else self.blocks * self.block_channels(level)

    # -------------------------------------------------------------- decisions
    @memoized_decisions
    def decisions(self) -> list[Decision]:
        decs = []
        for b in range(self.blocks):
            states = tuple(range(2 + b))
            decs += [Decision(f"cell.b{b}.in0", states), Decision(f"cell.b{b}.in1", states),
                     Decision(f"cell.b{b}.op0", self.op_options), Decision(f"cell.b{b}.op1", self.op_options)]
        decs += [Decision(f"path.l{l}", STRIDES) for l in range(self.layers)]
        return decs

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad decision."""
        super().check(arch)
        for b in range(self.blocks):
            i0, i1 = arch[f"cell.b{b}.in0"], arch[f"cell.b{b}.in1"]
            if not i0 < i1:
                raise InvalidArch(f"cell.b{b}.in1={i1} must be greater than cell.b{b}.in0={i0} "
                                  f"(a block reads two distinct states, in increasing order)")
        prev = STRIDES.index(arch["path.l0"])
        if prev > 1:
            raise InvalidArch(f"path.l0={arch['path.l0']}: the first layer follows the stride-4 stem, "
                              f"so it is at stride 4 or 8")
        for l in range(1, self.layers):
            cur = STRIDES.index(arch[f"path.l{l}"])
            if abs(cur - prev) > 1:
                raise InvalidArch(f"path.l{l}={STRIDES[cur]} jumps from path.l{l - 1}={STRIDES[prev]}: "
                                  f"at most one stride level per layer")
            prev = cur

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over valid archs (paths drawn through a count of their valid continuations)."""
        n = len(STRIDES)
        counts = [np.ones(n)]
        for _ in range(self.layers - 1):
            nxt = counts[0]
            counts.insert(0, np.array([nxt[max(i - 1, 0):i + 2].sum() for i in range(n)]))
        levels: list[int] = []
        for l in range(self.layers):
            cand = [0, 1] if l == 0 else [j for j in range(n) if abs(j - levels[-1]) <= 1]
            w = counts[l][cand]
            levels.append(int(rng.choice(cand, p=w / w.sum())))
        genotype = []
        for b in range(self.blocks):
            pairs = list(itertools.combinations(range(2 + b), 2))
            i0, i1 = pairs[int(rng.integers(len(pairs)))]
            genotype.append((i0, i1, self.op_options[int(rng.integers(len(self.op_options)))],
                             self.op_options[int(rng.integers(len(self.op_options)))]))
        return self.arch_from(genotype, [STRIDES[j] for j in levels])

    # ------------------------------------------------------------------ views
    def arch_from(self, genotype: Genotype, path: Sequence[int]) -> Arch:
        """The (checked) arch of a genotype and a path given as strides."""
        choices: list[tuple[str, object]] = []
        for b, (i0, i1, o0, o1) in enumerate(genotype):
            choices += [(f"cell.b{b}.in0", int(i0)), (f"cell.b{b}.in1", int(i1)),
                        (f"cell.b{b}.op0", o0), (f"cell.b{b}.op1", o1)]
        choices += [(f"path.l{l}", int(s)) for l, s in enumerate(path)]
        arch = Arch(self.name, tuple(choices))
        self.check(arch)
        return arch

    def genotype(self, arch: Arch) -> Genotype:
        return [(arch[f"cell.b{b}.in0"], arch[f"cell.b{b}.in1"], arch[f"cell.b{b}.op0"],
                 arch[f"cell.b{b}.op1"]) for b in range(self.blocks)]

    def path(self, arch: Arch) -> list[int]:
        """Strides of the layers."""
        return [arch[f"path.l{l}"] for l in range(self.layers)]

    def describe(self, arch: Arch) -> str:
        self.check(arch)
        names = ["h(l-2)", "h(l-1)"] + [f"b{j}" for j in range(self.blocks)]
        lines = [f"autodeeplab: L={self.layers} B={self.blocks} F={self.filter_multiplier}, "
                 f"path 4(stem) -> {' -> '.join(map(str, self.path(arch)))}"]
        for b, (i0, i1, o0, o1) in enumerate(self.genotype(arch)):
            lines.append(f"  b{b} = {o0}({names[i0]}) + {o1}({names[i1]})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ build
    def build_features(self, arch: Arch, in_channels: int = 3) -> "AutoDeepLabFeatures":
        """Stem + cells along the path (the backbone of the decoded network)."""
        self.check(arch)
        return AutoDeepLabFeatures(self, self.genotype(arch), [STRIDES.index(s) for s in self.path(arch)],
                                   in_channels)

    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> "AutoDeepLabNet":
        """The decoded network: stem, cells along the path, ASPP, logits at the input size.

        Args:
            arch: a valid arch of this space.
            in_shapes: ``None`` (an RGB image) or ``{"image": ShapeSpec(channels, 1)}`` (no encoder).
        """
        feats = self.build_features(arch, _in_channels(in_shapes))
        level = STRIDES.index(self.path(arch)[-1])
        head = ASPP(feats.out_channels, self.aspp_channels, self.num_classes, (self.aspp_rates[level],))
        return AutoDeepLabNet(feats, head, arch)

    def build_supernet(self, in_shapes: Mapping[str, ShapeSpec] | None = None) -> "AutoDeepLabSupernet":
        return AutoDeepLabSupernet(self, _in_channels(in_shapes))


def space_for_arch(arch: Arch, num_classes: int, **kwargs) -> AutoDeepLabSpace:
    """The space an exported arch belongs to (``layers`` and ``blocks`` read off its decision names)."""
    names = [k for k, _ in arch.choices]
    return AutoDeepLabSpace(num_classes, layers=sum(n.startswith("path.l") for n in names),
                            blocks=sum(n.startswith("cell.b") and n.endswith(".in0") for n in names),
                            **kwargs)


# ------------------------------------------------------------------------------- decoded network
class AutoDeepLabFeatures(nn.Module):
    """Stem and one discrete cell per layer along the path; returns the last cell's output.

    Attributes:
        out_channels: channels of the output.
        out_stride: stride of the output relative to the input.
    """

    def __init__(self, space: AutoDeepLabSpace, genotype: Genotype, levels: Sequence[int],
                 in_channels: int = 3):
        super().__init__()
        self.levels = list(levels)
        self.stem = Stem(in_channels, space.stem_channels)
        lv = [-1, 0] + self.levels  # the levels of layers -2, -1, 0, ...
        self.cells = nn.ModuleList(
            Cell(genotype, space.channels(l - 2, lv[l]), space.channels(l - 1, lv[l + 1]),
                 space.block_channels(self.levels[l])) for l in range(len(self.levels)))
        self.out_channels = space.channels(0, self.levels[-1])
        self.out_stride = STRIDES[self.levels[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pp, p = self.stem(x)
        sizes = _level_sizes(*p.shape[-2:])
        for level, cell in zip(self.levels, self.cells):
            pp, p = p, cell(pp, p, sizes[level])
        return p


class AutoDeepLabNet(nn.Module):
    """Decoded Auto-DeepLab network: features, ASPP, logits bilinearly upsampled to the input size."""

    def __init__(self, features: AutoDeepLabFeatures, head: ASPP, arch: Arch | None = None):
        super().__init__()
        self.arch = arch
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self.head(self.features(x)), x.shape[-2:])


# ---------------------------------------------------------------------------------------- supernet
class AutoDeepLabSupernet(Supernet):
    """The continuous lattice (see the module docstring); ``forward(images)`` gives logits at input size.

    Attributes:
        alpha: op logits ``(num_edges, num_ops)``, shared by all cells.
        beta: transition logits ``(L, 4, 3)`` = ``[layer, source level, move]`` (move 0 = to the finer
            level, 1 = same, 2 = to the coarser); layer 0's source is the stride-4 stem.
    """

    def __init__(self, space: AutoDeepLabSpace, in_channels: int = 3):
        super().__init__()
        self.space = space
        sp = space
        self.stem = Stem(in_channels, sp.stem_channels)
        self.cells = nn.ModuleDict()
        for l in range(sp.layers):
            for j in levels_at(l):
                pp = _nearest(j, levels_at(l - 2))
                for i in (j - 1, j, j + 1):
                    if i in levels_at(l - 1):
                        self.cells[self._key(l, j, i)] = SearchCell(
                            sp.channels(l - 2, pp), sp.channels(l - 1, i), sp.block_channels(j), sp.blocks,
                            sp.ops)
        self.heads = nn.ModuleDict({
            str(j): ASPP(sp.channels(0, j), sp.aspp_channels, sp.num_classes, (sp.aspp_rates[j],))
            for j in levels_at(sp.layers - 1)})
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(sp.blocks), len(sp.ops)))
        self.beta = nn.Parameter(1e-3 * torch.randn(sp.layers, len(STRIDES), 3))
        n = len(STRIDES)
        mask = torch.tensor([[0 <= i + m - 1 < n for m in range(3)] for i in range(n)])
        self.register_buffer("beta_mask", mask.expand(sp.layers, n, 3).clone(), persistent=False)

    @staticmethod
    def _key(layer: int, level: int, source: int) -> str:
        return f"l{layer}_s{STRIDES[level]}_from{STRIDES[source]}"

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def alpha_weights(self) -> torch.Tensor:
        """softmax(α) per edge."""
        return F.softmax(self.alpha, dim=-1)

    def beta_weights(self) -> torch.Tensor:
        """β normalised over the valid outgoing moves of every node (invalid moves get 0)."""
        return F.softmax(self.beta.masked_fill(~self.beta_mask, float("-inf")), dim=-1)

    def _cell(self, cell: SearchCell, pp: torch.Tensor, p: torch.Tensor, size: tuple[int, int],
              alpha: torch.Tensor) -> torch.Tensor:
        if self.space.checkpoint_cells and self.training and torch.is_grad_enabled():
            return checkpoint(cell, pp, p, size, alpha, use_reentrant=False)
        return cell(pp, p, size, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1 = self.stem(x)
        sizes = _level_sizes(*x1.shape[-2:])
        alpha, beta = self.alpha_weights(), self.beta_weights()
        prev2: dict[int, torch.Tensor] = {-1: x0}
        prev: dict[int, torch.Tensor] = {0: x1}
        for l in range(self.space.layers):
            cur: dict[int, torch.Tensor] = {}
            for j in levels_at(l):
                pp = prev2[_nearest(j, list(prev2))]
                for i in (j - 1, j, j + 1):
                    if i in prev:
                        y = beta[l, i, j - i + 1] * self._cell(self.cells[self._key(l, j, i)], pp, prev[i],
                                                               sizes[j], alpha)
                        cur[j] = y if j not in cur else cur[j] + y
            prev2, prev = prev, cur
        out = None
        for j, h in prev.items():
            y = resize(self.heads[str(j)](h), x.shape[-2:])
            out = y if out is None else out + y
        return out

    def derive(self) -> Arch:
        """Top-2 inputs per block by strongest non-``none`` op, path by Viterbi over normalised β."""
        with torch.no_grad():
            alpha = self.alpha_weights().double().cpu().numpy()
            beta = self.beta_weights().double().cpu().numpy()
        genotype = decode_cell(alpha, self.space.ops, self.space.blocks)
        return self.space.arch_from(genotype, [STRIDES[j] for j in decode_path(beta)])

"""IR-NAS search space: a searched cell stacked at searched widths, for image restoration.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS). Everything runs at full resolution (no down-sampling); what varies is

* the **cell** shared by all layers (DARTS-style, Liu et al. ICLR 2019): block ``b`` of the cell sums two
  operations applied to two earlier states; states ``0``/``1`` are the cell inputs (the previous layer's
  output and the one before it, each projected by conv1x1-BN-ReLU), state ``2 + j`` is block ``j``. The
  cell output is the concatenation of all blocks fused by conv1x1-BN-ReLU. Decisions, per block:
  ``cell.b{b}.in0`` / ``cell.b{b}.in1`` (distinct state indices ``< 2 + b``) and ``cell.b{b}.op0`` /
  ``cell.b{b}.op1`` (operation names; never ``none``);
* the **width** of every layer: ``width.l{i}`` in ``(1, 2, 4)``, a multiple of the base width ``W``.
  Consecutive layers differ by at most one level (``W <-> 2W <-> 4W``), as in the paper's width lattice.

The discrete network (:class:`IRNASNet`) is stem (3x3 conv + ReLU) -> ``L`` cells -> ASPP -> 3x3 conv,
and predicts a residual added to its input (``restored = degraded + net(degraded)``).

The supernet (:class:`IRNASSupernet`) holds, for every layer, one super cell per width. Each super-cell
edge is a :class:`~densenas.decoders.irnas_ops.MixedOp` weighted by ``softmax(α[edge])``; α is shared by
all super cells. The input of the cell at layer ``l`` and width state ``j`` is
``sum_i p_l[i, j] * proj_{i->j}(h_{l-1}^i)`` over the states ``i`` within one level of ``j``, where
``p_l = softmax`` over destinations of the band-masked ``β[l]`` (the stem is layer ``-1`` and exists at
every width). :meth:`IRNASSupernet.derive` keeps, per block, the two inputs whose strongest non-``none``
operation weighs most and that operation (DARTS), and decodes the widths with the Viterbi algorithm over
``log p`` (:func:`densenas.viterbi.viterbi`).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision, InvalidArch
from densenas.ops import ConvBNReLU, build_op, check_ops
from densenas.space import ShapeSpec, as_shapes, describe_shapes, memoized_decisions
from densenas.differentiable import DifferentiableSpace, Supernet
from densenas.viterbi import band_transitions, viterbi

from .irnas_ops import IRNAS_OPS, NONE_OP, OPS, MixedOp, RestorationHead, stem

WIDTH_MULTS: tuple[int, ...] = (1, 2, 4)
"""Width options of every layer, as multiples of the base width ``W``."""


class BlockSpec(NamedTuple):
    """One block of the discrete cell: ``op0(state[in0]) + op1(state[in1])``."""

    in0: int
    in1: int
    op0: str
    op1: str


class IRNASCell(nn.Module):
    """A discrete cell at ``channels`` width.

    Args:
        blocks: the cell's blocks.
        c_prev: channels of the previous layer's output (state 0).
        c_prev_prev: channels of the output two layers back (state 1).
        channels: the cell's width.
    """

    def __init__(self, blocks: Sequence[BlockSpec], c_prev: int, c_prev_prev: int, channels: int):
        super().__init__()
        self.blocks = list(blocks)
        self.pre0 = ConvBNReLU(c_prev, channels, 1)
        uses_1 = any(1 in (b.in0, b.in1) for b in self.blocks)
        self.pre1 = ConvBNReLU(c_prev_prev, channels, 1) if uses_1 else None
        self.ops = nn.ModuleList(nn.ModuleList([build_op(b.op0, channels, OPS), build_op(b.op1, channels, OPS)])
                                 for b in self.blocks)
        self.out = ConvBNReLU(len(self.blocks) * channels, channels, 1)

    def forward(self, h_prev: torch.Tensor, h_prev_prev: torch.Tensor) -> torch.Tensor:
        s0 = self.pre0(h_prev)
        states = [s0, self.pre1(h_prev_prev) if self.pre1 is not None else s0]
        for b, (op0, op1) in zip(self.blocks, self.ops):
            states.append(op0(states[b.in0]) + op1(states[b.in1]))
        return self.out(torch.cat(states[2:], dim=1))


class IRNASNet(nn.Module):
    """The restoration network of one IR-NAS architecture.

    Args:
        blocks: the cell shared by all layers.
        widths: channels of every layer.
        in_channels: image channels.
        aspp: append ASPP after the last cell.
        arch: the arch it was built from (kept for export / printing).
    """

    def __init__(self, blocks: Sequence[BlockSpec], widths: Sequence[int], in_channels: int = 3,
                 aspp: bool = True, arch: Arch | None = None):
        super().__init__()
        self.arch = arch
        self.widths = [int(w) for w in widths]
        self.stem = stem(in_channels, self.widths[0])
        node_ch = [self.widths[0]] + self.widths  # stem, then every layer
        self.cells = nn.ModuleList(IRNASCell(blocks, node_ch[l], node_ch[max(l - 1, 0)], c)
                                   for l, c in enumerate(self.widths))
        self.head = RestorationHead(self.widths[-1], in_channels, aspp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` ``(N, C, H, W)``; returns the same shape (input plus predicted residual)."""
        nodes = [self.stem(x)]
        for l, cell in enumerate(self.cells):
            nodes.append(cell(nodes[l], nodes[max(l - 1, 0)]))
        return x + self.head(nodes[-1])


class SuperCell(nn.Module):
    """A super cell at one width: every edge a mixed operation; the prev input arrives pre-projected.

    Args:
        channels: the cell's width.
        num_blocks: blocks (DARTS nodes) in the cell.
        ops: candidate operation names.
    """

    def __init__(self, channels: int, num_blocks: int, ops: Sequence[str]):
        super().__init__()
        self.num_blocks = num_blocks
        self.pre1 = ConvBNReLU(channels, channels, 1)
        self.edges = nn.ModuleList(MixedOp(channels, ops) for b in range(num_blocks) for _ in range(2 + b))
        self.out = ConvBNReLU(num_blocks * channels, channels, 1)

    def forward(self, s0: torch.Tensor, h_prev_prev: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [s0, self.pre1(h_prev_prev)]
        e = 0
        for b in range(self.num_blocks):
            x = 0
            for j in range(2 + b):
                x = x + self.edges[e](states[j], weights[e])
                e += 1
            states.append(x)
        return self.out(torch.cat(states[2:], dim=1))


class IRNASSupernet(Supernet):
    """The IR-NAS supernet (see the module docstring); ``forward(degraded) -> restored``.

    Args:
        space: the space it belongs to (base width, layers, blocks, ops, ASPP).
    """

    def __init__(self, space: "IRNASSpace"):
        super().__init__()
        self.space = space
        S, L, W = len(WIDTH_MULTS), space.layers, space.width
        self.channels = [W * m for m in WIDTH_MULTS]
        self.num_edges = sum(2 + b for b in range(space.blocks))
        self.alpha = nn.Parameter(1e-3 * torch.randn(self.num_edges, len(space.ops)))
        self.beta = nn.Parameter(1e-3 * torch.randn(L, S, S))
        self.register_buffer("band", torch.as_tensor(band_transitions(S, 1), dtype=torch.float32),
                             persistent=False)
        self.stems = nn.ModuleList(stem(space.in_channels, c) for c in self.channels)
        self.proj = nn.ModuleDict({f"l{l}_{i}to{j}": ConvBNReLU(self.channels[i], self.channels[j], 1)
                                   for l in range(L) for i in range(S) for j in range(S) if abs(i - j) <= 1})
        self.cells = nn.ModuleList(nn.ModuleList(SuperCell(c, space.blocks, space.ops) for c in self.channels)
                                   for _ in range(L))
        self.heads = nn.ModuleList(RestorationHead(c, space.in_channels, space.aspp) for c in self.channels)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def op_weights(self) -> torch.Tensor:
        """``softmax(α)`` per edge, ``(num_edges, num_ops)``."""
        return F.softmax(self.alpha, dim=-1)

    def log_transitions(self) -> torch.Tensor:
        """``log p_l[i, j]``: log-softmax over destinations of the band-masked β, ``(L, S, S)``."""
        return F.log_softmax(self.beta + self.band, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` ``(N, C, H, W)`` with every operation and width mixed."""
        w_ops = self.op_weights()
        p = self.log_transitions().exp()
        S = len(self.channels)
        nodes = [[s(x) for s in self.stems]]
        for l, cells in enumerate(self.cells):
            layer = []
            for j, cell in enumerate(cells):
                s0 = sum(p[l, i, j] * self.proj[f"l{l}_{i}to{j}"](nodes[l][i])
                         for i in range(S) if abs(i - j) <= 1)
                layer.append(cell(s0, nodes[max(l - 1, 0)][j], w_ops))
            nodes.append(layer)
        return x + sum(head(h) for head, h in zip(self.heads, nodes[-1]))

    @torch.no_grad()
    def derive(self) -> Arch:
        """Decode α (top-2 inputs per block, best non-``none`` op) and β (Viterbi) into a valid arch."""
        sp = self.space
        probs = self.op_weights().cpu().numpy()
        real = [k for k, name in enumerate(sp.ops) if name != NONE_OP]
        choices: dict[str, object] = {}
        e = 0
        for b in range(sp.blocks):
            rows = probs[e:e + 2 + b]
            e += 2 + b
            best_op = [real[int(np.argmax(r[real]))] for r in rows]
            strength = np.array([r[k] for r, k in zip(rows, best_op)])
            top = sorted(sorted(range(len(rows)), key=lambda i: (-strength[i], i))[:2])
            for n, i in enumerate(top):
                choices[f"cell.b{b}.in{n}"] = int(i)
                choices[f"cell.b{b}.op{n}"] = sp.ops[best_op[i]]
        log_p = self.log_transitions().cpu().double().numpy()
        path, _ = viterbi(list(log_p), np.zeros(len(WIDTH_MULTS)))  # the stem may sit at any width
        for l, s in enumerate(path[1:]):
            choices[f"width.l{l}"] = WIDTH_MULTS[s]
        arch = Arch(sp.name, tuple((d.name, choices[d.name]) for d in sp.decisions()))
        sp.check(arch)
        return arch


class IRNASSpace(DifferentiableSpace):
    """The IR-NAS space (decision names and semantics in the module docstring).

    Args:
        in_channels: image channels (3 colour, 1 grayscale).
        width: base width ``W``; layers are ``W``, ``2W`` or ``4W`` channels wide.
        layers: number of cells ``L``.
        blocks: blocks per cell ``B``.
        ops: candidate operations of the supernet (keys of the IR-NAS table
            :data:`densenas.decoders.irnas_ops.OPS` and/or ``"none"``);
            the discrete decisions offer all but ``none``. Default: the paper's six.
        aspp: append ASPP after the last cell.
    """

    name = "irnas"
    output_kind = "restorer"

    def __init__(self, in_channels: int = 3, width: int = 8, layers: int = 4, blocks: int = 2,
                 ops: Sequence[str] | None = None, aspp: bool = True):
        ops = check_ops(IRNAS_OPS if ops is None else ops, OPS, allow=(NONE_OP,))
        if ops == (NONE_OP,):
            raise ValueError(f"ops must hold at least one besides {NONE_OP!r} (a real operation), got {list(ops)}")
        for k, v in dict(in_channels=in_channels, width=width, layers=layers, blocks=blocks).items():
            if int(v) < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
        self.in_channels, self.width, self.layers, self.blocks = int(in_channels), int(width), int(layers), \
            int(blocks)
        self.ops, self.aspp = ops, bool(aspp)
        self.cell_ops = tuple(o for o in ops if o != NONE_OP)

    # ------------------------------------------------------------- decisions
    @memoized_decisions
    def decisions(self) -> list[Decision]:
        decs = []
        for b in range(self.blocks):
            states = tuple(range(2 + b))
            decs += [Decision(f"cell.b{b}.in0", states), Decision(f"cell.b{b}.in1", states),
                     Decision(f"cell.b{b}.op0", self.cell_ops), Decision(f"cell.b{b}.op1", self.cell_ops)]
        decs += [Decision(f"width.l{l}", WIDTH_MULTS) for l in range(self.layers)]
        return decs

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad field (``width.l2=4: ...``)."""
        values = self.check_values(arch)
        for d in self.decisions():
            v = values[d.name]
            if d.name.endswith((".in0", ".in1")):
                self.check_index(d, v, "cell inputs / earlier blocks")
            elif d.name.endswith((".op0", ".op1")) and v not in d.options:
                raise InvalidArch(f"{d.name}={v!r} is not an operation of this space (choices: {list(d.options)})")
            elif d.name.startswith("width.") and (isinstance(v, bool) or v not in d.options):
                raise InvalidArch(f"{d.name}={v!r} is not a width multiplier (choices: {list(WIDTH_MULTS)})")
        super().check(arch)  # unknown extra decisions
        for b in range(self.blocks):
            if arch[f"cell.b{b}.in0"] == arch[f"cell.b{b}.in1"]:
                raise InvalidArch(f"cell.b{b}.in1={arch[f'cell.b{b}.in1']} repeats cell.b{b}.in0: a block reads "
                                  f"two distinct states")
        for l in range(1, self.layers):
            a, b = WIDTH_MULTS.index(arch[f"width.l{l - 1}"]), WIDTH_MULTS.index(arch[f"width.l{l}"])
            if abs(a - b) > 1:
                raise InvalidArch(f"width.l{l}={arch[f'width.l{l}']} jumps more than one level from "
                                  f"width.l{l - 1}={arch[f'width.l{l - 1}']} (allowed steps: {WIDTH_MULTS})")

    # ------------------------------------------------------------------ export
    @classmethod
    def from_section(cls, settings: Mapping[str, Any], arch: Arch) -> "IRNASSpace":
        """The space of ``settings`` holding ``arch``: layer and block counts read off the arch when not given,
        every op of the IR-NAS table unless ``ops`` names the searched set (:func:`space_for_arch`)."""
        return space_for_arch(arch, **dict(settings))

    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """The searched settings: ``width`` (default 8), ``layers`` / ``blocks`` (checked against the arch;
        default: the arch's), ``in_channels`` (3), ``aspp`` (True), ``ops`` (``None``: any op of the table).

        Raises:
            ValueError: a setting the IR-NAS space does not take (named)."""
        sp = {k: v for k, v in dict(space_cfg or {}).items() if k != "type"}
        unknown = sorted(set(sp) - set(EXPORT_SETTINGS))
        if unknown:
            raise ValueError(f"space settings {unknown} are not IR-NAS space arguments ({list(EXPORT_SETTINGS)})")
        return {"width": int(sp.get("width", 8)), "layers": sp.get("layers"), "blocks": sp.get("blocks"),
                "in_channels": int(sp.get("in_channels", 3)), "aspp": bool(sp.get("aspp", True)),
                "ops": None if sp.get("ops") is None else list(sp["ops"])}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The restoration network of ``arch`` (``host="restorer_net"``): ``dict(type="irnas", arch=...,
        width, layers, blocks, in_channels, aspp[, ops])``, which the restoration task's model rebuilds through
        :func:`~densenas.space.space_from_section`. Checks the arch against the settings first."""
        cls.check_host(host)
        if task_keys:
            raise ValueError(f"an IR-NAS network takes no task keys, got {sorted(task_keys)}")
        opts = {k: options.get(k) for k in EXPORT_SETTINGS}
        space = space_for_arch(arch, **{k: v for k, v in opts.items() if v is not None})
        net = dict(type=cls.name, arch=arch.to_dict(), width=space.width, layers=space.layers, blocks=space.blocks,
                   in_channels=space.in_channels, aspp=space.aspp)
        if opts["ops"] is not None:
            net["ops"] = list(opts["ops"])
        return net

    # ---------------------------------------------------------------- reading
    def cell(self, arch: Arch) -> list[BlockSpec]:
        """The cell's blocks."""
        return [BlockSpec(*(arch[f"cell.b{b}.{f}"] for f in BlockSpec._fields)) for b in range(self.blocks)]

    def widths(self, arch: Arch) -> list[int]:
        """Channels of every layer."""
        return [self.width * int(arch[f"width.l{l}"]) for l in range(self.layers)]

    def describe(self, arch: Arch) -> str:
        """Multi-line human-readable summary of ``arch``."""
        self.check(arch)
        lines = [f"irnas: {self.layers} layers x {self.blocks} blocks, base width {self.width}, "
                 f"ASPP: {self.aspp}", f"  widths: {self.widths(arch)}",
                 "  cell (x0 = previous layer, x1 = the one before; output = concat of all blocks):"]
        for b, s in enumerate(self.cell(arch)):
            ins = [f"x{i}" if i < 2 else f"b{i - 2}" for i in (s.in0, s.in1)]
            lines.append(f"    b{b} = {s.op0}({ins[0]}) + {s.op1}({ins[1]})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ build
    def _check_shapes(self, in_shapes: Mapping[str, ShapeSpec] | None) -> None:
        shapes = as_shapes(in_shapes, self.name)
        if shapes is None:
            return
        values = list(shapes.values())
        if len(values) != 1 or values[0].channels != self.in_channels or values[0].stride != 1:
            raise ValueError(f"irnas restores an image (no encoder): expected one input ShapeSpec(channels="
                             f"{self.in_channels}, stride=1), e.g. {{'image': ShapeSpec({self.in_channels}, 1)}}, "
                             f"or None; got {describe_shapes(shapes)}")

    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> IRNASNet:
        """Build the discrete restoration network of ``arch`` (it takes the image, not an encoder).

        Args:
            arch: a valid arch of this space.
            in_shapes: ``None`` or ``{"image": ShapeSpec(in_channels, 1)}``.

        Returns:
            The network; ``forward(degraded) -> restored`` with the input's shape.
        """
        self.check(arch)
        self._check_shapes(in_shapes)
        return IRNASNet(self.cell(arch), self.widths(arch), self.in_channels, self.aspp, arch=arch)

    def build_supernet(self, in_shapes: Mapping[str, ShapeSpec] | None = None) -> IRNASSupernet:
        """Build the supernet (α over operations, β over width transitions)."""
        self._check_shapes(in_shapes)
        return IRNASSupernet(self)


#: the IR-NAS settings an export carries (``export_options`` / ``mm_fragment`` / :func:`space_for_arch`)
EXPORT_SETTINGS = ("width", "layers", "blocks", "in_channels", "aspp", "ops")


def space_for_arch(arch: Arch, width: int = 8, layers: int | None = None, blocks: int | None = None,
                   in_channels: int = 3, aspp: bool = True, ops: Sequence[str] | None = None) -> IRNASSpace:
    """The IR-NAS space an (exported or searched) ``arch`` belongs to, checked against it.

    Layer and block counts are read off the arch's decision names (``width.l{i}``, ``cell.b{b}.in0``); the base
    width is not part of an arch and is given. The op set defaults to every op of the IR-NAS table, so any
    searched op set fits.

    Raises:
        InvalidArch: the arch is for another space, has no width / cell decisions, or is not in the space
            (names the field).
        ValueError: ``layers`` / ``blocks`` disagree with the arch.
    """
    if arch.space != IRNASSpace.name:
        raise InvalidArch(f"field 'space': arch is for space {arch.space!r}, not {IRNASSpace.name!r}")
    names = [k for k, _ in arch.choices]
    n_layers = sum(n.startswith("width.l") for n in names)
    n_blocks = sum(n.startswith("cell.b") and n.endswith(".in0") for n in names)
    if n_layers == 0:
        raise InvalidArch("arch misses decision 'width.l0' (an irnas arch has one width.l<i> per layer)")
    if n_blocks == 0:
        raise InvalidArch("arch misses decision 'cell.b0.in0' (an irnas arch has one cell.b<b>.* per block)")
    for name, given, found in (("layers", layers, n_layers), ("blocks", blocks, n_blocks)):
        if given is not None and int(given) != found:
            raise ValueError(f"{name}={given} disagrees with the arch, which has {found} {name}")
    space = IRNASSpace(int(in_channels), int(width), n_layers, n_blocks, tuple(OPS) if ops is None else ops,
                       bool(aspp))
    space.check(arch)
    return space

"""Search-space protocol and shape contracts (detectron2 ``ShapeSpec`` / timm ``feature_info`` style).

The protocol behind every space of the toolkit, from the decoder spaces of "Fast Neural Architecture
Search of Compact Semantic Segmentation Models via Auxiliary Cells" (Nekrasov et al., CVPR 2019) to the
whole-network ones (Auto-DeepLab, IR-NAS). A space describes what may vary as a list of categorical
:class:`~densenas.arch.Decision` s, samples and mutates :class:`~densenas.arch.Arch` values, validates
them, and builds plain ``nn.Module`` s from them for the input shapes it is given (never hard-coded
channel counts).

The one shape contract: ``space.build(arch, in_shapes)`` where ``in_shapes`` is ``None`` or an ordered
``{level name: ShapeSpec}`` mapping, finest first -- exactly what
``densenas.backbones.build_backbone(cfg)`` returns next to the encoder. Spaces that decode on top of an
encoder read :meth:`SearchSpace.encoder_shapes` (``list(in_shapes.values())``, checked); whole-network
spaces accept ``None``. A bare list of shapes is refused (:func:`as_shapes`), so level names travel with
the shapes everywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch import nn

from .arch import Arch, Decision, InvalidArch


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (relative to the input image) of one feature map."""

    channels: int
    stride: int


def as_shapes(in_shapes: Mapping[str, ShapeSpec] | None, space: str = "space"
              ) -> dict[str, ShapeSpec] | None:
    """Check the ``in_shapes`` argument of ``build``: ``None`` or ``{level name: ShapeSpec}``.

    Args:
        in_shapes: the argument as given.
        space: the space's name, for the message.

    Returns:
        ``None``, or a plain ``dict`` copy in the given order.

    Raises:
        TypeError: a list/tuple of shapes (pass the dict ``build_backbone`` returns), any other
            non-mapping, or a mapping whose keys are not strings / values not :class:`ShapeSpec`.
    """
    if in_shapes is None:
        return None
    if isinstance(in_shapes, (list, tuple)):
        raise TypeError(f"space {space!r}: in_shapes must be a dict {{level name: ShapeSpec}} in forward "
                        f"order (the shapes densenas.backbones.build_backbone(cfg) returns), not a "
                        f"{type(in_shapes).__name__}; for bare shapes pass "
                        f"densenas.backbones.named_shapes(shapes)")
    if not isinstance(in_shapes, Mapping):
        raise TypeError(f"space {space!r}: in_shapes must be a dict {{level name: ShapeSpec}} or None, got "
                        f"{type(in_shapes).__name__}")
    for k, v in in_shapes.items():
        if not isinstance(k, str) or not isinstance(v, ShapeSpec):
            raise TypeError(f"space {space!r}: in_shapes[{k!r}] must map a level name (str) to a ShapeSpec, "
                            f"got {type(k).__name__} -> {type(v).__name__}")
    return dict(in_shapes)


def describe_shapes(shapes: Mapping[str, ShapeSpec]) -> str:
    """``c3(32ch, s8), c4(96ch, s16)``: a mapping of shapes for error messages."""
    return ", ".join(f"{k}({v.channels}ch, s{v.stride})" for k, v in shapes.items()) or "none"


#: the output kinds of the spaces shipped with densenas (``SearchSpace.output_kind``):
#: ``dense_map``: ``forward(*encoder levels)`` -> a map at a stride of the input (``(main, [aux maps])`` in
#: training), its channels the task's outputs (classes, 1 depth channel, one heatmap per keypoint);
#: ``segmenter``: a whole network image -> class map (its own backbone; Auto-DeepLab);
#: ``detector``: a neck (and head) that the space turns into an mmdet detector with the task's losses
#: (``mm_detector(arch, num_classes, *, losses, backbone, in_channels, ...)``);
#: ``restorer``: a whole network image -> image of the same size (IR-NAS).
OUTPUT_KINDS = ("dense_map", "segmenter", "detector", "restorer")


class SearchSpace:
    """Base class: a space of categorical decisions.

    Subclasses define :attr:`name`, :meth:`decisions` and :meth:`build`, and may tighten :meth:`check`
    (e.g. an input index that must refer to an earlier node). ``sample``/``mutate`` retry until
    :meth:`check` passes, so constrained spaces only override ``check``.
    """

    name: str = "space"
    max_tries: int = 1000
    #: what the built modules output, the contract with the tasks (docs/architecture.md, "Kinds"): a task
    #: that accepts this kind (``Task.accepts``) can search the space without naming it. One of
    #: :data:`OUTPUT_KINDS` (or a plugin's own kind, with a task plugin that accepts it).
    output_kind: str = ""

    def decisions(self) -> list[Decision]:
        raise NotImplementedError

    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> nn.Module:
        """Build the module of ``arch``.

        Args:
            arch: a valid arch of this space.
            in_shapes: ``{level name: ShapeSpec}`` of the encoder outputs, finest first (as returned by
                ``densenas.backbones.build_backbone``); ``None`` for spaces that take no encoder.

        Raises:
            InvalidArch: ``arch`` is not in this space (names the decision).
            TypeError: ``in_shapes`` is a list or another non-mapping (see :func:`as_shapes`).
            ValueError: the space needs encoder levels ``in_shapes`` does not give.
        """
        raise NotImplementedError

    def encoder_shapes(self, in_shapes: Mapping[str, ShapeSpec] | None, num_inputs: int | None = None
                       ) -> list[ShapeSpec]:
        """The encoder levels a decoder space builds on: ``list(in_shapes.values())``, checked.

        Args:
            in_shapes: the ``build`` argument.
            num_inputs: the number of levels the space decodes (``None``: any number >= 1).

        Returns:
            The shapes, finest first.

        Raises:
            TypeError: see :func:`as_shapes`.
            ValueError: ``in_shapes`` is ``None``, empty, or does not hold exactly ``num_inputs`` levels
                (the message names the levels given and the ones missing).
        """
        shapes = as_shapes(in_shapes, self.name)
        if shapes is None:
            raise ValueError(f"space {self.name!r} decodes encoder features: in_shapes is missing; pass the "
                             f"{{level name: ShapeSpec}} dict of densenas.backbones.build_backbone(cfg) "
                             f"(or backbone_shapes(cfg))")
        want = "at least 1" if num_inputs is None else str(num_inputs)
        if not shapes or num_inputs is not None and len(shapes) != num_inputs:
            what = "missing" if num_inputs is None or len(shapes) < num_inputs else "extra"
            n = 1 if num_inputs is None else abs(num_inputs - len(shapes))
            raise ValueError(f"space {self.name!r} decodes {want} encoder level(s) (num_inputs), in_shapes "
                             f"has {len(shapes)}: {describe_shapes(shapes)}; {n} level(s) {what} -- pick "
                             f"the levels with the backbone's out_indices or set the space's num_inputs")
        return list(shapes.values())

    # ------------------------------------------------------------------ checks
    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the field when ``arch`` is not in this space."""
        if not isinstance(arch, Arch):
            raise InvalidArch(f"expected an Arch, got {type(arch).__name__}")
        if arch.space != self.name:
            raise InvalidArch(f"arch is for space {arch.space!r}, not {self.name!r}")
        arch.indices(self.decisions())  # names and option values

    def check_values(self, arch: Arch) -> dict[str, Any]:
        """The start every ``check`` shares: ``arch`` is an :class:`Arch` of this space holding every
        decision. Returns its values by decision name; raises :class:`InvalidArch` otherwise."""
        if not isinstance(arch, Arch):
            raise InvalidArch(f"expected an Arch, got {type(arch).__name__}")
        if arch.space != self.name:
            raise InvalidArch(f"arch is for space {arch.space!r}, not {self.name!r}")
        values = arch.as_dict()
        for d in self.decisions():
            if d.name not in values:
                raise InvalidArch(f"arch misses decision {d.name!r}")
        return values

    @staticmethod
    def check_index(decision: Decision, value: Any, what: str) -> None:
        """Raise :class:`InvalidArch` unless ``value`` is one of the integer options of ``decision``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArch(f"{decision.name}={value!r} is not an integer index")
        if value not in decision.options:
            raise InvalidArch(f"{decision.name}={value} out of range 0..{len(decision) - 1} ({what})")

    def is_valid(self, arch: Arch) -> bool:
        try:
            self.check(arch)
            return True
        except InvalidArch:
            return False

    # --------------------------------------------------------------- sampling
    def from_indices(self, indices) -> Arch:
        return Arch.from_indices(self.name, self.decisions(), indices)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random valid architecture (rejection sampling over the decisions)."""
        decs = self.decisions()
        for _ in range(self.max_tries):
            arch = self.from_indices([rng.integers(len(d)) for d in decs])
            if self.is_valid(arch):
                return arch
        raise RuntimeError(f"space {self.name!r}: no valid arch after {self.max_tries} samples")

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one decision to another option (regularized-evolution style local move)."""
        decs = [d for d in self.decisions() if len(d) > 1]
        for _ in range(self.max_tries):
            d = decs[rng.integers(len(decs))]
            cur = d.index(arch[d.name])
            new = (cur + 1 + rng.integers(len(d) - 1)) % len(d)
            child = arch.replace(**{d.name: d.options[new]})
            if self.is_valid(child):
                return child
        raise RuntimeError(f"space {self.name!r}: no valid mutation of {arch}")

    def size(self) -> int:
        """Number of points in the unconstrained product space (an upper bound when ``check`` prunes)."""
        return int(np.prod([len(d) for d in self.decisions()], dtype=np.float64))


class TableSpace(SearchSpace):
    """A space given by explicit per-decision options whose valid points are listed in a table.

    Used for tabular benchmarks (TransNAS-Bench-101) and toy spaces in tests: ``check`` additionally
    requires the arch to be present in ``table`` when one is given.
    """

    def __init__(self, name: str, decisions: list[Decision], table: Mapping[str, float] | None = None):
        self.name = name
        self._decisions = list(decisions)
        self.table = table
        self._listed: tuple[Mapping[str, float] | None, list[Arch]] = (None, [])  # (table, its archs)

    def decisions(self) -> list[Decision]:
        return self._decisions

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform over the table's archs when there is a table (no rejection: a tabular benchmark's valid
        archs can be a small part of the product space), else over the product space."""
        if not self.table:
            return super().sample(rng)
        if self._listed[0] is not self.table:  # (re)list after a table swap
            decs = self.decisions()
            archs = []
            for key in sorted(self.table):
                values = json.loads(key)["choices"]
                archs.append(Arch(self.name, tuple((d.name, values[d.name]) for d in decs)))
            self._listed = (self.table, archs)
        archs = self._listed[1]
        return archs[int(rng.integers(len(archs)))]

    def check(self, arch: Arch) -> None:
        super().check(arch)
        if self.table is not None and arch.key not in self.table:
            raise InvalidArch(f"arch {arch} is not in the table of space {self.name!r}")

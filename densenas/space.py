"""Search-space protocol and shape contracts (detectron2 ``ShapeSpec`` / timm ``feature_info`` style).

A space describes what may vary as a list of categorical :class:`~densenas.arch.Decision` s, samples and
mutates :class:`~densenas.arch.Arch` values, validates them, and builds plain ``nn.Module`` s from them for
input feature shapes it is given (never hard-coded channel counts).
"""
from __future__ import annotations

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


class SearchSpace:
    """Base class: a space of categorical decisions.

    Subclasses define :attr:`name`, :meth:`decisions` and :meth:`build`, and may tighten :meth:`check`
    (e.g. an input index that must refer to an earlier node). ``sample``/``mutate`` retry until
    :meth:`check` passes, so constrained spaces only override ``check``.
    """

    name: str = "space"
    max_tries: int = 1000

    def decisions(self) -> list[Decision]:
        raise NotImplementedError

    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        raise NotImplementedError

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

    def decisions(self) -> list[Decision]:
        return self._decisions

    def check(self, arch: Arch) -> None:
        super().check(arch)
        if self.table is not None and arch.key not in self.table:
            raise InvalidArch(f"arch {arch} is not in the table of space {self.name!r}")

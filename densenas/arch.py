"""Architecture values: a frozen, JSON round-tripping record of one point in a search space.

Follows the DARTS ``Genotype`` / timm arch-string convention: an architecture is a plain value you can
print, paste into a config, diff and hash. It holds the search-space name and an ordered mapping from
decision name to the chosen option (a JSON scalar), in the order the space's controller emits them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ARCH_FORMAT_VERSION = 1
_SCALARS = (str, int, float, bool)


class InvalidArch(ValueError):
    """An architecture that does not belong to its search space (names the field and the reason)."""


@dataclass(frozen=True)
class Decision:
    """One categorical choice the strategy makes, e.g. ``Decision("cell0.op0", ("conv1x1", "skip"))``."""

    name: str
    options: tuple

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError(f"decision {self.name!r} has no options")
        object.__setattr__(self, "options", tuple(self.options))

    def __len__(self) -> int:
        return len(self.options)

    def index(self, value: Any) -> int:
        """Index of ``value`` among the options; raises :class:`InvalidArch` naming the decision.

        The JSON kind must match too (``True``, ``1.0`` and ``1`` are different values here, although
        Python compares them equal): otherwise ``1.0`` would pass as option ``1`` and then fail deep inside
        a build as a list index, and the same arch would have two keys in the history.
        """
        try:
            return self._positions[(_kind(value), value)]
        except (KeyError, TypeError):  # TypeError: an unhashable value (a list from a hand-edited JSON)
            raise InvalidArch(f"decision {self.name!r}: value {value!r} is not one of {list(self.options)}") from None

    @cached_property
    def _positions(self) -> dict[tuple[str, Any], int]:
        """``(JSON kind, option) -> index``, built once per decision: :meth:`index` is called for every
        decision of every arch a strategy encodes or checks."""
        out: dict[tuple[str, Any], int] = {}
        for i, option in enumerate(self.options):
            out.setdefault((_kind(option), option), i)  # the first of equal options, as a scan would find
        return out


def _kind(value: Any) -> str:
    """The JSON kind of a scalar: ``bool``, ``int``, ``float`` or the type's name."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


@dataclass(frozen=True)
class Arch:
    """One architecture: ``space`` name plus ordered ``(decision name, value)`` pairs."""

    space: str
    choices: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        choices = tuple((str(k), v) for k, v in (self.choices.items() if isinstance(
            self.choices, Mapping) else self.choices))
        names = [k for k, _ in choices]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InvalidArch(f"arch for space {self.space!r}: duplicate decisions {dup}")
        for k, v in choices:
            if not isinstance(v, _SCALARS) or isinstance(v, float) and not math.isfinite(v):
                raise InvalidArch(f"arch field {k!r}: value {v!r} is not a JSON scalar")
        object.__setattr__(self, "choices", choices)

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"arch for space {self.space!r} has no decision {name!r}") from None

    @cached_property
    def _values(self) -> dict[str, Any]:
        """The choices by name, built once per (immutable) arch for :meth:`__getitem__`."""
        return dict(self.choices)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        return dict(self.choices)

    def replace(self, **changes: Any) -> "Arch":
        """A copy with some decisions changed (names must already exist)."""
        d = self.as_dict()
        for k in changes:
            if k not in d:
                raise KeyError(f"arch for space {self.space!r} has no decision {k!r}")
        return Arch(self.space, tuple((k, changes.get(k, v)) for k, v in self.choices))

    @cached_property  # computed once per (immutable) arch: strategies compare keys in tight loops
    def key(self) -> str:
        """Canonical string, equal for equal archs (used to de-duplicate candidates in the history)."""
        return json.dumps({"space": self.space, "choices": self.as_dict()}, sort_keys=True,
                          separators=(",", ":"))

    # ------------------------------------------------------------ decisions
    @classmethod
    def from_indices(cls, space: str, decisions: Sequence[Decision], indices: Iterable[int]) -> "Arch":
        idx = list(indices)
        if len(idx) != len(decisions):
            raise InvalidArch(f"space {space!r}: {len(idx)} indices for {len(decisions)} decisions")
        return cls(space, tuple((d.name, d.options[int(i)]) for d, i in zip(decisions, idx)))

    def indices(self, decisions: Sequence[Decision]) -> list[int]:
        """Option index of every decision, in the given order; raises on a missing/unknown value."""
        d = self.as_dict()
        missing = [x.name for x in decisions if x.name not in d]
        if missing:
            raise InvalidArch(f"arch for space {self.space!r} misses decisions {missing}")
        extra = sorted(set(d) - {x.name for x in decisions})
        if extra:
            raise InvalidArch(f"arch for space {self.space!r} has unknown decisions {extra}")
        return [x.index(d[x.name]) for x in decisions]

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": ARCH_FORMAT_VERSION, "space": self.space, "choices": self.as_dict()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Arch":
        if not isinstance(data, Mapping):
            raise InvalidArch(f"{source}: an arch must be a JSON object, got {type(data).__name__}")
        if "space" not in data or not isinstance(data["space"], str):
            raise InvalidArch(f"{source}: field 'space' is missing or not a string")
        choices = data.get("choices")
        if not isinstance(choices, Mapping):
            raise InvalidArch(f"{source}: field 'choices' is missing or not an object")
        fmt = data.get("format", ARCH_FORMAT_VERSION)
        if fmt != ARCH_FORMAT_VERSION or _kind(fmt) != "int":
            raise InvalidArch(f"{source}: field 'format' is {fmt!r}, expected {ARCH_FORMAT_VERSION}")
        try:
            return cls(data["space"], tuple(choices.items()))
        except InvalidArch as e:
            raise InvalidArch(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> "Arch":
        if not isinstance(text, (str, bytes, bytearray)):  # e.g. NULL / a number read from a damaged file
            raise InvalidArch(f"{source}: an arch must be JSON text, got {type(text).__name__} {text!r:.60}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8 bytes, absurd nesting
            raise InvalidArch(f"{source}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "Arch":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"arch file not found: {path}")
        return cls.from_json(path.read_bytes(), source=str(path))  # bytes: bad UTF-8 is InvalidArch too

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    def __str__(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self.choices)
        return f"{self.space}({body})"


def as_arch(arch: "Arch | Mapping[str, Any] | str | Path") -> Arch:
    """An :class:`Arch` from an ``Arch``, its ``to_dict()`` mapping, or a path to its JSON file.

    Raises:
        InvalidArch: any other type (or a malformed mapping / file, from :meth:`Arch.from_dict`).
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, Mapping):
        return Arch.from_dict(arch)
    if isinstance(arch, (str, Path)):
        return Arch.load(arch)
    raise InvalidArch(f"arch must be an Arch, its to_dict() form or a JSON path, got {type(arch).__name__}")

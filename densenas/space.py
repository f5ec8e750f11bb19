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

The export contract (docs/architecture.md, "Exporting a found arch"): a space turns its archs into OpenMMLab
config fragments itself -- :meth:`SearchSpace.export_options` (what the module needs, read off the search's
``space`` section), :meth:`SearchSpace.mm_fragment` (the fragment a task asks for by its :data:`MM_HOSTS` name)
and :attr:`SearchSpace.mm_imports` -- and :func:`export_space_class` finds the space of an arch through the space
plugins, so a task exports by output kind and never by space name.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

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

#: what a task asks a space of each output kind for at export (the ``host`` of :meth:`SearchSpace.mm_fragment`):
#: ``dense_map``: ``"decode_head"`` (an mmseg decode head, segmentation), ``"depth_head"`` (an mmseg decode head
#: regressing ``max_depth * sigmoid``, depth), ``"heatmap_head"`` (an mmpose heatmap head, keypoints);
#: ``segmenter``: ``"segmenter"`` (the whole mmseg ``EncoderDecoder`` model dict);
#: ``detector``: ``"detector"`` (the mmdet model dict: the space's ``mm_detector``).
#: ``restorer`` spaces are exported by the restoration task itself (not yet by this contract).
MM_HOSTS: dict[str, tuple[str, ...]] = {
    "dense_map": ("decode_head", "depth_head", "heatmap_head"),
    "segmenter": ("segmenter",),
    "detector": ("detector",),
    "restorer": ("restorer_net",),
}


class ExportNotImplemented(NotImplementedError):
    """A space that implements search but not the export contract (:meth:`SearchSpace.export_options` /
    :meth:`SearchSpace.mm_fragment`); the message names the space and the missing method."""


def memoized_decisions(fn: Callable[[Any], Sequence[Decision]]) -> Callable[[Any], list[Decision]]:
    """Decorate ``decisions`` of a space whose decisions depend only on the settings it was built with: they
    are built once per instance and a fresh list is returned on every call. Strategies call ``decisions()``
    (through ``check`` / ``is_valid`` / ``sample``) in tight loops: about 9,000 times per surrogate
    proposal on the aux-cell space, most of the proposal's time before this."""
    @functools.wraps(fn)
    def decisions(self: Any) -> list[Decision]:
        memo = self.__dict__.get("_decisions_memo")
        if memo is None:
            memo = self.__dict__["_decisions_memo"] = tuple(fn(self))
        return list(memo)

    return decisions


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
    #: python modules an exported config of this space imports (its ``custom_imports``) besides the task's own
    #: registration module: where a plugin space registers its OpenMMLab adapter. The shipped spaces' adapters are
    #: registered by the tasks' ``mm`` modules, so they list none.
    mm_imports: tuple[str, ...] = ()

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

    # ------------------------------------------------------------------ export
    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """The export options the module of ``arch`` needs, read off the search's ``space`` section.

        A task fills these into the options of its exporter where the user left them unset and hands them back to
        :meth:`mm_fragment` (``options``); they are the space's own settings, e.g. ``width`` (aux-cell),
        ``widths`` (template), ``filter_multiplier`` (Auto-DeepLab), ``space`` (the section itself, for a space
        rebuilt from it). The key ``backbone``, when present, is the backbone the space's archs need when neither
        the search nor the user names one (template networks: the first MobileNetV2 levels).

        Args:
            arch: the found arch (a space whose archs carry a variant in their name, as NAS-FCOS's parts, reads it).
            space_cfg: the search config's ``space`` section (``type`` and settings); ``None`` or ``{}`` when the
                arch comes without its search config (the space's defaults apply).

        Returns:
            ``{option: value}``; ``{}`` when the module needs nothing beyond the arch.

        Raises:
            ExportNotImplemented: the space implements no export (this default), naming it.
        """
        raise ExportNotImplemented(_no_export(cls, "export_options"))

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The OpenMMLab config fragment of the found module of ``arch``: this space's OpenMMLab adapter.

        Checks ``arch`` against the space it describes first (:class:`InvalidArch` names the field), so an export
        fails here rather than when OpenMMLab builds the model. The fragment holds no loss of its own: the task
        passes its losses in ``task_keys``. Its types are registered by the task's ``mm`` module or by one of
        :attr:`mm_imports`.

        Args:
            arch: the found arch.
            host: what the task builds, one of ``MM_HOSTS[self.output_kind]``: ``decode_head`` / ``depth_head``
                / ``heatmap_head`` (``dense_map``: the head dict), ``segmenter`` (the whole mmseg model dict),
                ``detector`` (the mmdet model dict).
            options: the task's export options, holding at least the keys of :meth:`export_options` (the user's
                values where given, e.g. ``width``).
            in_shapes: ``{level name: ShapeSpec}`` of the backbone the fragment sits on (``dense_map``);
                ``None`` for whole networks.
            **task_keys: the task's keys of the fragment, in the fragment as given: ``decode_head`` /
                ``depth_head``: ``num_classes``, ``norm_cfg``, ``align_corners``, ``loss_decode`` (depth:
                ``max_depth`` too); ``heatmap_head``: ``out_channels``, ``heatmap_size``, ``loss``, ``decoder``
                (the codec); ``segmenter``: ``num_classes``, ``loss_decode``; ``detector``: ``num_classes``,
                ``losses``, ``backbone``, ``in_channels`` and the task's head options (``detector``,
                ``stacked_convs``, ``feat_channels``).

        Returns:
            The fragment as plain ``dict`` s, ready to dump into a config.

        Raises:
            ExportNotImplemented: the space implements no export (this default), naming it.
            ValueError: a ``host`` the space does not serve (names the ones it does), or options that do not fit.
            InvalidArch: ``arch`` is not in the space (names the field).
        """
        raise ExportNotImplemented(_no_export(cls, "mm_fragment"))

    @classmethod
    def from_section(cls, settings: Mapping[str, Any], arch: Arch) -> "SearchSpace":
        """The space of a search config's ``space`` settings (without ``type``) that is to hold ``arch``: what
        :func:`space_from_section` builds. The default is ``cls(**settings)``; a space whose settings can be read
        off its archs (IR-NAS: layer and block counts) fills the missing ones here."""
        return cls(**settings)

    @classmethod
    def check_host(cls, host: str) -> str:
        """``host`` when it is one of ``MM_HOSTS[cls.output_kind]``; else :class:`ValueError` naming the hosts of
        the space's kind (for :meth:`mm_fragment` implementations)."""
        hosts = MM_HOSTS.get(cls.output_kind, ())
        if host not in hosts:
            raise ValueError(f"space {cls.name!r} outputs {cls.output_kind or 'an undeclared kind'!r}: it exports "
                             f"as {list(hosts)}, not as {host!r}")
        return host

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


def _no_export(cls: type, method: str) -> str:
    return (f"space {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__}) does not implement "
            f"{method}(): its archs can be searched but not exported; define export_options() and mm_fragment() "
            f"on the space (densenas.space.SearchSpace, docs/architecture.md)")


def export_space_class(arch: Arch, space_cfg: Mapping[str, Any] | None = None, *,
                       accepts: Sequence[str] | None = None, task: str = "task") -> type[SearchSpace]:
    """The space class of a found ``arch``, through the space plugins (never by a table of names).

    The search's ``space.type`` names it when given; else the arch's space name does, or, when no plugin has that
    name, its part before ``_`` (a space whose archs carry a variant in their name: NAS-FCOS's ``nasfcos_fpn`` is
    an arch of ``nasfcos``).

    Args:
        arch: the found arch.
        space_cfg: the search's ``space`` section, if any.
        accepts: the output kinds the exporting task takes (``Task.accepts``); ``None``: any.
        task: the task's name, for the messages.

    Raises:
        ValueError: the arch is not of the search's ``space.type``, or the space outputs a kind the task does not
            export (names both); :class:`~densenas.plugins.PluginError` (a ``ValueError``): no such space plugin.
    """
    from .plugins import SPACES, available, load

    kind = dict(space_cfg or {}).get("type")
    if kind is not None and arch.space != kind and arch.space.split("_")[0] != kind:
        raise ValueError(f"space.type={kind!r} but the arch is of space {arch.space!r}")
    if kind is None:
        kind = arch.space if arch.space in available(SPACES) or "_" not in arch.space else arch.space.split("_")[0]
    cls = load(SPACES, kind, "the arch's space")
    out = getattr(cls, "output_kind", "")
    if accepts is not None and out not in accepts:
        raise ValueError(f"arch space {arch.space!r} outputs {out or 'an undeclared kind'!r}: the {task} task exports "
                         f"{list(accepts)}")
    return cls


def space_from_section(section: Mapping[str, Any], arch: Arch, num_classes: int | None = None, *,
                       accepts: Sequence[str] | None = None, task: str = "task", **defaults: Any) -> SearchSpace:
    """The space of a search's ``space`` section (``type`` + settings), for ``num_classes`` outputs, checked
    against ``arch``: how a generic OpenMMLab head (or a task's network builder) rebuilds the module of any
    space from its config (:meth:`SearchSpace.from_section`).

    Args:
        section: ``dict(type=<space plugin>, **settings)``.
        arch: the arch the space must hold.
        num_classes: the space's ``num_classes``; ``None`` for a space without classes (a restorer).
        accepts: the output kinds the caller builds (``None``: any); another kind is refused, naming both and
            ``task`` (the caller's task name).
        **defaults: settings used when the section has none and the space takes them (e.g. ``aux=True``).

    Raises:
        ValueError: the section's type is not the arch's space; InvalidArch: the arch is not in the space.
    """
    import inspect

    settings = dict(section)
    cls = export_space_class(arch, {"type": settings.pop("type", None)}, accepts=accepts, task=task)
    params = inspect.signature(cls).parameters
    for k, v in defaults.items():
        if k in params:
            settings.setdefault(k, v)
    if num_classes is not None:
        settings["num_classes"] = num_classes
    built = cls.from_section(settings, arch)
    built.check(arch)
    return built


#: weight of the auxiliary heads in an exported ``dense_map`` head when the search's evaluator does not say
#: (Nekrasov et al.'s 0.4, :class:`~densenas.evaluation.proxy_cfg.ProxyCfg`'s default)
EXPORT_AUX_WEIGHT = 0.4


def aux_head_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``aux`` and ``aux_weight`` of an exported head with auxiliary heads, from the export ``options``
    (``aux_weight``: the search's ``evaluator.aux_weight``, else :data:`EXPORT_AUX_WEIGHT`; none at 0).

    Raises:
        ValueError: a negative ``aux_weight``.
    """
    given = options.get("aux_weight")
    weight = EXPORT_AUX_WEIGHT if given is None else float(given)
    if weight < 0:
        raise ValueError(f"aux_weight must be >= 0 (0: no auxiliary heads), got {weight}")
    return dict(aux=weight > 0, aux_weight=weight)


def dense_map_forward(module: nn.Module, feats: list[Any], with_aux: bool) -> tuple[Any, list[Any]]:
    """``(main map, [auxiliary maps])`` of a built ``dense_map`` module on the encoder levels ``feats``.

    Uses the module's ``forward_with_aux(feats, with_aux=...)`` when it has one (the shipped decoders); else its
    ``forward``, which returns the map, or ``(map, [aux maps])`` in training (the kind's contract).
    """
    if hasattr(module, "forward_with_aux"):
        return module.forward_with_aux(feats, with_aux=with_aux and bool(getattr(module, "has_aux", True)))
    out = module(feats)
    main, aux = (out[0], list(out[1])) if isinstance(out, (tuple, list)) else (out, [])
    return main, aux if with_aux else []


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

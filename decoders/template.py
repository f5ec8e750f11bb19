"""Template-based search space for compact segmentation networks.

After Nekrasov, Shen, Reid, "Template-Based Automatic Search of Compact Semantic Segmentation
Architectures" (WACV 2020, arXiv 1904.02365). Instead of one decoder cell on a large pretrained encoder, the
network is built on only the first layers of a pretrained backbone (MobileNetV2 ``features[0..6]``: about
25K parameters, outputs at strides 4 and 8) and the search factorises into

* ``num_templates`` shared *templates* (small cells, as data): per block ``b``,
  ``tmpl{t}.b{b}.in0/in1`` (``0`` is the template input, ``1 + j`` the output of block ``j < b``),
  ``tmpl{t}.b{b}.op0/op1`` (names of :data:`OPS`) and ``tmpl{t}.b{b}.merge`` (``sum`` or ``concat`` +
  conv1x1); the template's output is the sum of the blocks no later block reads;
* where each is used: per layer ``l``, ``layer{l}.template`` (which template), ``layer{l}.repeat`` (how many
  times it is applied in a row, without weight sharing) and ``layer{l}.stride`` (1 or 2: the stride of
  the ops that read the layer input in its first repeat).

Built network (:class:`TemplateDecoder`): the stride-8 encoder level enters layer 0; every layer first
projects its input to its width (``widths[l]``, conv1x1-BN-ReLU when the channels differ), then applies
its template ``repeat`` times. The last layer's output is resized to the stride-4 level, summed with that
level projected to the last width, refined by a separable 3x3 conv and classified by a conv1x1. For
training, every layer but the last feeds an *auxiliary head* (conv1x1 classifier; "auxiliary
over-parameterisation helps compact models to converge faster"), left out of the deployed model.

Named variants. The *paper* variant (the default: ``context_ops=None``, ``fuse_ops=None``) has exactly the
decisions above and cannot express the DeepLab heads the segmentation searches are compared with (its ops
are single convolutions, with no parallel dilated branches and image pooling, and its final stage is fixed).
The *extended* variant (:data:`EXTENDED`: ``context_ops=tuple(CONTEXTS)``, ``fuse_ops=FUSES``;
``configs/search/template_ext_proxy.py``) adds, after the paper's decisions,

* ``head.context``: a context module on the last layer's output, one of :data:`CONTEXTS` (``none``,
  DeepLabV3's ``aspp``, DeepLabV3+'s ``sep_aspp``; ``widths[-1]`` channels in and out);
* ``head.fuse``: the final stage, one of :data:`FUSES`: ``sum_sep`` (the paper's: sum with the projected
  stride-4 level, one separable conv), ``concat_sep_x2`` (DeepLabV3+, Chen et al., ECCV 2018: concatenation
  with the stride-4 level reduced by conv1x1 to ``max(widths[-1] // 4, 8)`` channels, two 3x3 separable
  convs) or ``none`` (classify the last layer / context output, at its own stride, like mmseg's ASPPHead).

:meth:`TemplateSpace.baseline_archs` gives the extended variant's points that express the two baselines.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision, InvalidArch
from densenas.ops import ASPP_OPS, ConvBNReLU, DeepLabV3PlusRefine, SepConv, check_ops
from densenas.space import SearchSpace, ShapeSpec, aux_head_options, as_shapes, space_from_section, memoized_decisions

from .auxcell import BlockSpec  # the aux-cell space's block: merge(op0(state[in0]), op1(state[in1]))

MERGES = ("sum", "concat")
REPEATS = (1, 2, 3)
STRIDES = (1, 2)
WIDTHS = (32, 48, 64, 64)  # default channels of the layers (4 layers)


def _sep(k: int, d: int = 1):
    def make(c: int, s: int) -> nn.Module:  # strided depthwise conv, then pointwise conv
        pad = d * (k - 1) // 2
        return nn.Sequential(nn.Conv2d(c, c, k, s, pad, dilation=d, groups=c, bias=False), nn.BatchNorm2d(c),
                             ConvBNReLU(c, c, 1))
    return make


#: the space's operation table, ``(channels, stride) -> module``: the compact ops of the paper (strided
#: versions of the core table's, which are stride 1 only); ``skip`` at stride 2 is a 3x3 average pool
OPS = {
    "conv1x1": lambda c, s: nn.Sequential(nn.Conv2d(c, c, 1, s, bias=False), nn.BatchNorm2d(c), nn.ReLU()),
    "conv3x3": lambda c, s: nn.Sequential(nn.Conv2d(c, c, 3, s, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()),
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "sep_conv_3x3_dil2": _sep(3, 2),
    "sep_conv_3x3_dil4": _sep(3, 4),
    "skip": lambda c, s: nn.Identity() if s == 1 else nn.AvgPool2d(3, 2, 1),
}

CONTEXTS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda c_in, c_out: nn.Identity(),  # the paper's: the last layer's output as it is
    **ASPP_OPS,  # "aspp" (DeepLabV3), "sep_aspp" (DeepLabV3+, Chen et al., ECCV 2018)
}
"""Context modules after the last layer (``head.context``, extended variant), ``(c, c) -> module``."""

FUSES: tuple[str, ...] = ("sum_sep", "concat_sep_x2", "none")
"""Final stages (``head.fuse``, extended variant); ``sum_sep`` is the paper's (see the module docstring)."""

EXTENDED: dict[str, tuple[str, ...]] = {"context_ops": tuple(CONTEXTS), "fuse_ops": FUSES}
"""Keyword arguments of :class:`TemplateSpace` for the extended variant, which can express the ASPP and
DeepLabV3+ heads; the paper's variant is the default (no such arguments)."""


class Template(nn.Module):
    """One application of a template (own weights) at ``width`` channels; ops reading the input use
    ``stride``. State 0 of each :class:`BlockSpec` is the template input."""

    def __init__(self, blocks: Sequence[BlockSpec], width: int, stride: int = 1):
        super().__init__()
        self.specs = list(blocks)
        self.ops = nn.ModuleList(nn.ModuleList(OPS[op](width, stride if i == 0 else 1)
                                               for i, op in ((b.in0, b.op0), (b.in1, b.op1)))
                                 for b in self.specs)
        self.fuse = nn.ModuleList(ConvBNReLU(2 * width, width, 1) if b.merge == "concat" else nn.Identity()
                                  for b in self.specs)
        used = {i for b in self.specs for i in (b.in0, b.in1)}
        self.out_states = [1 + j for j in range(len(self.specs)) if 1 + j not in used]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for spec, (op0, op1), fuse in zip(self.specs, self.ops, self.fuse):
            a, b = op0(states[spec.in0]), op1(states[spec.in1])
            states.append(a + b if spec.merge == "sum" else fuse(torch.cat([a, b], 1)))
        return sum(states[i] for i in self.out_states)


class TemplateDecoder(nn.Module):
    """The network of one arch of :class:`TemplateSpace` (forward contract of the aux-cell decoder:
    logits in eval mode, ``(logits, aux_logits)`` in training mode, ``forward_with_aux`` always both).

    ``context`` (a key of :data:`CONTEXTS`) and ``fuse`` (one of :data:`FUSES`) are the extended variant's
    head; their defaults build the paper's network.
    """

    def __init__(self, layers: Sequence[tuple[list[BlockSpec], int, int]], in_shapes: Sequence[ShapeSpec],
                 widths: Sequence[int], num_classes: int, aux: bool = True, arch: Arch | None = None,
                 context: str = "none", fuse: str = "sum_sep"):
        super().__init__()
        if fuse not in FUSES:
            raise ValueError(f"fuse={fuse!r} is not one of {list(FUSES)}")
        self.arch = arch
        fine, coarse = in_shapes
        self.layers = nn.ModuleList()
        c_in, stride = coarse.channels, coarse.stride
        for (blocks, repeat, s), w in zip(layers, widths):
            proj = ConvBNReLU(c_in, w, 1) if c_in != w else nn.Identity()
            self.layers.append(nn.Sequential(proj, *(Template(blocks, w, s if r == 0 else 1) for r in range(repeat))))
            c_in, stride = w, stride * s
        self.context = None if context == "none" else CONTEXTS[context](c_in, c_in)
        self.fuse_mode = fuse
        if fuse == "sum_sep":  # the paper's final stage
            self.skip = ConvBNReLU(fine.channels, c_in, 1)
            self.refine = SepConv(c_in, 3)
        elif fuse == "concat_sep_x2":  # DeepLabV3+ decoder (Chen et al., ECCV 2018); c1: the exporter's rule
            c1 = max(c_in // 4, 8)
            self.skip = ConvBNReLU(fine.channels, c1, 1)
            self.refine = DeepLabV3PlusRefine(c_in + c1, c_in)
        else:  # "none": no stride-4 path, logits at the last layer's stride
            self.skip = self.refine = None
        self.classifier = nn.Conv2d(c_in, num_classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(w, num_classes, 1) for w in widths[:-1]) if aux \
            else nn.ModuleList()
        self.output_stride = fine.stride if fuse != "none" else stride

    @property
    def has_aux(self) -> bool:
        return len(self.aux_heads) > 0

    def forward_with_aux(self, feats: Sequence[torch.Tensor], with_aux: bool = True
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if len(feats) != 2:
            raise ValueError(f"the template network takes 2 encoder levels (strides 4 and 8), got {len(feats)}")
        fine, x = feats
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        if self.context is not None:
            x = self.context(x)
        if self.fuse_mode == "sum_sep":
            x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False) + self.skip(fine)
            x = self.refine(x)
        elif self.fuse_mode == "concat_sep_x2":
            x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            x = self.refine(torch.cat([x, self.skip(fine)], dim=1))
        logits = self.classifier(x)
        aux = [head(o) for head, o in zip(self.aux_heads, outs)] if with_aux else []
        return logits, aux

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if self.training and self.has_aux:
            return self.forward_with_aux(feats)
        return self.forward_with_aux(feats, with_aux=False)[0]


class TemplateSpace(SearchSpace):
    """The template space (decision names and semantics in the module docstring).

    Args:
        num_classes: output channels.
        num_templates: shared templates ``T``.
        blocks: blocks per template.
        widths: channels of every layer (their number is the number of layers).
        ops: candidate operations (keys of :data:`OPS`; default all).
        aux: build the training-only auxiliary heads.
        context_ops: candidate context modules after the last layer (keys of :data:`CONTEXTS`), decision
            ``head.context``; ``None`` (the paper's variant): none, no decision.
        fuse_ops: candidate final stages (of :data:`FUSES`), decision ``head.fuse``; ``None`` (the paper's
            variant): ``sum_sep``, no decision.
    """

    name = "template"
    output_kind = "dense_map"
    #: the network's OpenMMLab heads by export host (``SearchSpace.mm_fragment``): mmseg's ``TemplateHead``
    #: (:mod:`densenas.decoders.mmseg_adapters`), its depth regressor, and the mmpose heatmap head that rebuilds
    #: the space from its ``space`` section; registered by the segmentation, depth and keypoint tasks' ``mm``
    mm_heads = {"decode_head": "TemplateHead", "depth_head": "DepthTemplateHead", "heatmap_head": "AuxCellHeatmapHead"}

    def __init__(self, num_classes: int, num_templates: int = 2, blocks: int = 2,
                 widths: Sequence[int] = WIDTHS, ops: Sequence[str] | None = None, aux: bool = True,
                 context_ops: Sequence[str] | None = None, fuse_ops: Sequence[str] | None = None):
        for k, v in dict(num_classes=num_classes, num_templates=num_templates, blocks=blocks).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"widths must be positive integers, one per layer, got {widths!r}")
        ops = tuple(OPS) if ops is None else tuple(ops)
        unknown = [o for o in ops if o not in OPS]
        if unknown or not ops:
            raise ValueError(f"ops {unknown or ops} are not in the template table {list(OPS)}")
        self.num_classes, self.num_templates, self.blocks = num_classes, num_templates, blocks
        self.widths, self.ops, self.aux = tuple(widths), ops, bool(aux)
        self.context_ops = None if context_ops is None else check_ops(context_ops, CONTEXTS, "context_ops")
        if fuse_ops is not None:
            fuse_ops = tuple(fuse_ops)
            if not fuse_ops or len(set(fuse_ops)) != len(fuse_ops) or any(f not in FUSES for f in fuse_ops):
                raise ValueError(f"fuse_ops must be distinct final stages of {list(FUSES)}, got {list(fuse_ops)}")
        self.fuse_ops = fuse_ops

    @memoized_decisions
    def decisions(self) -> list[Decision]:
        decs = []
        for t in range(self.num_templates):
            for b in range(self.blocks):
                p, states = f"tmpl{t}.b{b}", tuple(range(1 + b))
                decs += [Decision(f"{p}.in0", states), Decision(f"{p}.in1", states), Decision(f"{p}.op0", self.ops),
                         Decision(f"{p}.op1", self.ops), Decision(f"{p}.merge", MERGES)]
        for n in range(len(self.widths)):
            decs += [Decision(f"layer{n}.template", tuple(range(self.num_templates))),
                     Decision(f"layer{n}.repeat", REPEATS), Decision(f"layer{n}.stride", STRIDES)]
        if self.context_ops is not None:  # extended variant: after the paper's decisions
            decs.append(Decision("head.context", self.context_ops))
        if self.fuse_ops is not None:
            decs.append(Decision("head.fuse", self.fuse_ops))
        return decs

    def check(self, arch: Arch) -> None:
        """Raise :class:`InvalidArch` naming the first bad field."""
        values = self.check_values(arch)
        for d in self.decisions():
            v = values[d.name]
            if d.name.endswith((".in0", ".in1", ".template")):
                self.check_index(d, v, "template input / earlier blocks" if ".b" in d.name else "templates")
            elif v not in d.options or isinstance(v, bool):
                raise InvalidArch(f"{d.name}={v!r} is not one of {list(d.options)}")
        super().check(arch)

    def layers(self, arch: Arch) -> list[tuple[list[BlockSpec], int, int]]:
        """Per layer: (its template's blocks, repeat, stride)."""
        tmpl = [[BlockSpec(*(arch[f"tmpl{t}.b{b}.{f}"] for f in BlockSpec._fields)) for b in range(self.blocks)]
                for t in range(self.num_templates)]
        return [(tmpl[arch[f"layer{n}.template"]], arch[f"layer{n}.repeat"], arch[f"layer{n}.stride"])
                for n in range(len(self.widths))]

    def head(self, arch: Arch) -> tuple[str, str]:
        """``(context, fuse)`` of ``arch``: ``("none", "sum_sep")`` (the paper's) where not a decision."""
        return (arch["head.context"] if self.context_ops is not None else "none",
                arch["head.fuse"] if self.fuse_ops is not None else "sum_sep")

    def default_arch(self) -> Arch:
        """Separable-conv templates, one repeat per layer, stride 1 (a plain compact baseline); in the
        extended variant the paper's head (no context, ``sum_sep``) where offered."""
        def pick(options: Sequence[str], want: str) -> str:
            return want if want in options else options[0]

        choices = {}
        for d in self.decisions():
            f = d.name.rsplit(".", 1)[1]
            if d.name.startswith("head."):
                choices[d.name] = pick(d.options, {"context": "none", "fuse": "sum_sep"}[f])
                continue
            choices[d.name] = {"in0": 0, "in1": 0, "op0": "sep_conv_3x3" if "sep_conv_3x3" in self.ops else
                               self.ops[0], "op1": "skip" if "skip" in self.ops else self.ops[0], "merge": "sum",
                               "template": 0, "repeat": 1, "stride": 1}[f]
        arch = Arch(self.name, tuple((d.name, choices[d.name]) for d in self.decisions()))
        self.check(arch)
        return arch

    def baseline_archs(self) -> dict[str, Arch]:
        """The DeepLab heads this space can express, on a trunk of its own decisions.

        The trunk is :meth:`default_arch`'s (separable-conv template, one repeat per layer) with stride 2 in
        layers ``0`` and ``L // 2`` (one layer when ``L == 1``), so with two or more layers the last one is at
        stride 32, where mmseg's heads read MobileNetV2 in the exported baselines (``--baseline aspp`` /
        ``deeplabv3plus``). On it:

        * ``"aspp"``: ``head.context='aspp'`` (DeepLabV3's ASPP on the last layer: rates 1/6/12/18, image
          pooling, concatenation, 3x3 projection), ``head.fuse='none'`` (classified at stride 32): mmseg's
          ``ASPPHead``. Needs ``"aspp"`` in ``context_ops`` and ``"none"`` in ``fuse_ops``.
        * ``"deeplabv3plus"``: ``head.context='sep_aspp'``, ``head.fuse='concat_sep_x2'``: mmseg's
          ``DepthwiseSeparableASPPHead`` (DeepLabV3+, Chen et al., ECCV 2018): separable ASPP, upsampling
          to stride 4, concatenation with the conv1x1-reduced stride-4 level, two 3x3 separable convs. Needs
          ``"sep_aspp"`` in ``context_ops`` and ``"concat_sep_x2"`` in ``fuse_ops``.

        How close: the head (context, final stage and classifier) against the mmseg head on the last layer
        with the same channels (``in_channels=channels=widths[-1]``, ``c1_in_channels`` the stride-4 level's,
        ``c1_channels=max(widths[-1] // 4, 8)``), 6 classes (``tests/test_space_baselines.py``): ``aspp``
        0.9998 and ``deeplabv3plus`` 0.9997 at ``widths[-1]`` 64 or 96; the one difference is the image
        pooling branch (conv1x1 with bias, no BN). The trunk is the template network's own, not MobileNetV2's
        stride-8-to-32 layers. At ``widths[-1] = 96`` (``configs/search/template_proxy.py``) both points are
        over that search's 500K parameter limit (the ASPP head alone has 684K parameters, the DeepLabV3+
        network 540K without the encoder: the 3x3 projection over five branches has ``45 * 96**2``
        weights); ``configs/search/template_ext_proxy.py`` ends at 64 channels, where both fit.

        Returns:
            ``{name: arch}`` of the baselines this configuration can express, each valid under
            :meth:`check`; empty for the paper's variant.
        """
        context, fuse = self.context_ops or (), self.fuse_ops or ()
        wanted = {"aspp": ("aspp", "none"), "deeplabv3plus": ("sep_aspp", "concat_sep_x2")}
        wanted = {k: v for k, v in wanted.items() if v[0] in context and v[1] in fuse}
        if not wanted:
            return {}
        n_layers = len(self.widths)
        trunk = self.default_arch().replace(**{f"layer{n}.stride": 2 for n in {0, n_layers // 2}})
        out = {}
        for name, (ctx, fus) in wanted.items():
            arch = trunk.replace(**{"head.context": ctx, "head.fuse": fus})
            self.check(arch)
            out[name] = arch
        return out

    @classmethod
    def export_options(cls, arch: Arch, space_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``widths`` as searched (default :data:`WIDTHS`), ``width`` (the last of them), ``space`` (the search's
        section, if any) and ``backbone``: the first MobileNetV2 levels (strides 4 and 8) when the search names
        none."""
        sp = dict(space_cfg or {})
        widths = list(sp.get("widths", WIDTHS))
        return {"widths": widths, "width": widths[-1], "space": dict(sp) if sp else None,
                "backbone": {"type": "mobilenet_v2", "out_indices": (3, 6)}}

    @classmethod
    def mm_fragment(cls, arch: Arch, host: str, *, options: Mapping[str, Any],
                    in_shapes: Mapping[str, ShapeSpec] | None = None, **task_keys: Any) -> dict[str, Any]:
        """The network of ``arch`` as the head of :attr:`mm_heads` for ``host`` on the two levels of ``in_shapes``
        with ``options["widths"]``, auxiliary heads weighted ``options["aux_weight"]`` (the search's
        ``evaluator.aux_weight``, else 0.4; none at 0), then ``task_keys``. The heatmap head rebuilds the space
        from ``options["space"]`` (the search's section), else from a section read off the arch."""
        cls.check_host(host)
        shapes = list((as_shapes(in_shapes, cls.name) or {}).values())
        widths = options.get("widths")
        if widths is None or len(shapes) != 2:  # fail here, naming the field, not in OpenMMLab
            raise ValueError("a template arch needs the searched widths and a backbone with the two levels "
                             "(out_indices=(3, 6)) it was searched on")
        out = task_keys["out_channels" if host == "heatmap_head" else "num_classes"]
        inferred = space_for_arch(arch, out, widths)
        channels = [s.channels for s in shapes]
        if host != "heatmap_head":
            inferred.check(arch)
            return dict(type=cls.mm_heads[host], arch=arch.to_dict(), in_channels=channels, in_index=[0, 1],
                        widths=list(widths), **aux_head_options(options), **task_keys)
        section = options.get("space")
        if section:
            space_from_section(section, arch, out, aux=True)  # the searched space holds it
        else:
            inferred.check(arch)
            section = dict(type=cls.name, num_templates=inferred.num_templates, blocks=inferred.blocks,
                           widths=list(widths))
            if inferred.context_ops is not None:
                section["context_ops"] = list(inferred.context_ops)
            if inferred.fuse_ops is not None:
                section["fuse_ops"] = list(inferred.fuse_ops)
        return dict(type=cls.mm_heads[host], arch=arch.to_dict(), space=dict(section), in_channels=channels,
                    in_strides=[s.stride for s in shapes], **aux_head_options(options), **task_keys)

    def build(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> TemplateDecoder:
        """The network for ``arch`` on the two encoder levels (strides 4 and 8) of ``in_shapes``."""
        self.check(arch)
        shapes = self.encoder_shapes(in_shapes, 2)
        context, fuse = self.head(arch)
        return TemplateDecoder(self.layers(arch), shapes, self.widths, self.num_classes, aux=self.aux, arch=arch,
                               context=context, fuse=fuse)

    def describe(self, arch: Arch, in_shapes: Mapping[str, ShapeSpec] | None = None) -> str:
        self.check(arch)
        lines = [f"template network: {len(self.widths)} layers, widths {list(self.widths)}, "
                 f"{self.num_templates} templates x {self.blocks} blocks"]
        for n, (_, repeat, stride) in enumerate(self.layers(arch)):
            lines.append(f"  layer{n}: template {arch[f'layer{n}.template']} x{repeat}, stride {stride}")
        for t in range(self.num_templates):
            for b in range(self.blocks):
                s = BlockSpec(*(arch[f"tmpl{t}.b{b}.{f}"] for f in BlockSpec._fields))
                ins = ["x" if i == 0 else f"b{i - 1}" for i in (s.in0, s.in1)]
                lines.append(f"  tmpl{t}.b{b} = {s.merge}({s.op0}({ins[0]}), {s.op1}({ins[1]}))")
        if self.context_ops is not None or self.fuse_ops is not None:
            context, fuse = self.head(arch)
            lines.append(f"  head: context {context}, final stage {fuse}")
        return "\n".join(lines)


def space_for_arch(arch: Arch, num_classes: int, widths: Sequence[int], ops: Sequence[str] | None = None,
                   aux: bool = True) -> TemplateSpace:
    """The template space an exported ``arch`` belongs to (template and block counts read off its names; an
    arch with ``head.context`` / ``head.fuse`` decisions gets the extended variant with all their options)."""
    names = [k for k, _ in arch.choices]
    if arch.space != TemplateSpace.name:
        raise InvalidArch(f"arch is for space {arch.space!r}, not 'template'")
    return TemplateSpace(num_classes, num_templates=sum(n.endswith(".b0.in0") for n in names),
                         blocks=sum(n.startswith("tmpl0.") and n.endswith(".in0") for n in names),
                         widths=widths, ops=ops, aux=aux,
                         context_ops=tuple(CONTEXTS) if "head.context" in names else None,
                         fuse_ops=FUSES if "head.fuse" in names else None)

"""Contract tests of every registered search space and backbone (issue 11, "one shape contract").

Spaces are the plugins of the ``densenas.spaces`` entry-point group: the decoder spaces of Nekrasov et
al. ("Fast Neural Architecture Search of Compact Semantic Segmentation Models via Auxiliary Cells", CVPR
2019), NAS-FCOS and NAS-FPN on top of an encoder, and the whole-network spaces Auto-DeepLab and IR-NAS.
For each one: sample, mutate, check, JSON round trip, ``build(arch, in_shapes)`` on tiny shapes with a
forward pass, a clear :class:`InvalidArch` for an out-of-range value, and refusal of a list of shapes.
Then every encoder-based space is built on the real shapes of every backbone of
:data:`densenas.backbones.BACKBONES` and run encoder -> decoder at 64 px. Tiny widths, CPU only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.backbones import BACKBONES, build_backbone
from densenas.plugins import SPACES, available, load
from densenas.space import SearchSpace, ShapeSpec

TINY = {"c2": ShapeSpec(8, 4), "c3": ShapeSpec(16, 8), "c4": ShapeSpec(24, 16), "c5": ShapeSpec(32, 32)}
"""Encoder levels of the tiny builds (finest first, as ``build_backbone`` names them)."""
IMAGE = {"image": ShapeSpec(3, 1)}
SIDE = 64
NUM_CLASSES = 3


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _check_auxcell(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    s = net.output_stride
    assert out.shape == (batch, NUM_CLASSES, SIDE // s, SIDE // s) and _finite(out)


def _check_nasfcos(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    cls, box, ctr = out
    assert len(cls) == len(box) == len(ctr) == space.num_outs
    assert [c.shape[:2] for c in cls] == [(batch, NUM_CLASSES)] * space.num_outs
    assert cls[0].shape[-2:] == (SIDE // net.strides[0],) * 2
    assert [tuple(b.shape[:2]) for b in box] == [(batch, 4)] * space.num_outs
    assert _finite(*cls, *box, *ctr)


def _check_nasfpn(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    assert [tuple(o.shape) for o in out] == [(batch, space.out_channels, -(-SIDE // s), -(-SIDE // s))
                                            for s in net.strides]
    assert _finite(*out)


def _check_irnas(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    assert out.shape == (batch, 3, SIDE // 4, SIDE // 4) and _finite(out)


def _check_template(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    assert out.shape == (batch, NUM_CLASSES, SIDE // 4, SIDE // 4) and _finite(out)


def _check_autodeeplab(space: SearchSpace, net: Any, out: Any, batch: int) -> None:
    assert out.shape == (batch, NUM_CLASSES, SIDE // 2, SIDE // 2) and _finite(out)


@dataclass(frozen=True)
class Case:
    """How the contract tests exercise one registered space.

    Attributes:
        kwargs: small constructor arguments.
        levels: names of the :data:`TINY` levels the space decodes; ``None``: a whole network that
            takes the image (``build(arch)`` / ``build(arch, IMAGE)``).
        check_output: asserts on ``(space, built module, forward output, batch size)``.
        image_side: input side of a whole network's forward.
        min_stride: on a real backbone, decode the levels of at least this stride (detection: C3..C5).
        max_stride: ... and at most this stride (the template network: strides 4 and 8).
        mutate_changes: how many decisions one ``mutate`` may change.
    """

    kwargs: dict[str, Any]
    levels: tuple[str, ...] | None
    check_output: Callable[[SearchSpace, Any, Any, int], None]
    image_side: int = SIDE
    min_stride: int = 1
    max_stride: int = 1 << 20
    mutate_changes: frozenset[int] = field(default_factory=lambda: frozenset({1}))


CHEAP = ("conv1x1", "sep_conv_3x3", "skip")
CASES: dict[str, Case] = {
    "auxcell": Case(dict(num_classes=NUM_CLASSES, width=8, num_cells=2, blocks_per_cell=2,
                         ops=CHEAP + ("gap",)), ("c2", "c3", "c4", "c5"), _check_auxcell),
    "nasfcos": Case(dict(num_classes=NUM_CLASSES, part="joint", width=8, num_cells=4, num_head_layers=2,
                         fpn_ops=CHEAP, head_ops=("gn_conv1x1", "gn_conv3x3", "skip")),
                    ("c3", "c4", "c5"), _check_nasfcos, min_stride=8),
    # An output cell's level is mutated by swapping it with another output cell's (the last cells must
    # output every level once), which changes two decisions.
    "nasfpn": Case(dict(num_cells=5, out_channels=8, levels=(3, 4, 5, 6)), ("c3", "c4", "c5"),
                   _check_nasfpn, min_stride=8, mutate_changes=frozenset({1, 2})),
    "irnas": Case(dict(width=4, layers=2, blocks=2, ops=("conv3x3", "sep_conv_3x3", "skip", "none"),
                       aspp=False), None, _check_irnas, image_side=SIDE // 4),
    "template": Case(dict(num_classes=NUM_CLASSES, num_templates=2, blocks=2, widths=(8, 8, 12),
                          ops=("conv1x1", "sep_conv_3x3", "skip")), ("c2", "c3"), _check_template, min_stride=4, max_stride=8),
    "autodeeplab": Case(dict(num_classes=NUM_CLASSES, layers=2, blocks=2, filter_multiplier=2,
                             aspp_channels=4), None, _check_autodeeplab, image_side=SIDE // 2),
}

BACKBONE_CFGS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": dict(type="mobilenet_v2", pretrained=False),
    "efficientnet_lite0": dict(type="efficientnet_lite0", pretrained=False),
    "timm": dict(type="timm", model_name="resnet18", pretrained=False),
}

SPACE_NAMES = available(SPACES)
ENCODER_SPACES = [n for n in SPACE_NAMES if n in CASES and CASES[n].levels is not None]


def _case(name: str) -> Case:
    if name not in CASES:
        pytest.fail(f"space {name!r} is registered in the {SPACES!r} entry points but has no entry in "
                    f"CASES of tests/test_space_contract.py; add its small constructor kwargs there")
    return CASES[name]


def _space(name: str, **override: Any) -> SearchSpace:
    return load(SPACES, name, "space.type")(**{**_case(name).kwargs, **override})


def _shapes(case: Case) -> dict[str, ShapeSpec]:
    return {k: TINY[k] for k in case.levels}


def _inputs(case: Case, batch: int = 2) -> Any:
    if case.levels is None:
        return torch.rand(batch, 3, case.image_side, case.image_side)
    return [torch.randn(batch, s.channels, SIDE // s.stride, SIDE // s.stride) for s in _shapes(case).values()]


# ----------------------------------------------------------------------------------------- registry
def test_spaces_are_registered_and_covered():
    assert {"auxcell", "autodeeplab", "irnas", "nasfcos", "nasfpn"} <= set(SPACE_NAMES)
    missing = sorted(set(SPACE_NAMES) - set(CASES))
    assert not missing, f"registered spaces without a CASES entry in this test: {missing}"
    assert set(BACKBONES) <= set(BACKBONE_CFGS), \
        f"backbones without a BACKBONE_CFGS entry in this test: {sorted(set(BACKBONES) - set(BACKBONE_CFGS))}"


# ------------------------------------------------------------------------------------- per space
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_sample_mutate_check_roundtrip(name):
    case, space = _case(name), _space(name)
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    space.check(arch)
    assert space.is_valid(arch) and arch.space == space.name
    assert Arch.from_json(arch.to_json()) == arch and Arch.from_dict(arch.to_dict()) == arch
    space.check(Arch.from_json(arch.to_json()))
    for _ in range(10):
        child = space.mutate(arch, rng)
        space.check(child)
        changed = [k for (k, a), (_, b) in zip(arch.choices, child.choices) if a != b]
        assert [k for k, _ in child.choices] == [k for k, _ in arch.choices]
        assert len(changed) in case.mutate_changes, f"{name}: mutate changed {changed}"
        arch = child


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_build_and_forward_on_tiny_shapes(name):
    case, space = _case(name), _space(name)
    arch = space.sample(np.random.default_rng(1))
    torch.manual_seed(0)
    net = space.build(arch, _shapes(case) if case.levels is not None else IMAGE).eval()
    assert isinstance(net, torch.nn.Module)
    with torch.no_grad():
        out = net(_inputs(case))
    case.check_output(space, net, out, 2)
    if case.levels is None:  # a whole network needs no shapes at all
        assert isinstance(space.build(arch), torch.nn.Module)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_invalid_arch_names_the_decision(name):
    space = _space(name)
    arch = space.sample(np.random.default_rng(2))
    shapes = _shapes(_case(name)) if _case(name).levels is not None else IMAGE
    for d in space.decisions():  # every decision, one out-of-range value at a time
        ints = all(isinstance(o, int) and not isinstance(o, bool) for o in d.options)
        bad = arch.replace(**{d.name: max(d.options) + 7 if ints else "not_an_option"})
        with pytest.raises(InvalidArch, match=rf"\b{d.name}\b"):
            space.check(bad)
        assert not space.is_valid(bad)
    first = space.decisions()[0]
    with pytest.raises(InvalidArch, match=rf"\b{first.name}\b"):
        space.build(arch.replace(**{first.name: "not_an_option"}), shapes)
    with pytest.raises(InvalidArch, match=f"not {space.name!r}"):
        space.check(Arch("no_such_space", arch.choices))


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_shape_contract_errors(name):
    case, space = _case(name), _space(name)
    arch = space.sample(np.random.default_rng(3))
    shapes = _shapes(case) if case.levels is not None else IMAGE
    with pytest.raises(TypeError, match="must be a dict"):
        space.build(arch, list(shapes.values()))
    with pytest.raises(TypeError, match="must be a dict"):
        space.build(arch, tuple(shapes.values()))
    if case.levels is None:
        with pytest.raises(ValueError, match="image"):
            space.build(arch, TINY)
        return
    with pytest.raises(ValueError, match="in_shapes is missing"):
        space.build(arch)
    with pytest.raises(ValueError, match=r"missing|strides"):
        space.build(arch, dict(list(shapes.items())[1:]))
    with pytest.raises(ValueError, match=r"missing|at least"):
        space.build(arch, {})


# ------------------------------------------------------------------------------ backbone x space
_ENCODERS: dict[str, tuple[dict[str, ShapeSpec], dict[str, torch.Tensor]]] = {}


def _encoded(backbone: str) -> tuple[dict[str, ShapeSpec], dict[str, torch.Tensor]]:
    """The backbone's shapes and its features of one random 64 px image, by level name (cached)."""
    if backbone not in _ENCODERS:
        if backbone not in BACKBONE_CFGS:
            pytest.fail(f"backbone {backbone!r} of densenas.backbones.BACKBONES has no BACKBONE_CFGS entry "
                        f"in tests/test_space_contract.py")
        torch.manual_seed(0)
        encoder, shapes = build_backbone(BACKBONE_CFGS[backbone])
        with torch.no_grad():
            feats = encoder.eval()(torch.rand(1, 3, SIDE, SIDE))
        assert [(f.shape[1], SIDE // f.shape[-1]) for f in feats] == \
            [(s.channels, s.stride) for s in shapes.values()], f"{backbone}: features disagree with shapes"
        _ENCODERS[backbone] = shapes, dict(zip(shapes, feats))
    return _ENCODERS[backbone]


@pytest.mark.parametrize("name", ENCODER_SPACES)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_encoder_space_on_every_backbone(backbone, name):
    shapes, feats = _encoded(backbone)
    case = _case(name)
    shapes = {k: v for k, v in shapes.items() if case.min_stride <= v.stride <= case.max_stride}
    space = _space(name)
    if hasattr(space, "num_inputs"):  # decode every level given (e.g. timm's five)
        space = _space(name, num_inputs=len(shapes))
    torch.manual_seed(0)
    net = space.build(space.sample(np.random.default_rng(4)), shapes).eval()
    with torch.no_grad():
        out = net([feats[k] for k in shapes])
    case.check_output(space, net, out, 1)

"""Protocol of differentiable search spaces (DARTS, Liu et al. ICLR 2019; Auto-DeepLab; IR-NAS).

A differentiable space trains one over-parameterised network (the *supernet*) whose architecture
parameters (DARTS α for ops, Auto-DeepLab / IR-NAS β for the network-level path or widths) are learnt
by gradient descent alternately with the ordinary weights, on two splits of the training data.
``derive()`` turns the learnt parameters into an ordinary :class:`~densenas.arch.Arch` of the same
space, which builds, exports and fine-tunes like any other found architecture.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from .arch import Arch
from .space import SearchSpace, ShapeSpec


class Supernet(nn.Module):
    """Base class of supernets; subclasses register their α/β as ``nn.Parameter`` s."""

    space: SearchSpace

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (α, β), optimised on the architecture split."""
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter, optimised on the weight split."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def derive(self) -> Arch:
        """The discrete architecture the current α/β decode to (a valid arch of :attr:`space`)."""
        raise NotImplementedError


class DifferentiableSpace(SearchSpace):
    """A search space that, besides building discrete archs, builds its own supernet."""

    def build_supernet(self, in_shapes: Mapping[str, ShapeSpec] | None = None) -> Supernet:
        """Build the supernet; ``in_shapes`` follows the contract of :meth:`SearchSpace.build` (``None`` or
        ``{name: ShapeSpec}``; whole-network spaces such as Auto-DeepLab and IR-NAS take ``None`` or the
        image's shape, ``{"image": ShapeSpec(channels, 1)}``)."""
        raise NotImplementedError

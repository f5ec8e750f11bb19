"""Shared by the dense-map tasks (segmentation, depth, keypoints): what every task built on the aux-cell and
template decoders (Nekrasov et al., CVPR 2019 / WACV 2020) needs, in one place, so that no task imports a
sibling task.

* :func:`split_outputs`: a decoder's output is its main map, or ``(main map, [auxiliary maps])`` in training;
* :func:`inference_cost`: the module, parameter count and label ``tools/test.py`` reports for a model whose
  head carries auxiliary heads that inference never runs.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn


def split_outputs(out: Tensor | Sequence[Any]) -> tuple[Tensor, list[Tensor]]:
    """``(main output, [aux outputs])`` of a decoder output (a tensor, or ``(main, aux_list)``)."""
    if isinstance(out, (tuple, list)):
        return out[0], list(out[1])
    return out, []


def inference_cost(model: nn.Module, head: str) -> tuple[nn.Module, int, int, str]:
    """``Task.test_cost_model`` of an mm model whose ``head`` attribute (``decode_head`` for mmseg, ``head``
    for mmpose) may hold a found decoder with auxiliary heads: the tensor forward up to the head's output,
    the inference parameters (aux heads excluded), 3 input channels and the label."""
    from densenas.objectives import count_params
    from densenas.task import TensorForward

    h = getattr(model, head)
    # mmpose's heads keep the codec in ``decoder``: the found head exposes its aux heads itself
    aux = getattr(h, "aux_heads", None)
    if aux is None:
        aux = getattr(getattr(h, "decoder", None), "aux_heads", None)
    params = count_params(model) - (count_params(aux) if aux is not None else 0)
    return TensorForward(model, lambda m, x: m._forward(x)), params, 3, " (inference, aux heads excluded)"

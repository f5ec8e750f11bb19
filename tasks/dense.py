"""Shared by the dense-map tasks (segmentation, depth, keypoints): what every task built on the aux-cell and
template decoders (Nekrasov et al., CVPR 2019 / WACV 2020) needs, in one place, so that no task imports a
sibling task.

* :func:`split_outputs`: a decoder's output is its main map, or ``(main map, [auxiliary maps])`` in training;
* :func:`inference_cost`: the module, parameter count and label ``tools/test.py`` reports for a model whose
  head carries auxiliary heads that inference never runs;
* :func:`space_export_options`: the space of a found arch (through the space plugins, by output kind) and the
  export options its module needs (``SearchSpace.export_options``), filled in where the user left them unset.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from densenas.arch import Arch
from densenas.export import fill_defaults
from densenas.space import SearchSpace, export_space_class


def split_outputs(out: Tensor | Sequence[Any]) -> tuple[Tensor, list[Tensor]]:
    """``(main output, [aux outputs])`` of a decoder output (a tensor, or ``(main, aux_list)``)."""
    if isinstance(out, (tuple, list)):
        return out[0], list(out[1])
    return out, []


def inference_cost(model: nn.Module, head: str) -> tuple[nn.Module, int, int, str]:
    """``Task.test_cost_model`` of an mm model whose ``head`` attribute (``decode_head`` for mmseg, ``head``
    for mmpose) may hold a found decoder with auxiliary heads: the tensor forward up to the head's output,
    the inference parameters (aux heads excluded), 3 input channels and the label."""
    from densenas.costs import count_params
    from densenas.task import TensorForward

    h = getattr(model, head)
    # mmpose's heads keep the codec in ``decoder``: the found head exposes its aux heads itself
    aux = getattr(h, "aux_heads", None)
    if aux is None:
        aux = getattr(getattr(h, "decoder", None), "aux_heads", None)
    params = count_params(model) - (count_params(aux) if aux is not None else 0)
    return TensorForward(model, lambda m, x: m._forward(x)), params, 3, " (inference, aux heads excluded)"


def space_export_options(options: dict[str, Any], arch: Arch, search_cfg: Mapping[str, Any], task: Any
                         ) -> type[SearchSpace]:
    """The space class of ``arch`` and, filled into ``options`` where unset, the export options of its module.

    Args:
        options: the export options so far (the user's); filled in place.
        arch: the found arch.
        search_cfg: the search config it was found with (``{}`` when none): its ``space`` section goes to the
            space's ``export_options``; its ``backbone`` is the default backbone, else the one the space's
            ``export_options`` names (a template network's first levels); its ``evaluator.aux_weight``, when
            set, is the option ``aux_weight`` (the weight of the auxiliary heads the fine-tune trains, none at 0).
        task: the exporting task (its ``accepts`` and ``name``).

    Raises:
        ValueError: the arch's space outputs a kind the task does not export, or is not the search's ``space.type``;
            PluginError: no such space; ExportNotImplemented: the space does not implement export.
    """
    section = dict(search_cfg.get("space") or {})
    cls = export_space_class(arch, section or None, accepts=task.accepts, task=task.name)
    found = dict(cls.export_options(arch, section))
    backbone = found.pop("backbone", None)
    fill_defaults(options, **found)
    # the fine-tune trains the auxiliary heads as the search did: a search with evaluator.aux_weight=0 ranked
    # decoders without them, so its export trains none (a space whose module has no auxiliary heads ignores it)
    evaluator = dict(search_cfg.get("evaluator") or {})
    if evaluator.get("aux_weight") is not None:
        fill_defaults(options, aux_weight=float(evaluator["aux_weight"]))
    if options.get("backbone") is None and (search_cfg.get("backbone") or backbone):
        options["backbone"] = dict(search_cfg.get("backbone") or backbone)
    return cls

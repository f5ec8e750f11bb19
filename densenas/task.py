"""The task plugin protocol: what a dense-prediction task supplies to the task-agnostic core.

A task (segmentation, detection, restoration, ...) is one package under ``tasks/`` whose :class:`Task`
subclass is declared in the ``densenas.task_plugins`` entry-point group (see :mod:`densenas.plugins`). The core
— the builder, the search loop, the proxy trainer of Nekrasov et al. (CVPR 2019) and the supernet trainer
of DARTS (Liu et al., ICLR 2019) — only calls the methods below; everything task-specific (reading data,
loss, metrics, reward, the candidate's output contract, OpenMMLab registrations, export) lives in the task.

A candidate (what :meth:`Task.build_candidate` returns) is an ``nn.Module`` on top of the encoder's
features with ``loss(feats, batch) -> {"loss_*": Tensor}``, ``predict(feats, batch)`` (what
:meth:`Task.metrics` consumes) and ``forward(*feats)`` (for MAdds counting).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from torch import Tensor, nn

from .arch import Arch
from .plugins import TASKS, load
from .space import SearchSpace, ShapeSpec

Log = Callable[[str], None]


class Task:
    """Base class of a task plugin; one instance per search, built from the config's ``task`` section.

    Class attributes:
        name: the ``task.type`` of configs.
        accepts: the space output kinds (``SearchSpace.output_kind``) this task can search: any space of such a
            kind, a plugin's too, without naming it (docs/architecture.md).
        spaces: the shipped spaces it searches (documentation, ``--task`` picking of exports, tests); the
            builder also lets through a space named here whatever its kind.
        report_metrics: ``(metric key, column label)`` pairs for the leaderboard.
        reward_label: the y label of the reward plot.
        default_scope: the OpenMMLab scope of its exported configs (``mmseg``, ``mmdet``, ...).
        baselines: hand-designed models its exporter writes (``tools/export.py --baseline``).
        baselines_with_arch: those of ``baselines`` that are exported together with a found arch.
        baselines_note: a line on the baselines' options, printed by ``tools/export.py --list-baselines``.
        export_default: spaces and baselines for which an export that names no task (no ``--task``, no
            search config) picks this task although others hold them too (e.g. segmentation for ``auxcell``
            archs, which depth and keypoints also search and take as transfers).
        deploy_output: the ONNX name of the single output of its deployed graph (``tools/deploy.py``).
        test_metric: the headline metric of an exported model: a regular expression matched against the
            lower-cased metric keys ``tools/test.py`` reports, and whether higher is better (``tools/fidelity.py
            --final-iters`` ranks the fine-tuned archs by it).
    """

    name: ClassVar[str] = "task"
    accepts: ClassVar[tuple[str, ...]] = ()
    spaces: ClassVar[tuple[str, ...]] = ()
    report_metrics: ClassVar[tuple[tuple[str, str], ...]] = ()
    reward_label: ClassVar[str] = "reward"
    default_scope: ClassVar[str] = ""
    baselines: ClassVar[tuple[str, ...]] = ()
    #: baselines ``tools/export.py`` also takes an arch with (e.g. DnCNN sized to at least an IR-NAS arch's
    #: parameters); every other baseline is exported alone
    baselines_with_arch: ClassVar[tuple[str, ...]] = ()
    #: one line on the baselines' options for ``tools/export.py --list-baselines`` (e.g. what ``--width`` sets)
    baselines_note: ClassVar[str] = ""
    #: the ``tools/export.py`` options this task's exporter reads (``dataset``, ``data_root``, ``classes``,
    #: ``crop``, ...) with what each means for it; the tool's ``--help`` is written from these, and an option
    #: a task does not list is refused for it, naming the tasks that take it
    export_help: ClassVar[Mapping[str, str]] = {}
    export_default: ClassVar[tuple[str, ...]] = ()
    test_metric: ClassVar[tuple[str, bool]] = ("", True)
    deploy_output: ClassVar[str] = ""

    # ------------------------------------------------------------------ data
    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log: Log = print) -> None:
        """Read (building the proxy set first when asked) the splits named by the ``data`` section.

        Raises:
            densenas.config.ConfigError: an unknown key or value, naming the file and the dotted key.
        """
        raise NotImplementedError

    def space_defaults(self) -> dict[str, Any]:
        """Space arguments that follow from the data (e.g. ``num_classes``); the builder passes those the
        space's constructor accepts and the config did not set."""
        return {}

    # ------------------------------------------------- candidate searches
    def prepare(self, encoder: nn.Module, shapes: Mapping[str, ShapeSpec], *, device: Any,
                work_dir: Path | None, seed: int, log: Log) -> None:
        """Once per search, before any candidate: e.g. train a distillation teacher. Default: nothing."""

    def images(self, split: str) -> Tensor:
        """Normalised input images ``N x 3 x H x W`` of ``split`` (``"train"`` or ``"val"``)."""
        raise NotImplementedError

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        """The trainable part for ``arch`` (see the module docstring for its contract)."""
        raise NotImplementedError

    def batch(self, split: str, idx: Tensor, device: Any) -> Any:
        """Targets of images ``idx`` of ``split`` in the form the candidate's ``loss``/``predict`` take.

        Default: ``self.targets.batch(...)``, the ground-truth holder :meth:`build_data` sets."""
        return self._targets().batch(split, idx, device)

    def metrics(self, preds: list[Any], split: str) -> dict[str, float]:
        """Metrics of a whole split from the candidate's ``predict`` outputs, in image order.

        Default: ``self.targets.metrics(...)``."""
        return self._targets().metrics(preds, split)

    def _targets(self) -> Any:
        targets = getattr(self, "targets", None)
        if targets is None:
            raise RuntimeError(f"task {self.name!r}: call build_data() before training candidates")
        return targets

    def reward(self, metrics: Mapping[str, float]) -> float:
        """The scalar every strategy maximises."""
        raise NotImplementedError

    # ------------------------------------------------- supernet searches
    def supernet_data(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``((inputs, targets) train, (inputs, targets) val)`` for a one-shot (DARTS) search."""
        raise NotImplementedError(f"task {self.name!r} has no one-shot (supernet) search")

    def supernet_loss(self, output: Any, target: Tensor) -> Tensor:
        """Training loss of a supernet's output."""
        raise NotImplementedError(f"task {self.name!r} has no one-shot (supernet) search")

    def supernet_score(self, batch_size: int) -> Callable[[nn.Module, tuple[Tensor, Tensor]],
                                                          tuple[float, dict[str, float]]]:
        """``score(supernet, split) -> (reward, metrics)`` for a one-shot search."""
        raise NotImplementedError(f"task {self.name!r} has no one-shot (supernet) search")

    # ------------------------------------------------------------ test time
    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        """For ``tools/test.py``: ``(module mapping an image tensor to output tensors, inference params,
        input channels, what the params cover)`` of a model its exporter's config built."""
        raise NotImplementedError(f"task {self.name!r} has no test-time cost")

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        """Input size at which ``tools/test.py`` counts MAdds (default: the test pipeline's resize)."""
        for step in cfg.test_dataloader.dataset.pipeline:
            if step.get("type") == "Resize":
                w, h = step["scale"]
                return (min(h, w), min(h, w)) if step.get("keep_ratio") else (h, w)
        return (512, 512)

    def metric_note(self, split: str) -> str:
        """Why a val/test metric came back empty, if the task knows (printed by the tools)."""
        return ""

    # ------------------------------------------------------------ deployment (tools/deploy.py)
    def deploy_outputs(self, outputs: list[Tensor], cfg: Any) -> list[str]:
        """ONNX names of the flattened outputs of :meth:`test_cost_model`'s module: :attr:`deploy_output` for a
        single output when the task names it, else ``output`` / ``output_<i>``."""
        from .onnx_export import default_output_names

        if len(outputs) == 1 and self.deploy_output:
            return [self.deploy_output]
        return default_output_names(len(outputs))

    def deploy_note(self, cfg: Any) -> str:
        """What the deployed graph leaves to the caller after its outputs (stored in the ONNX metadata)."""
        return "raw outputs of the model's tensor forward; post-processing is outside the graph"

    # ------------------------------------------------------------ export
    def export(self, path: str | Path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """Write an ordinary OpenMMLab config for ``arch`` (or a hand-designed ``baseline``)."""
        raise NotImplementedError(f"task {self.name!r} has no exporter")


def task_class(name: str) -> type[Task]:
    """The :class:`Task` subclass registered as ``name`` (raises naming ``task.type`` and the options)."""
    cls = load(TASKS, name, "task.type")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"entry point {TASKS}:{name} is {cls!r}, not a densenas.task.Task subclass")
    return cls


class TensorForward(nn.Module):
    """Wrap a model so ``forward(x)`` maps an image tensor to tensors (for the MAdds counter)."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Tensor], Any]):
        super().__init__()
        self.m, self.fn = model, fn

    def forward(self, x: Tensor) -> Any:
        return self.fn(self.m, x)


def pick_task(name: str | None, arch: Arch | None = None, baseline: str | None = None) -> type[Task]:
    """The task of an export: ``name`` when given, else the one task whose spaces hold ``arch``'s space
    (NAS-FCOS parts such as ``nasfcos_fpn`` belong to ``nasfcos``) or whose baselines hold ``baseline``;
    of several, the one that names it in its ``export_default``.

    Raises:
        ValueError: no task, or several, fit (pass ``--task``).
    """
    from .plugins import available

    if name:
        return task_class(name)
    classes = [task_class(n) for n in available(TASKS)]
    if arch is not None:
        keys = (arch.space, arch.space.split("_")[0])
        fits = [c for c in classes if set(keys) & set(c.spaces)]
        what = f"arch space {arch.space!r}"
        if baseline is not None:  # an arch with a baseline: a task that exports that pair
            fits = [c for c in fits if baseline in c.baselines_with_arch]
    else:
        keys = (baseline,)
        fits = [c for c in classes if baseline in c.baselines]
        what = f"baseline {baseline!r}"
    if len(fits) > 1:
        fits = [c for c in fits if set(keys) & set(c.export_default)] or fits
    if len(fits) != 1:
        names = sorted(c.name for c in (fits or classes))
        raise ValueError(f"{what}: {'several' if fits else 'no'} tasks fit ({names}); name one with --task")
    return fits[0]


def task_of_config(cfg: Any) -> Task:
    """The task of an exported config: its ``densenas_task`` key, else the one task of its ``default_scope``.

    Raises:
        ValueError: neither says (names both keys).
    """
    from .plugins import available

    name = cfg.get("densenas_task")
    if name:
        return task_class(name)()
    scope = cfg.get("default_scope") or ""
    fits = [c for c in (task_class(n) for n in available(TASKS)) if scope and c.default_scope == scope]
    if len(fits) != 1:
        raise ValueError(f"config {getattr(cfg, 'filename', '')}: cannot tell its task; set "
                         f"densenas_task=<one of {available(TASKS)}> (default_scope is {scope!r})")
    return fits[0]()

"""What every exported OpenMMLab config shares: the mmengine runtime block and the config writer.

Task exporters (``tasks/<name>/export.py``) build the model and data sections; this module adds the loops,
hooks, environment and logging of the mmengine ``Runner`` and writes the self-contained config file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def fill_defaults(options: dict[str, Any], **defaults: Any) -> None:
    """Set each of ``defaults`` in ``options`` that the user left unset (absent or ``None``); a task's
    exporter uses it for the command-line options it was not given."""
    for k, v in defaults.items():
        if options.get(k) is None:
            options[k] = v


def runtime_config(iters: int, interval: int, save_best: str, *, seed: int, work_dir: str,
                   rule: str | None = None, visualizer: str | None = None,
                   vis_hook: str | None = None) -> dict[str, Any]:
    """The loops, hooks, environment and logging every exported config shares (mmengine ``Runner``).

    Args:
        iters: training iterations (``IterBasedTrainLoop``).
        interval: validation and checkpoint interval.
        save_best: metric key whose best value keeps a checkpoint.
        seed: ``randomness.seed``.
        work_dir: the runner's work dir.
        rule: ``"greater"`` / ``"less"`` for ``save_best`` (default: mmengine infers it from the key).
        visualizer: visualizer type (e.g. ``"SegLocalVisualizer"``); ``None``: no visualizer section.
        vis_hook: visualization hook type added to the default hooks, if any.
    """
    checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=interval, max_keep_ckpts=1,
                      save_best=save_best, **({"rule": rule} if rule else {}))
    hooks = dict(timer=dict(type="IterTimerHook"),
                 logger=dict(type="LoggerHook", interval=max(iters // 20, 1), log_metric_by_epoch=False),
                 param_scheduler=dict(type="ParamSchedulerHook"), checkpoint=checkpoint,
                 sampler_seed=dict(type="DistSamplerSeedHook"))
    if vis_hook:
        hooks["visualization"] = dict(type=vis_hook)
    cfg = dict(
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=interval),
        val_cfg=dict(type="ValLoop"), test_cfg=dict(type="TestLoop"), default_hooks=hooks,
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=seed),
        log_processor=dict(by_epoch=False), log_level="INFO", load_from=None, resume=False, work_dir=work_dir)
    if visualizer:
        cfg.update(vis_backends=[dict(type="LocalVisBackend")],
                   visualizer=dict(type=visualizer, vis_backends=[dict(type="LocalVisBackend")],
                                   name="visualizer"))
    return cfg


def dump_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """Write ``cfg`` as an mmengine python config at ``path`` (parents created); returns the path."""
    from mmengine.config import Config

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Config(cfg).dump(str(path))
    return path

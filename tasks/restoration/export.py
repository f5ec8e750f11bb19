"""Export a found restoration network (IR-NAS, or any space of output kind ``restorer``) or the DnCNN baseline
as an mmengine restoration config.

After Zhang, Chen, Li, Shen, "Memory-Efficient Hierarchical Neural Architecture Search for Image
Restoration" (IR-NAS / HiNAS): the derived network is retrained from scratch and compared with DnCNN
(Zhang et al., IEEE TIP 2017) of at least the same parameter count. Both configs come from the same function
(:func:`restoration_config`), so they share data, degradation, loss, schedule and evaluation; only the
``model.net`` entry differs: a found arch's is written by its space (``export_options`` / ``mm_fragment(arch,
"restorer_net")``, the space ↔ task contract of docs/architecture.md). The configs use mmengine's root registries
(no ``default_scope``) and
``custom_imports=dict(imports=["densenas.tasks.restoration.mm"])``; run them with ``tools/train.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from densenas.arch import Arch
from densenas.export import dump_config, runtime_config
from densenas.space import export_space_class

BASELINES = ("dncnn",)

#: this task's config bases (data per layout, schedule, runtime), composed by every export
BASES = Path(__file__).parent / "configs" / "_base_"


def _space_section(space: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """The search's ``space`` section as a dict (from a dict, or a search config file's ``space``)."""
    if space is None:
        return {}
    if isinstance(space, (str, Path)):
        from mmengine.config import Config

        if not Path(space).is_file():
            raise FileNotFoundError(f"search config {space} not found (expected <search work_dir>/config.py)")
        cfg = Config.fromfile(str(space))
        if "space" not in cfg:
            raise ValueError(f"search config {space} has no 'space' section")
        space = cfg["space"]
    return dict(space)


def found_net(arch: Arch, section: Mapping[str, Any], **given: Any) -> tuple[dict[str, Any], int]:
    """The network fragment of a found ``arch`` and its parameter count, through its space's export contract
    (``export_options`` of the search's ``section``, overridden by the ``given`` options that are not
    ``None``; ``mm_fragment(arch, "restorer_net")``), built once to check it and count its parameters."""
    from densenas.costs import count_params
    from densenas.tasks.restoration.mm import RESTORER_KINDS, build_restoration_net

    cls = export_space_class(arch, section or None, accepts=RESTORER_KINDS, task="restoration")
    options = {**cls.export_options(arch, section), **{k: v for k, v in given.items() if v is not None}}
    net = cls.mm_fragment(arch, "restorer_net", options=options)
    return net, count_params(build_restoration_net(net))


def restoration_config(path: str | Path, *, arch: Arch | Mapping[str, Any] | str | Path | None = None,
                       baseline: str | None = None, data_root: str = "data/proxy_restore",
                       layout: str = "bsd", task: str = "denoise", sigma: float = 25, crop: int = 64,
                       test_crop: int | None = None, train_split: str = "train", val_split: str = "val",
                       test_split: str | None = None, iters: int = 4000, lr: float = 1e-3,
                       batch_size: int = 16, val_interval: int | None = None, lam: float = 0.1,
                       space: Mapping[str, Any] | str | Path | None = None, width: int | None = None,
                       layers: int | None = None, blocks: int | None = None,
                       in_channels: int | None = None, aspp: bool | None = None, dncnn_depth: int = 17,
                       dncnn_width: int = 64, match_params: bool = True, workers: int = 2,
                       work_dir: str | None = None, seed: int = 0, check_data: bool = True) -> Path:
    """Write an mmengine config retraining an IR-NAS ``arch`` or the DnCNN ``baseline``; returns the path.

    ``arch`` alone exports the IR-NAS network. ``baseline="dncnn"`` exports DnCNN of ``dncnn_depth``
    layers: with ``arch`` also given and ``match_params``, its width is the smallest whose parameter count
    reaches the IR-NAS network's (:func:`~densenas.decoders.dncnn.dncnn_matching`), otherwise
    ``dncnn_width``. The arch's decisions define the cell and the per-layer width multipliers (so the
    layer and block counts); the base width, ASPP and channels come from ``space`` (the search config's
    ``space`` section, or the search's dumped ``config.py``), overridden by the explicit arguments.

    Args:
        path: output ``.py`` config.
        arch: the IR-NAS arch (``Arch``, ``to_dict()`` form, or JSON path such as a search's
            ``derived_arch.json``).
        baseline: ``"dncnn"`` or ``None``.
        data_root: dataset root (e.g. :func:`~densenas.datasets.imagefolder.build_proxy_restoration`'s).
        layout: ``"bsd"`` or ``"rain100"``.
        task: ``"denoise"`` or ``"derain"``.
        sigma: training and evaluation noise level (0..255); override the test's with
            ``--cfg-options test_dataloader.dataset.sigma=50``.
        crop: training crop side.
        test_crop: center crop for val/test; ``None`` evaluates whole images (batch size 1).
        train_split: training split folder.
        val_split: validation split folder.
        test_split: test split folder; default ``val_split``.
        iters: training iterations.
        lr: Adam learning rate (cosine-annealed to 0).
        batch_size: training batch size.
        val_interval: validate (and keep the best-PSNR checkpoint) every this many iterations; default
            ``iters``.
        lam: weight of the ``log10(1 / SSIM)`` loss term.
        space: the IR-NAS space settings the arch was searched in: a dict like the search config's
            ``space=dict(type=<the space>, width=8, layers=4, blocks=2)`` or the path of a search config
            (``<search work_dir>/config.py``) whose ``space`` section is read.
        width: IR-NAS base width ``W`` (default: ``space``'s, else 8).
        layers: expected IR-NAS layers (checked against the arch; default ``space``'s, else the arch's).
        blocks: expected IR-NAS blocks per cell (checked likewise).
        in_channels: image channels (default ``space``'s, else 3).
        aspp: IR-NAS ASPP head (default ``space``'s, else ``True``).
        dncnn_depth: DnCNN convolution layers.
        dncnn_width: DnCNN width when not matched.
        match_params: match DnCNN's parameters to the IR-NAS net's (needs ``arch``).
        workers: dataloader workers.
        work_dir: runner work dir; default ``work_dirs/restore_<net>_<task><sigma>``.
        seed: training seed and base seed of the fixed test degradations.
        check_data: fail now if ``data_root`` does not exist.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: bad combination of arguments.
        InvalidArch: invalid arch (the message names the field).
        FileNotFoundError: ``data_root`` is missing (with ``check_data``).
    """
    from densenas.decoders.dncnn import dncnn_matching
    from densenas.arch import as_arch
    from densenas.tasks.restoration.mm import LAYOUTS, TASKS

    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: use one of {BASELINES} (or None to export arch)")
    if arch is None and baseline is None:
        raise ValueError("give arch= (IR-NAS) and/or baseline='dncnn'")
    if layout not in LAYOUTS or task not in TASKS:
        raise ValueError(f"layout must be one of {LAYOUTS} and task one of {TASKS}, got {layout!r}, {task!r}")
    if min(iters, batch_size, crop) < 1:
        raise ValueError(f"iters, batch_size and crop must be positive, got {iters}, {batch_size}, {crop}")
    root = Path(data_root)
    if check_data and not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist (build the proxy set with "
                                f"densenas.datasets.imagefolder.build_proxy_restoration, or pass data_root)")
    found = None
    if arch is not None:
        found = found_net(as_arch(arch), _space_section(space), width=width, layers=layers, blocks=blocks,
                          in_channels=in_channels, aspp=aspp)
        in_channels = found[0].get("in_channels", in_channels)
    in_channels = int(3 if in_channels is None else in_channels)
    if baseline == "dncnn":
        if match_params and found is not None:
            dncnn_width = dncnn_matching(found[1], dncnn_depth, in_channels).width
        net = dict(type="dncnn", width=int(dncnn_width), depth=int(dncnn_depth), in_channels=in_channels)
        name = "dncnn"
    else:
        net, name = found[0], str(found[0]["type"])
    every = val_interval or iters
    ds = dict(type="DenseNASRestorationDataset", data_root=str(root.resolve()), layout=layout, task=task,
              sigma=float(sigma), channels=int(in_channels), seed=int(seed))
    loader = dict(num_workers=workers, persistent_workers=workers > 0, collate_fn=dict(type="pseudo_collate"))
    eval_loader = dict(batch_size=1 if test_crop is None else batch_size,
                       sampler=dict(type="DefaultSampler", shuffle=False), **loader)
    val_ds = dict(ds, split=val_split, crop=test_crop, test_mode=True)
    cfg = dict(
        densenas_task="restoration",  # which densenas task plugin tools/test.py asks about this model
        custom_imports=dict(imports=["densenas.tasks.restoration.mm"], allow_failed_imports=False),
        model=dict(type="DenseNASRestorer", net=net, loss=dict(lam=float(lam)),
                   data_preprocessor=dict(type="DenseNASRestorationPreprocessor")),
        train_dataloader=dict(batch_size=batch_size, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dict(ds, split=train_split, crop=int(crop), test_mode=False), **loader),
        val_dataloader=dict(eval_loader, dataset=val_ds),
        test_dataloader=dict(eval_loader, dataset=dict(val_ds, split=test_split or val_split)),
        val_evaluator=dict(type="DenseNASRestorationMetric"),
        test_evaluator=dict(type="DenseNASRestorationMetric"),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="Adam", lr=lr, betas=(0.9, 0.999))),
        param_scheduler=[dict(type="CosineAnnealingLR", T_max=iters, eta_min=0.0, begin=0, end=iters,
                              by_epoch=False)],
        **runtime_config(iters, every, "psnr", rule="greater", seed=seed,
                         work_dir=work_dir or f"work_dirs/restore_{name}_{task}"
                                              f"{int(sigma) if task == 'denoise' else ''}"))
    bases = [f"datasets/restore_{layout}.py", "schedules/restore_adam_cosine_4k.py",
             "restore_runtime.py"]  # ./configs/_base_
    return dump_config(cfg, path, bases=bases, base_root=BASES)


def restoration_pair(out_dir: str | Path, arch: Arch | Mapping[str, Any] | str | Path, *,
                     prefix: str = "", **kwargs: Any) -> tuple[Path, Path]:
    """Write the IR-NAS config and its parameter-matched DnCNN config side by side.

    Args:
        out_dir: folder for ``<prefix>irnas.py`` and ``<prefix>dncnn.py``.
        arch: the IR-NAS arch.
        prefix: file-name prefix (e.g. ``"denoise25_"``).
        **kwargs: shared :func:`restoration_config` arguments (data, schedule, ...); a given ``work_dir``
            gets ``_irnas`` / ``_dncnn`` appended.

    Returns:
        ``(irnas_config, dncnn_config)``.
    """
    out_dir = Path(out_dir)
    work_dir = kwargs.pop("work_dir", None)
    kwargs.pop("baseline", None)
    found = restoration_config(out_dir / f"{prefix}irnas.py", arch=arch,
                               work_dir=f"{work_dir}_irnas" if work_dir else None, **kwargs)
    base = restoration_config(out_dir / f"{prefix}dncnn.py", arch=arch, baseline="dncnn",
                              work_dir=f"{work_dir}_dncnn" if work_dir else None, **kwargs)
    return found, base

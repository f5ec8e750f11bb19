"""Exported configs compose ``_base_`` files the way mmseg / mmdet configs do (densenas/export.py:
:func:`~densenas.export.compose_config`): the task's data / schedule / runtime bases copied next to the config,
the config stating only the model and what differs, and loading back as the complete config."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.config import Config

from densenas import export as E

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("segmentation", "detection", "depth", "keypoints", "restoration")


def test_overrides_follow_mmengines_merge_rules():
    base = dict(a=dict(x=1, y=[1, 2], z=dict(p=1)), b=2, c=dict(type="A", k=1))
    cfg = dict(a=dict(x=1, y=[3], z=dict(p=1)), b=2, c=dict(type="B"), d=(1, 2))
    out = E.overrides(cfg, base)
    # a: only the list that changed; b: equal, dropped; c: the base has a key cfg lacks -> replaced whole
    assert out == dict(a=dict(y=[3]), c=dict(_delete_=True, type="B"), d=(1, 2))
    assert E.overrides(dict(t=(1, 2)), dict(t=[1, 2])) == {}  # a tuple and its loaded list are the same


_keys = st.one_of(st.sampled_from(["type", "lr", "x1", "data_root"]), st.text("ab.-/ 0", min_size=1, max_size=5))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.text("abcxyz_./ -'\"", max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.lists(inner, max_size=4).map(tuple),
    st.dictionaries(_keys, inner, max_size=5)), max_leaves=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values)
def test_format_config_round_trips_through_mmengine(tmp_path, value):
    path = tmp_path / "c.py"
    path.write_text(E.format_config({"model": value, "n": 1}))
    loaded = Config.fromfile(str(path)).to_dict()
    assert E._plain(loaded["model"]) == E._plain(value)
    assert type(loaded["model"]) is type(value) or isinstance(value, dict)  # tuples stay tuples


def _capture(monkeypatch, task: str) -> dict:
    """Make ``task``'s exporter also keep the complete config it composes."""
    mod = importlib.import_module(f"densenas.tasks.{task}.export")
    seen: dict = {}
    real = mod.dump_config

    def keep(cfg, path, **kw):
        seen["cfg"] = cfg
        return real(cfg, path, **kw)

    monkeypatch.setattr(mod, "dump_config", keep)
    return seen


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Small proxy sets in the layouts the exporters read class names from (a fresh clone has no ``data/``)."""
    from densenas.datasets import build_proxy_voc
    from densenas.datasets.proxy_det import build_proxy_coco

    voc, coco = tmp_path_factory.mktemp("proxy_voc"), tmp_path_factory.mktemp("proxy_coco")
    build_proxy_voc(voc, num_train=2, num_val=1, size=48, num_classes=3, seed=0)
    build_proxy_coco(coco, num_train=2, num_val=1, size=64, num_classes=2, seed=0, log=None)
    return {"<voc>": str(voc), "<coco>": str(coco)}


EXPORTS = {  # (task, baseline, options): a baseline of every task and dataset layout that has a base file;
    # "<voc>" / "<coco>" stand for the data fixture's roots
    "seg_proxy": ("segmentation", "fcn", dict(dataset="proxy", data_root="<voc>")),
    "seg_voc_crop": ("segmentation", "deeplabv3plus", dict(dataset="voc", crop=256, num_classes=3,
                                                          data_root="<voc>")),
    "seg_cityscapes": ("segmentation", "aspp", dict(dataset="cityscapes", data_root="data/cityscapes", crop=512)),
    "det_coco": ("detection", "fpn_fcos", dict(data_root="<coco>", iters=100)),
    "depth_proxy": ("depth", "fcn", dict(iters=50)),
    "depth_nyu": ("depth", "deeplabv3plus", dict(dataset="nyu", data_root="data/nyu")),
    "kpt_proxy": ("keypoints", "heatmap", dict(width=48)),
    "kpt_mpii": ("keypoints", "heatmap", dict(dataset="mpii", data_root="data/mpii")),
    "restore_bsd": ("restoration", "dncnn", dict(iters=300, check_data=False)),
    "restore_rain": ("restoration", "dncnn", dict(layout="rain100", task="derain", data_root="data/rain",
                                                  check_data=False)),
}
FUNCS = dict(segmentation="export_config", detection="detection_config", depth="export_depth_config",
             keypoints="keypoint_config", restoration="restoration_config")


@pytest.mark.parametrize("name", list(EXPORTS))
def test_every_task_writes_a_short_config_on_its_bases_that_loads_as_the_complete_one(name, tmp_path, monkeypatch,
                                                                                    data):
    task, baseline, opts = EXPORTS[name]
    opts = {k: data.get(v, v) if isinstance(v, str) else v for k, v in opts.items()}
    seen = _capture(monkeypatch, task)
    mod = importlib.import_module(f"densenas.tasks.{task}.export")
    if task in ("segmentation", "detection"):
        opts = dict(opts, log=None)
    out = getattr(mod, FUNCS[task])(tmp_path / "m.py", baseline=baseline, **opts)
    text = out.read_text()
    assert text.count("_base_ = [") == 1
    assert E._plain(Config.fromfile(str(out)).to_dict()) == E._plain(seen["cfg"])  # composing changed nothing
    bases = [line.strip(" ',") for line in text.splitlines() if line.strip().startswith("'./_base_/")]
    assert len(bases) == 3 and all((tmp_path / b).is_file() for b in bases)
    flat = tmp_path / "flat.py"
    E.dump_config(seen["cfg"], flat)  # the same config, self-contained
    assert E._plain(Config.fromfile(str(flat)).to_dict()) == E._plain(seen["cfg"])
    assert len(text.splitlines()) < 0.75 * len(flat.read_text().splitlines())
    assert "env_cfg" not in text and "val_cfg" not in text  # runtime and loops come from the bases


def test_the_default_crop_keeps_the_pipelines_in_the_base_another_crop_restates_them(tmp_path, data):
    from densenas.tasks.segmentation.export import export_config

    default = export_config(tmp_path / "a" / "d.py", baseline="fcn", data_root=data["<voc>"], log=None).read_text()
    other = export_config(tmp_path / "b" / "o.py", baseline="fcn", crop=96, data_root=data["<voc>"],
                          log=None).read_text()
    assert "RandomCrop" not in default and "pipeline" not in default
    assert "crop_size=(96, 96)" in other
    assert Config.fromfile(str(tmp_path / "b" / "o.py")).train_dataloader.dataset.pipeline[3].crop_size == (96, 96)


def test_a_base_that_sets_a_key_the_config_lacks_is_refused(tmp_path):
    root = tmp_path / "bases"
    root.mkdir()
    (root / "b.py").write_text("foo = 1\nlog_level = 'INFO'\n")
    with pytest.raises(ValueError, match=r"set \['foo'\], which this config does not have"):
        E.dump_config(dict(log_level="INFO"), tmp_path / "out" / "c.py", bases=["b.py"], base_root=root)
    with pytest.raises(FileNotFoundError, match="missing"):
        E.dump_config(dict(log_level="INFO"), tmp_path / "out" / "c.py", bases=["gone.py"], base_root=root)


def test_a_composed_config_that_does_not_load_back_as_the_config_is_an_error(tmp_path, monkeypatch):
    root = tmp_path / "bases"
    root.mkdir()
    (root / "b.py").write_text("train_cfg = dict(max_iters=2000)\n")
    monkeypatch.setattr(E, "overrides", lambda cfg, base: {})  # a broken diff
    path = tmp_path / "out" / "c.py"
    with pytest.raises(RuntimeError, match=r"changed \['train_cfg'\]"):
        E.dump_config(dict(train_cfg=dict(max_iters=600)), path, bases=["b.py"], base_root=root)
    assert not path.exists()


def test_every_shipped_base_file_is_a_plain_section_used_by_its_task():
    used = {
        "segmentation": {"datasets/seg_proxy.py", "datasets/seg_voc.py", "datasets/seg_cityscapes.py",
                         "schedules/seg_adamw_poly_2k.py", "seg_runtime.py"},
        "detection": {"datasets/det_coco.py", "datasets/det_voc.py", "schedules/det_adamw_cosine_2k.py",
                      "det_runtime.py"},
        "depth": {"datasets/depth_proxy.py", "datasets/depth_nyu.py", "schedules/depth_adamw_poly_2k.py",
                  "depth_runtime.py"},
        "keypoints": {"datasets/kpt_proxy.py", "datasets/kpt_coco.py", "datasets/kpt_mpii.py",
                      "schedules/kpt_adamw_poly_2k.py", "kpt_runtime.py"},
        "restoration": {"datasets/restore_bsd.py", "datasets/restore_rain100.py",
                        "schedules/restore_adam_cosine_4k.py", "restore_runtime.py"},
    }
    names = set()
    for task in TASKS:
        root = ROOT / "tasks" / task / "configs" / "_base_"
        files = {p.relative_to(root).as_posix() for p in root.rglob("*.py")}
        assert files == used[task]
        for f in files:
            assert f not in names  # unique across tasks: exports of two tasks can share a folder
            names.add(f)
            cfg = Config.fromfile(str(root / f)).to_dict()
            assert cfg and not {"model", "work_dir", "custom_imports"} & set(cfg)

"""A search space plugged in from outside (issue #25, items 1 and 5): a toy space in a temporary package, declared
through the ``densenas.space_plugins`` entry point group and nothing else, is searched by two shipped tasks
(segmentation and depth) because it declares the output kind they accept (``output_kind="dense_map"``), with
no file of ``densenas/``, ``tasks/`` or ``decoders/`` edited; it implements the export contract
(``export_options`` / ``mm_fragment``), so ``tools/export.py`` writes its found arch as an mmseg config of either
task and ``tools/train.py`` trains it. A space without the export methods is searched but refused at export,
naming the space and the method. A space of a kind no task accepts is refused, naming the kinds."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from _tools import tool

from mmengine.config import Config

from densenas.history import History

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
"""A toy dense-map space: one conv on the finest encoder level, kernel and width searched."""
from torch import nn

from densenas.arch import Arch, Decision
from densenas.space import SearchSpace


class ToyDecoder(nn.Module):
    def __init__(self, in_channels, width, kernel, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, kernel, padding=kernel // 2), nn.ReLU(),
                                  nn.Conv2d(width, num_classes, 1))

    def forward(self, feats):
        return self.body(feats[0])  # the finest level: a map at its stride


class BareToySpace(SearchSpace):
    """Searchable, not exportable: no export_options / mm_fragment."""

    name = "baretoy"
    output_kind = "dense_map"

    def __init__(self, num_classes=2):
        self.num_classes = int(num_classes)

    def decisions(self):
        return [Decision("kernel", (1, 3)), Decision("width", (8, 16))]

    def build(self, arch, in_shapes=None):
        values = dict(arch.choices)
        first = next(iter(in_shapes.values()))
        return ToyDecoder(first.channels, values["width"], values["kernel"], self.num_classes)


class ToySpace(BareToySpace):
    """The same, exportable: hosted by the generic heads the dense-map tasks register, which rebuild it from its
    search section through the space plugins."""

    name = "toy"
    HEADS = {"decode_head": "DenseMapHead", "depth_head": "DepthDenseMapHead"}

    @classmethod
    def export_options(cls, arch, space_cfg):
        return {"space": dict(space_cfg or {"type": cls.name})}

    @classmethod
    def mm_fragment(cls, arch, host, *, options, in_shapes=None, **task_keys):
        cls.check_host(host)
        if host not in cls.HEADS:
            raise ValueError(f"toy: no {host}")
        out = task_keys["num_classes"]
        cls(num_classes=out).check(arch)
        shapes = list(in_shapes.values())
        return dict(type=cls.HEADS[host], arch=arch.to_dict(), space=dict(options["space"]),
                    in_channels=[s.channels for s in shapes], in_strides=[s.stride for s in shapes], **task_keys)
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The toy package and its dist-info (entry point ``toy``) on ``sys.path``, entry-point cache cleared."""
    from densenas import plugins

    site = tmp_path / "site"
    (site / "toyspace").mkdir(parents=True)
    (site / "toyspace" / "__init__.py").write_text(textwrap.dedent(TOY))
    info = site / "toyspace-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyspace\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[densenas.space_plugins]\ntoy = toyspace:ToySpace\n"
                                           "baretoy = toyspace:BareToySpace\n")
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points.cache_clear()
    yield site
    sys.modules.pop("toyspace", None)
    plugins._entry_points.cache_clear()


def test_a_toy_space_from_outside_is_searched_exported_and_trained_by_segmentation_and_depth(tmp_path, toy_plugin):
    from densenas.plugins import SPACES, available

    assert "toy" in available(SPACES)
    seg = [f"data.root={tmp_path / 'voc'}", "data.image_size=64", "data.proxy.num_train=16", "data.proxy.num_val=8",
           "data.proxy.size=64", "evaluator.stage1.iters=3", "evaluator.stage1.batch_size=4",
           "evaluator.stage2.iters=1", "evaluator.stage2.batch_size=4", "task.teacher.iters=2",
           "task.teacher.batch_size=4", "search.num_candidates=3", "backbone.pretrained=False"]
    depth = [f"data.root={tmp_path / 'nyu'}", "data.image_size=[48,64]", "data.proxy.num_train=8",
             "data.proxy.num_test=4", "data.proxy.height=48", "data.proxy.width=64", "evaluator.stage1.iters=3",
             "evaluator.stage1.batch_size=4", "evaluator.stage2.iters=1", "evaluator.stage2.batch_size=4",
             "search.num_candidates=3", "backbone.pretrained=False"]
    for name, base, opts in (("seg", "auxcell_proxy.py", seg), ("depth", "depth_proxy.py", depth)):
        work, cfg = tmp_path / name, tmp_path / f"{name}_toy.py"
        cfg.write_text(f"_base_ = [{str(ROOT / 'configs/search' / base)!r}]\n"
                       "space = dict(_delete_=True, type='toy')\nsearch = dict(promote=None)\n")
        rc = tool("search")([str(cfg), "--work-dir", str(work), "--workers", "1", "--cfg-options", *opts])
        assert rc == 0, name
        with History(work / "history.sqlite") as h:
            rows = h.finished()
        assert len(rows) == 3 and all(c.arch.space == "toy" for c in rows) and any(c.result.ok for c in rows)
        best = json.loads((work / "best_arch.json").read_text())
        assert best["space"] == "toy" and set(best["choices"]) == {"kernel", "width"}

        # exported through the space's own contract (the task comes from the search's config.py) and trained
        out, data = tmp_path / f"{name}_found.py", tmp_path / ("voc" if name == "seg" else "nyu")
        rc = tool("export")([str(work / "best_arch.json"), "--out", str(out), "--data-root", str(data),
                             "--crop", "48" if name == "depth" else "64", "--iters", "1", "--batch-size", "2",
                             "--workers", "0", "--work-dir", str(tmp_path / f"{name}_ft")])
        assert rc == 0, name
        cfg = Config.fromfile(str(out))
        head = cfg.model.decode_head
        assert head.type == ("DenseMapHead" if name == "seg" else "DepthDenseMapHead")
        assert head.space == {"type": "toy"} and head.arch["choices"] == best["choices"]
        assert tool("train")([str(out), "--cfg-options", "model.backbone.backbone.pretrained=False"]) == 0
        assert sorted((tmp_path / f"{name}_ft").glob("iter_1.pth")), name


def test_a_space_without_export_methods_is_refused_at_export_naming_it(tmp_path, toy_plugin, capsys):
    from densenas.arch import Arch
    from densenas.space import ExportNotImplemented
    from densenas.tasks.depth.task import DepthTask

    arch = Arch("baretoy", (("kernel", 3), ("width", 8)))
    arch.save(tmp_path / "best_arch.json")
    rc = tool("export")([str(tmp_path / "best_arch.json"), "--task", "segmentation", "--out", str(tmp_path / "x.py")])
    err = capsys.readouterr().err
    assert rc == 2 and "'baretoy'" in err and "export_options()" in err and "BareToySpace" in err
    with pytest.raises(ExportNotImplemented, match=r"space 'baretoy' .*does not implement export_options\(\)"):
        DepthTask().export(tmp_path / "d.py", arch=arch, data_root=str(tmp_path / "nyu"))
    import toyspace

    with pytest.raises(ExportNotImplemented, match=r"space 'baretoy' .*does not implement mm_fragment\(\)"):
        toyspace.BareToySpace.mm_fragment(arch, "decode_head", options={})
    assert not (tmp_path / "x.py").exists()


def test_a_space_of_a_kind_no_task_accepts_is_refused_naming_the_kinds(tmp_path, toy_plugin):
    from densenas.build import plan_search
    from densenas.config import ConfigError, load_config

    path = tmp_path / "toy.py"
    path.write_text(f"_base_ = [{str(ROOT / 'configs/search/auxcell_proxy.py')!r}]\n"
                    "space = dict(_delete_=True, type='toy')\n")
    cfg = load_config(path, [])
    import toyspace

    toyspace.ToySpace.output_kind = "point_cloud"  # the class attribute is what the builder reads
    with pytest.raises(ConfigError, match=r"outputs 'point_cloud'.*accepts \['dense_map', 'segmenter'\]"):
        plan_search(cfg)

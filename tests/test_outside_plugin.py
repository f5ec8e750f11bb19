"""A search space plugged in from outside (issue #25, item 5): a toy space in a temporary package, declared
through the ``densenas.space_plugins`` entry point group and nothing else, is searched by two shipped tasks
(segmentation and depth) because it declares the output kind they accept (``output_kind="dense_map"``), with
no file of ``densenas/``, ``tasks/`` or ``decoders/`` edited. A space of a kind no task accepts is refused,
naming the kinds."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from _tools import tool

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


class ToySpace(SearchSpace):
    name = "toy"
    output_kind = "dense_map"

    def __init__(self, num_classes=2):
        self.num_classes = int(num_classes)

    def decisions(self):
        return [Decision("kernel", (1, 3)), Decision("width", (8, 16))]

    def build(self, arch, in_shapes=None):
        values = dict(arch.choices)
        first = next(iter(in_shapes.values()))
        return ToyDecoder(first.channels, values["width"], values["kernel"], self.num_classes)
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
    (info / "entry_points.txt").write_text("[densenas.space_plugins]\ntoy = toyspace:ToySpace\n")
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points.cache_clear()
    yield site
    sys.modules.pop("toyspace", None)
    plugins._entry_points.cache_clear()


def test_a_toy_space_from_outside_is_searched_by_segmentation_and_depth(tmp_path, toy_plugin):
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

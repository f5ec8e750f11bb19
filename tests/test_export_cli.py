"""tools/export.py asks the task plugins for their baselines (--list-baselines) and which baselines go with an
arch (Task.baselines_with_arch) instead of hard-coding them."""
from __future__ import annotations

import json

from test_tools import _tool as tool


def test_list_baselines_comes_from_the_task_plugins(capsys):
    from densenas.plugins import TASKS, available
    from densenas.task import task_class

    assert tool("export")(["--list-baselines"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in available(TASKS):
        cls = task_class(name)
        if cls.baselines:
            line = next(ln for ln in out if ln.startswith(f"{name}: "))
            assert all(b in line for b in cls.baselines) and cls.baselines_note in line


def test_an_arch_with_a_baseline_only_where_the_task_exports_that_pair(tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"format": 1, "space": "auxcell", "choices": {}}))
    assert tool("export")([str(arch), "--baseline", "aspp", "--task", "segmentation",
                           "--out", str(tmp_path / "x.py")]) == 2
    assert "the segmentation task exports no baseline together with an arch" in capsys.readouterr().err
    assert tool("export")(["--baseline", "aspp"]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert tool("export")(["--out", str(tmp_path / "y.py")]) == 2
    assert "give an arch JSON or --baseline" in capsys.readouterr().err


def test_an_arch_is_exported_on_the_data_it_was_searched_on(tmp_path):
    """Without --data-root, a model fine-tunes where its search ran (the search config's data.root and
    layout), not on the bundled proxy set; --data-root still wins."""
    from pathlib import Path

    from mmengine.config import Config

    from densenas.datasets.det_fixtures import write_coco_fixture
    from densenas.datasets.fixtures import write_voc_fixture
    from densenas.tasks.detection.task import DetectionTask
    from densenas.tasks.segmentation.task import SegmentationTask

    def root_of(path) -> Path:
        return Path(Config.fromfile(str(path)).train_dataloader.dataset.data_root).resolve()

    # two COCO-layout sets of our own (the export reads the classes off the annotations): the test does not
    # depend on a proxy set another test may or may not have built under data/
    searched, given = write_coco_fixture(tmp_path / "searched")["root"], write_coco_fixture(tmp_path / "given")["root"]
    big = {"data": {"root": str(searched), "layout": "proxy_coco"}}
    assert root_of(DetectionTask().export(tmp_path / "a.py", baseline="fpn_fcos", search_cfg=big)) == \
        Path(searched).resolve()
    assert root_of(DetectionTask().export(tmp_path / "b.py", baseline="fpn_fcos", search_cfg=big,
                                          data_root=str(given))) == Path(given).resolve()
    voc = tmp_path / "voc"
    write_voc_fixture(voc)
    seg = {"data": {"root": str(voc), "layout": "voc"}}
    assert root_of(SegmentationTask().export(tmp_path / "c.py", baseline="fcn", width=32, search_cfg=seg)) == \
        voc.resolve()

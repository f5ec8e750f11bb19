"""The plugin layout: the core imports no task, space or dataset; tasks and spaces are found by name;
the one builder refuses impossible configs naming the keys."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted(p.stem for p in (ROOT / "densenas").glob("*.py") if p.stem != "__init__")


def test_core_imports_no_plugin_in_a_fresh_interpreter():
    mods = ", ".join(f"densenas.{m}" for m in CORE) + ", densenas.strategies, densenas.evaluation, " \
        "densenas.evaluation.proxy, densenas.evaluation.cache, densenas.backbones"
    code = (f"import sys, importlib\n"
            f"for m in '{mods}'.split(', '): importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.startswith(('densenas.tasks', 'densenas.decoders', "
            f"'densenas.datasets')))\n"
            f"print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_core_sources_import_no_plugin_package():
    """No module of ``densenas/`` imports a task, space or dataset module, not even inside a function."""
    pattern = re.compile(r"^\s*(from|import)\s+(densenas\.|\.+)(tasks|decoders|datasets)\b", re.M)
    for path in (ROOT / "densenas").rglob("*.py"):
        hit = pattern.search(path.read_text())
        assert hit is None, f"{path.relative_to(ROOT)} imports {hit.group(0).strip()}"


def test_data_and_spaces_import_no_task():
    """Layers point one way: tasks import datasets and decoders, never the reverse (issue #25)."""
    pattern = re.compile(r"^\s*(from|import)\s+densenas\.tasks\b", re.M)
    for folder in ("datasets", "decoders"):
        for path in (ROOT / folder).rglob("*.py"):
            hit = pattern.search(path.read_text())
            assert hit is None, f"{path.relative_to(ROOT)} imports {hit.group(0).strip()}"


def test_decoders_hold_no_loss():
    """Search spaces and their mm adapters get losses from the task (``tasks/*/losses.py``); no loss type is
    written in ``decoders/``."""
    pattern = re.compile(r"type=[\"'][A-Za-z]*Loss[\"']")
    for path in (ROOT / "decoders").rglob("*.py"):
        hit = pattern.search(path.read_text())
        assert hit is None, f"{path.relative_to(ROOT)} configures a loss: {hit.group(0)}"


def test_tasks_import_no_sibling_task():
    """A task imports only itself and the shared modules of ``tasks/`` (dense.py, mmseg_backbone.py)."""
    pattern = re.compile(r"^\s*(?:from|import)\s+densenas\.tasks\.(\w+)", re.M)
    for task_dir in (p for p in (ROOT / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        for path in task_dir.rglob("*.py"):
            for name in pattern.findall(path.read_text()):
                assert name in (task_dir.name, "dense", "mmseg_backbone"), \
                    f"{path.relative_to(ROOT)} imports densenas.tasks.{name}"


#: the shipped spaces a task must never name (issue #25, item 1): it exports by output kind, through the space's
#: ``export_options`` / ``mm_fragment``.
SHIPPED_SPACES = ("auxcell", "template", "autodeeplab", "nasfpn", "nasfcos", "nasfcos_fpn", "nasfcos_head", "irnas")


def test_tasks_export_by_output_kind_never_by_space_name():
    """No file of ``tasks/`` compares an arch's space (or any string) with a shipped space's name, nor holds a
    table keyed by those names; the only place such a name may appear is a task's ``spaces = (...)`` declaration
    (``Task.spaces``: documentation and ``pick_task``)."""
    names = "|".join(SHIPPED_SPACES)
    compare = re.compile(r"\.space\s*(?:==|!=|\bin\b|\bnot in\b)\s*[\"'(\[{]|[\"']\s*(?:==|!=)\s*\w*\.?space\b")
    literal = re.compile(rf"[\"']({names})[\"']")
    for path in (ROOT / "tasks").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            assert not compare.search(line), f"compares a space name: {where}"
            if literal.search(line):
                assert re.match(r"\s*spaces\s*=\s*\(", line), f"names a shipped space: {where}"


def test_entry_points_find_every_task_and_space():
    from densenas.plugins import SPACES, TASKS, available, load
    from densenas.space import SearchSpace
    from densenas.task import Task

    assert {"segmentation", "detection", "restoration", "depth", "keypoints"} <= set(available(TASKS))
    assert {"auxcell", "autodeeplab", "irnas", "nasfcos", "nasfpn"} <= set(available(SPACES))
    for name in available(TASKS):
        cls = load(TASKS, name)
        assert issubclass(cls, Task) and cls.name == name and cls.spaces
        assert set(cls.spaces) <= set(available(SPACES))
    for name in available(SPACES):
        assert issubclass(load(SPACES, name), SearchSpace)


def test_unknown_task_names_the_key_and_closest_spelling():
    from densenas.plugins import PluginError
    from densenas.task import task_class

    with pytest.raises(PluginError, match=r"'task.type' is 'segmentaton' \(did you mean 'segmentation'\?\)"):
        task_class("segmentaton")


def test_pick_task_by_arch_space_and_baseline():
    from densenas.arch import Arch
    from densenas.task import pick_task

    assert pick_task(None, Arch("auxcell", {})).name == "segmentation"
    assert pick_task(None, Arch("nasfcos_fpn", {})).name == "detection"
    assert pick_task(None, Arch("irnas", {})).name == "restoration"
    assert pick_task(None, baseline="fpn_retinanet").name == "detection"
    # depth and keypoints also take aux-cell archs and FCN heads: without --task they stay segmentation's
    assert pick_task(None, baseline="fcn").name == "segmentation"
    assert pick_task("depth", Arch("auxcell", {})).name == "depth"
    assert pick_task(None, baseline="heatmap").name == "keypoints"
    with pytest.raises(ValueError, match="no tasks fit"):
        pick_task(None, Arch("nonsense", {}))


def _cfg(tmp_path, text):
    from densenas.config import load_config

    p = tmp_path / "c.py"
    p.write_text(text)
    return load_config(p)


BASE = ('task = dict(type="segmentation")\ndata = dict(layout="proxy", root="data/x")\n'
        'space = dict(type="auxcell")\nstrategy = dict(type="random")\nevaluator = dict(type="proxy")\n')


@pytest.mark.parametrize("change, match", [
    ('space = dict(type="nasfpn")', r"task.type='segmentation' cannot search space.type='nasfpn'"),
    ('strategy = dict(type="darts")', r"strategy.type='darts', evaluator.type='proxy' and space.type='auxcell'"),
    ('evaluator = dict(type="supernet")', r"evaluator.type='supernet'"),
    ('evaluator = dict(type="proxi")', r"'evaluator.type' is 'proxi'"),
    ('task = dict(type="segmentation", teacher=dict(iters=1), colour=1)', r"unknown key 'task.colour'"),
    ('space = dict(type="auxcell", widht=3)', r"unknown key 'space.widht' \(did you mean 'width'\?\)"),
    ('search = dict(epochs=3)', r"unknown key 'search.epochs'"),
    ('task = dict(kind="x")', r"'task.type' is required"),
])
def test_impossible_combinations_are_refused_before_any_data(tmp_path, change, match):
    from densenas.build import plan_search
    from densenas.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        plan_search(_cfg(tmp_path, BASE + change + "\n"))

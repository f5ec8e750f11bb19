"""Core: arch values, history, search loop (failures, duplicates, resume after SIGKILL), metrics."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densenas.arch import Arch, Decision, InvalidArch
from densenas.result import Result
from densenas.history import History
from densenas.loop import Budget, run
from densenas.strategies import RandomSearch
from densenas.tasks.segmentation.losses import confusion_matrix, seg_metrics, seg_reward
from toy import TARGET, ToyEvaluator, ToySpace

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ arch
def test_arch_json_round_trip_and_key():
    a = Arch("s", (("b", "conv3x3"), ("a", 2)))
    b = Arch.from_json(a.to_json())
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert list(b.as_dict()) == ["b", "a"]  # order kept
    assert Arch("s", {"a": 2, "b": "conv3x3"}).key == a.key  # key ignores order
    assert a.replace(a=1)["a"] == 1 and a["a"] == 2
    with pytest.raises(KeyError, match="zz"):
        a.replace(zz=1)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"choices": {}}', "'space'"),
    ('{"space": "s"}', "'choices'"),
    ('{"space": "s", "choices": {"a": [1]}}', "arch field 'a'"),
    ('{"space": "s", "format": 9, "choices": {}}', "'format'"),
])
def test_arch_malformed_json_names_field(text, match):
    with pytest.raises(InvalidArch, match=match):
        Arch.from_json(text, source="x.json")


def test_arch_invalid_for_space_names_decision(tmp_path):
    space = ToySpace()
    good = space.sample(__import__("numpy").random.default_rng(0))
    space.check(good)
    with pytest.raises(InvalidArch, match="'d1'.*7"):
        space.check(good.replace(d1=7))
    with pytest.raises(InvalidArch, match="misses decisions"):
        space.check(Arch("toy", (("d0", 1),)))
    with pytest.raises(InvalidArch, match="not 'toy'"):
        space.check(Arch("other", good.choices))
    p = tmp_path / "bad.json"
    p.write_text('{"space": "toy", "choices": {"d0": 1,')
    with pytest.raises(InvalidArch, match=str(p)):
        Arch.load(p)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Arch.load(tmp_path / "missing.json")


def test_decision_index_error():
    d = Decision("op", ("a", "b"))
    assert d.index("b") == 1
    with pytest.raises(InvalidArch, match="'op'.*'c'"):
        d.index("c")


# ---------------------------------------------------------------------------------------- metrics
def test_seg_metrics_against_hand_computed():
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    conf = confusion_matrix(pred, labels, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    m = seg_metrics(conf)
    iou = [1 / 3, 2 / 3, 2 / 3]  # tp / (gt + pred - tp)
    assert m["miou"] == pytest.approx(sum(iou) / 3)
    assert m["fwiou"] == pytest.approx(2 / 7 * iou[0] + 2 / 7 * iou[1] + 3 / 7 * iou[2])
    assert m["pixel_acc"] == pytest.approx(5 / 7)
    assert seg_reward(m) == pytest.approx((m["miou"] * m["fwiou"] * m["pixel_acc"]) ** (1 / 3))


# ------------------------------------------------------------------------------------ loop/history
def test_loop_records_every_candidate_and_survives_failures(tmp_path):
    space = ToySpace()
    rng = __import__("numpy").random.default_rng(1)
    bad, nan = space.sample(rng), space.sample(rng)
    ev = ToyEvaluator(fail_on={bad.key}, nan_on={nan.key})

    class Scripted(RandomSearch):
        def __init__(self):
            super().__init__(space, seed=0)
            self.script = [bad, nan]

        def propose(self):
            return self.script.pop(0) if self.script else super().propose()

    with History(tmp_path / "h.sqlite") as h:
        run(space, Scripted(), ev, h, Budget(candidates=12))
        rows = h.finished()
        assert len(rows) == 12 and len({c.arch.key for c in rows}) == 12
        assert rows[0].status == "failed" and "RuntimeError: boom" in rows[0].result.error
        assert rows[1].status == "failed" and "nan" in rows[1].result.error
        assert all(c.status == "ok" for c in rows[2:])
        assert h.best().result.reward == max(c.result.reward for c in rows[2:])
        assert [c.seed for c in rows] == list(range(12))
    assert len(ev.calls) == 12  # no arch trained twice


def _run_toy(work: Path, n: int, delay: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    return subprocess.Popen([sys.executable, str(HERE / "_toy_search.py"), str(work), str(n), str(delay)],
                            env=env)


def _finished(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM candidates WHERE status != 'running'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_resume_loses_and_reruns_nothing(tmp_path):
    n = 14
    ref = tmp_path / "ref"
    assert _run_toy(ref, n, 0.0).wait(120) == 0
    work = tmp_path / "killed"
    proc = _run_toy(work, n, 0.4)
    deadline = time.time() + 120
    while _finished(work / "history.sqlite") < 5 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # land inside a candidate's evaluation
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with History(work / "history.sqlite") as h:
        before = {c.id: (c.arch.key, c.result.reward, c.finished) for c in h.finished()}
        assert 5 <= len(before) < n
    assert _run_toy(work, n, 0.0).wait(120) == 0
    with History(work / "history.sqlite") as h, History(ref / "history.sqlite") as r:
        after = h.finished()
        assert len(after) == n and not h.running()
        for c in after:  # finished rows untouched: not lost, not re-run
            if c.id in before:
                assert before[c.id] == (c.arch.key, c.result.reward, c.finished)
        # controller state restored: the resumed search proposes exactly what an uninterrupted one did
        assert [c.arch.key for c in after] == [c.arch.key for c in r.finished()]
        assert [c.seed for c in after] == [c.seed for c in r.finished()]


def test_history_rejects_non_sqlite_file(tmp_path):
    p = tmp_path / "history.sqlite"
    p.write_text("this is not a database" * 100)
    with pytest.raises(ValueError, match=str(p)):
        History(p)


def test_result_round_trip():
    r = Result(reward=0.5, metrics={"miou": 0.4}, stage=2, cost={"params": 1.0}, wall_time=3.0)
    assert Result.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert not Result.failed("x").ok
    assert TARGET


def test_segmentation_reward_option_keeps_the_papers_geomean_one_option_away():
    from densenas.tasks.segmentation.task import SegmentationTask

    m = {"miou": 0.5, "fwiou": 0.8, "pixel_acc": 0.9}
    assert SegmentationTask().reward(m) == pytest.approx((0.5 * 0.8 * 0.9) ** (1 / 3))
    for kind in ("miou", "fwiou", "pixel_acc"):
        task = SegmentationTask(reward=kind)
        assert task.reward(m) == m[kind] and kind.split("_")[0][:3] in task.reward_label.lower()
    with pytest.raises(ValueError, match=r"task.reward='iou': use one of \['geomean', 'miou'"):
        SegmentationTask(reward="iou")


def test_decision_index_keeps_json_kinds_apart_and_refuses_unhashable_values():
    d = Decision("x", (1, True, 1.0, "1"))
    assert [d.index(v) for v in (1, True, 1.0, "1")] == [0, 1, 2, 3]  # equal in Python, not in JSON
    with pytest.raises(InvalidArch, match="value \\[1\\] is not one of"):
        d.index([1])  # a list from a hand-edited JSON: unhashable
    with pytest.raises(InvalidArch, match="value 2 is not one of"):
        d.index(2)


def test_memoized_decisions_are_built_once_and_handed_out_as_fresh_lists():
    from densenas.decoders.auxcell import AuxCellSpace

    space = AuxCellSpace(num_classes=3)
    first = space.decisions()
    first.clear()  # a caller's list is its own
    again = space.decisions()
    assert again and again == space.decisions() and again is not space.decisions()
    assert again[0] is space.decisions()[0]  # the Decision objects are built once
    other = AuxCellSpace(num_classes=3, num_cells=2)
    assert len(other.decisions()) < len(again)  # per instance, never shared across settings
    a = Arch("x", (("b", 2), ("a", 1)))
    assert a["a"] == 1 and a["b"] == 2
    with pytest.raises(KeyError, match="has no decision 'c'"):
        a["c"]

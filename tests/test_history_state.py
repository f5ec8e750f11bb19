"""The strategy state in the history is stored by parts, so a long search records in linear work.

Saved whole after every candidate, a state that grows by one trial per candidate made the history write
O(n^2) bytes over a search (Optuna: 265 kB per save at 200 candidates). Its long lists are now stored one
element per row, by content (:func:`densenas.history_codec.split_state`).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from densenas.history import History, HistoryError


def _written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _trial(i: int, state: str = "COMPLETE", note: int = 40) -> dict:
    return {"params": [i % 4, (i // 4) % 4, 1], "state": state, "values": [i / 7.0],
            "system_attrs": {"constraints": [0.0]}, "note": "x" * note}


def test_state_round_trips_through_parts(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        for n in (12, 30, 9, 3, 40):  # grows, shrinks below the split size, grows again
            state = {"trials": [_trial(i) for i in range(n)], "rng": {"state": [1, 2, 3]}, "pair": (1, 2),
                     "nan": [float("nan")] * 10, "tuples": [(i, "y" * 70) for i in range(10)],
                     "small": list(range(20))}
            h.save_state(state)
            back = h.strategy_state()
            assert back["trials"] == state["trials"] and back["pair"] == (1, 2) and back["small"] == state["small"]
            assert back["tuples"] == state["tuples"] and all(math.isnan(v) for v in back["nan"])
        rows = h.db.execute("SELECT count(*) FROM state_lists WHERE key='trials'").fetchone()[0]
        assert rows == 40  # tuples, NaN and small elements stay in the packed state
        assert h.db.execute("SELECT count(DISTINCT key) FROM state_lists").fetchone()[0] == 1
    with History(tmp_path / "h.sqlite") as h:  # a new connection reads the same state
        assert h.strategy_state()["trials"] == [_trial(i) for i in range(40)]


def test_a_changed_element_is_rewritten_in_place(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        trials = [_trial(i, "RUNNING") for i in range(10)]
        h.save_state({"trials": trials})
        trials[3] = _trial(3)
        h.save_state({"trials": trials})
        assert h.strategy_state()["trials"][3]["state"] == "COMPLETE"
        assert h.strategy_state()["trials"][4]["state"] == "RUNNING"


def test_saving_after_each_candidate_writes_what_changed(tmp_path):
    """Bytes written per save stay flat as the state grows (they grew with it when it was stored whole)."""
    per_save = []
    with History(tmp_path / "h.sqlite") as h:
        trials: list[dict] = []
        for i in range(400):
            trials.append(_trial(i, "RUNNING", note=400))
            trials[-1] = _trial(i, note=400)
            w0 = _written()
            h.save_state({"trials": trials, "rng": {"pos": i}})
            per_save.append(_written() - w0)
    early, late = sum(per_save[50:100]) / 50, sum(per_save[350:400]) / 50
    whole = len(repr(trials))  # what one save of the whole state would at least write at the end
    # SQLite writes whole pages (4 kB, twice with the WAL): a few per save, whatever the state's size
    assert late < 1.5 * early and late < whole / 4, (early, late, whole)


def test_a_missing_part_is_named(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        h.save_state({"trials": [_trial(i) for i in range(10)]})
        h.db.execute("DELETE FROM state_lists WHERE idx=4")
        with pytest.raises(HistoryError, match="h.sqlite.*'trials' should have 10 element.*holds 9"):
            h.strategy_state()
        h.save_state({"trials": [_trial(i) for i in range(10)]})  # a save repairs it
        h.db.execute("DELETE FROM state_blobs")
        with pytest.raises(HistoryError, match="missing from the state_blobs table"):
            h.strategy_state()

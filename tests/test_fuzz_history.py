"""Fuzzing the search history (issue 16): garbage in the columns of a ``history.sqlite`` row, garbage and
truncated SQLite files, and a disk that fills up (or a work dir that turns read-only) in the middle of a
write.

Whatever the damage, opening the history, reading its rows and resuming the search either work or raise
:class:`~densenas.history.HistoryError` (a ``ValueError``) naming the file, and the row where there is one
-- never a ``TypeError`` / ``json`` / ``struct`` error from inside a strategy or a report -- and the damage
never spreads: a refused resume changes no row, a failed write keeps nothing of itself and every row
committed before it, and a resume afterwards finishes the search with each arch evaluated once.

The searches are the loop tests' toy (5 decisions x 3 options, reward known in closed form, random
strategy), so one resume costs milliseconds. Hypothesis runs derandomized without an example database.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densenas.history import History, HistoryError
from densenas.loop import Budget, run
from densenas.strategies import build_strategy
from toy import ToyEvaluator, ToySpace, reward_of

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
N0, N = 4, 7  # finished candidates in the template history; total after a resume
COLUMNS = ("arch_json", "status", "reward", "metrics_json", "cost_json", "stage", "wall_time", "seed", "error",
           "started", "finished")
HERE = Path(__file__).resolve().parent
# every example copies a history and commits with fsync (synchronous=FULL): in memory where there is a tmpfs
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def search(path: Path, n: int, db_wrapper: Any = None) -> None:
    """Run (or resume) the toy search recorded in ``path`` up to ``n`` finished candidates."""
    space = ToySpace()
    with History(path) as h:
        if db_wrapper is not None:
            h.db = db_wrapper(h.db)
        run(space, build_strategy({"type": "random", "seed": 3}, space), ToyEvaluator(), h,
            Budget(candidates=n, seed=7))


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read with a plain connection (not through History)."""
    db = sqlite3.connect(str(path))
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in ("candidates", "meta", "steps")}
    finally:
        db.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A history file with N0 finished candidates and one left ``running`` (as after a kill)."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    search(path, N0)
    space = ToySpace()
    with History(path) as h:
        strategy = build_strategy({"type": "random", "seed": 3}, space)
        strategy.load_state_dict(h.strategy_state())
        arch = next(a for a in iter(strategy.propose, None) if h.lookup(a) is None)
        h.start(arch, seed=99, strategy_state=strategy.state_dict())
    assert not Path(str(path) + "-wal").exists()  # checkpointed on close: one file holds everything
    return path


def assert_sound(path: Path, n: int) -> None:
    """The history holds ``n`` finished candidates, each arch once, each reward the toy's for its arch."""
    with History(path) as h:
        done = h.finished()
        assert len(done) == n and not h.running()
        assert len({c.arch.key for c in done}) == n
        assert all(c.result.ok and c.result.reward == reward_of(c.arch) for c in done)


def assert_names(e: Exception, path: Path, row: int | None = None) -> None:
    msg = str(e)
    assert str(path) in msg, f"error does not name the file: {msg}"
    if row is not None:
        assert f"candidate {row}" in msg, f"error does not name candidate {row}: {msg}"


# ------------------------------------------------------------------------------ corrupt row columns
JUNK = st.one_of(
    st.binary(max_size=40), st.text(max_size=30), st.integers(-2**63, 2**63 - 1), st.floats(), st.none(),
    st.sampled_from(["ok", "failed", "running", "{}", "[]", "null", "NaN", '{"miou": "high"}', '{"a": [1]}',
                     '{"miou": 0.5}', '{"space": "toy", "choices": {}}', "[" * 5000, b"\xff\xfe{"]),
    st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                 max_leaves=6).map(json.dumps))


@settings(max_examples=200, **FUZZ)
@given(row=st.integers(1, N0 + 1), column=st.sampled_from(COLUMNS), value=JUNK)
def test_garbage_in_a_row(template, row, column, value):
    """Open, read every row, resume: each works, or raises HistoryError naming the file and the row;
    a refused resume leaves every row as it was, an accepted one finishes the search soundly."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        shutil.copy(template, path)
        db = sqlite3.connect(str(path))
        try:
            with db:
                db.execute(f"UPDATE candidates SET {column} = ? WHERE id = ?", (value, row))
        except sqlite3.IntegrityError:  # NOT NULL: SQLite itself keeps this garbage out
            return
        finally:
            db.close()
        before = dump(path)
        with History(path) as h:  # opening never reads a row
            try:
                rows = h.candidates()
            except HistoryError as e:
                assert_names(e, path, row)
                rows = None
        try:
            search(path, N)
        except HistoryError as e:
            assert_names(e, path, row)
            assert dump(path) == before, "a refused resume changed the history"
            return
        assert rows is not None, "the rows could not be read, but the resume read them"
        after = {r[0]: r for r in dump(path)["candidates"]}
        for r in before["candidates"]:
            assert r[3] == "running" or after[r[0]] == r, f"a resume rewrote finished candidate {r[0]}"
        assert_sound_but_the_damaged_row(path, row)


def assert_sound_but_the_damaged_row(path: Path, row: int) -> None:
    """After an accepted resume: N finished candidates, each arch once. The damaged row itself may hold a
    reward / metrics that are valid values but not the toy's (an edit SQLite cannot tell from a result)."""
    with History(path) as h:
        done = h.finished()
        assert len(done) == N and not h.running()
        assert len({c.arch.key for c in done}) == N
        assert all(c.result.reward == reward_of(c.arch) for c in done if c.id != row and c.result.ok)


@settings(max_examples=40, **FUZZ)
@given(value=JUNK, step=st.integers(-3, 5), column=st.sampled_from(("arch_json", "reward", "metrics_json",
                                                                      "cost_json", "wall_time", "finished")))
def test_garbage_in_a_step_row(template, value, step, column):
    """The steps table of one-shot runs: a garbage column is refused naming the file and the step."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        shutil.copy(template, path)
        with History(path) as h:
            c = h.candidates()[0]
            h.add_step(c.id, step, c.arch, c.result)
        db = sqlite3.connect(str(path))
        try:
            with db:
                db.execute(f"UPDATE steps SET {column} = ?", (value,))
        except sqlite3.IntegrityError:
            return
        finally:
            db.close()
        with History(path) as h:
            try:
                steps = h.steps()
                h.best_step()
            except HistoryError as e:
                assert_names(e, path, c.id)
                assert "step" in str(e)
                return
            assert len(steps) == 1 and steps[0].arch.space == "toy"


@settings(max_examples=30, **FUZZ)
@given(blob=st.binary(max_size=300) | st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02}q\x00."]),
       keep=st.integers(0, 4000))
def test_garbage_strategy_state(template, blob, keep):
    """A garbage (or truncated) strategy-state blob: the resume is refused naming the file, and nothing
    changes; the rows stay readable."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        shutil.copy(template, path)
        db = sqlite3.connect(str(path))
        with db:
            good = db.execute("SELECT value FROM meta WHERE key='strategy_state'").fetchone()[0]
            db.execute("UPDATE meta SET value = ? WHERE key = 'strategy_state'", (good[:keep] + blob,))
        db.close()
        before = dump(path)
        try:
            search(path, N)
        except ValueError as e:  # HistoryError, or the safe loader's CheckpointLoadError
            assert_names(e, path)
            assert dump(path) == before
        else:  # only a blob that still is the intact state (e.g. the whole of it plus nothing) may load
            assert before["meta"][0][1][:len(good)] == good or blob == b""
            assert_sound(path, N)
        with History(path) as h:
            assert len(h.finished()) >= N0


# ------------------------------------------------------------------------ damaged or foreign files
@settings(max_examples=100, **FUZZ)
@given(how=st.sampled_from(["truncate", "flip", "garbage", "zeros", "header_only"]), at=st.integers(0, 10**6),
       junk=st.binary(min_size=1, max_size=64))
def test_damaged_file(template, how, at, junk):
    """Truncated, bit-flipped, zeroed or foreign files: History(), reading and resuming either work or
    raise HistoryError naming the file."""
    data = bytearray(template.read_bytes())
    if how == "truncate":
        data = data[:at % len(data)]
    elif how == "flip":
        for i, b in enumerate(junk):
            data[(at + 977 * i) % len(data)] ^= b or 0xFF
    elif how == "garbage":
        data = bytearray(junk * (1 + at % 200))
    elif how == "zeros":
        data[at % len(data):at % len(data) + 4096] = bytes(4096)
    else:
        data = data[:100] + bytes(len(data) - 100)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        path.write_bytes(bytes(data))
        try:
            with History(path) as h:
                h.candidates()
                h.strategy_state()
            search(path, N)
        except ValueError as e:  # HistoryError (or the safe loader's error for the state blob)
            assert_names(e, path)
            return
        with History(path) as h:  # it worked: the search is complete (a damaged history may restart it)
            assert h.count() >= N


def test_not_a_history(tmp_path):
    """A directory, or an SQLite file of another program, where the history should be."""
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(HistoryError, match="dir.sqlite"):
        History(tmp_path / "dir.sqlite")
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(str(other))
    db.execute("CREATE TABLE candidates (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="other.sqlite.*not a densenas SQLite history"):
        History(other)


# ------------------------------------------------------------------- disk full / read-only mid-write
class FailingWrites:
    """Stands in for the history's sqlite3 connection; the ``fail_at``-th write statement (INSERT, UPDATE,
    COMMIT) raises ``OperationalError(message)`` as SQLite does when the disk fills up or the work dir
    turns read-only (``chmod`` cannot make that happen when the tests run as root)."""

    def __init__(self, db: sqlite3.Connection, fail_at: int, message: str, path: Path):
        self.db, self.fail_at, self.message, self.path, self.writes = db, fail_at, message, path, 0
        self.committed: dict[str, list[tuple]] = {}

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "COMMIT")):
            self.writes += 1
            if self.writes == self.fail_at:
                self.committed = dump(self.path)  # what another reader sees: the last committed state
                raise sqlite3.OperationalError(self.message)
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


FULL, READ_ONLY = "database or disk is full", "attempt to write a readonly database"


@settings(max_examples=40, **FUZZ)
@given(fail_at=st.integers(1, 20), message=st.sampled_from([FULL, READ_ONLY, "disk I/O error"]))
def test_write_fails_mid_search(template, fail_at, message):
    """A write fails at any statement of a resumed search: a clear HistoryError; the file stays readable
    with every committed row intact; a resume (space freed) finishes the search, each arch once."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        shutil.copy(template, path)
        before = dump(path)["candidates"]
        failing: list[FailingWrites] = []
        with pytest.raises(HistoryError) as e:
            search(path, N + 20, lambda db: failing.append(FailingWrites(db, fail_at, message, path)) or failing[0])
        assert_names(e.value, path)
        assert message in str(e.value) and "cannot record" in str(e.value) and "resume" in str(e.value)
        after = dump(path)
        assert after == failing[0].committed, "the failed write left part of itself, or lost a committed row"
        assert after["candidates"][:N0] == before[:N0], "a failed write changed a finished row"
        with History(path) as h:
            done = len(h.finished())
            assert done >= N0 and all(c.result.reward == reward_of(c.arch) for c in h.finished())
        search(path, done + 2)  # the interrupted candidate first, then new ones
        assert_sound(path, done + 2)


@settings(max_examples=15, **FUZZ)
@given(fail_at=st.integers(1, 12))
def test_same_history_goes_on_after_a_failed_write(template, fail_at):
    """In the same process, on the same History (the disk had a moment of fullness): after the failed write
    the connection holds no half transaction, reads show only committed rows, and the search goes on."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        path = Path(d) / "history.sqlite"
        shutil.copy(template, path)
        space = ToySpace()
        with History(path) as h:
            real, h.db = h.db, FailingWrites(h.db, fail_at, FULL, path)
            with pytest.raises(HistoryError):
                run(space, build_strategy({"type": "random", "seed": 3}, space), ToyEvaluator(), h,
                    Budget(candidates=N + 20, seed=7))
            committed, h.db = h.db.committed, real
            assert not h.db.in_transaction
            assert [(c.id, c.status) for c in h.candidates()] == [(r[0], r[3]) for r in committed["candidates"]]
            done = h.count()
            run(space, build_strategy({"type": "random", "seed": 3}, space), ToyEvaluator(), h,
                Budget(candidates=done + 2, seed=7))
        assert_sound(path, done + 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files; covered by FailingWrites")
def test_read_only_work_dir(template, tmp_path):
    path = tmp_path / "history.sqlite"
    shutil.copy(template, path)
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(HistoryError) as e:
            search(path, N)
        assert_names(e.value, path)
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)
    search(path, N)
    assert_sound(path, N)


FILL_UP = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
from test_fuzz_history import search
from densenas.history import HistoryError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    search({path!r}, 10_000)
except HistoryError as e:
    print("HistoryError:", e)
    sys.exit(3)
"""


def test_real_disk_full_in_a_subprocess(template, tmp_path):
    """The real thing: a search process whose files may not grow past a size limit (RLIMIT_FSIZE, as a
    full disk: writes fail with EFBIG) stops with a clear HistoryError; the history is readable, holds
    every row committed before, and a resume without the limit finishes the search."""
    path = tmp_path / "history.sqlite"
    shutil.copy(template, path)
    limit = template.stat().st_size + 24 * 1024  # room for a few commits to the write-ahead log
    code = FILL_UP.format(tests=str(HERE), limit=limit, path=str(path))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 3, p.stdout + p.stderr
    assert str(path) in p.stdout and "cannot record" in p.stdout, p.stdout
    with History(path) as h:
        done = len(h.finished())
        assert done >= N0 and all(c.result.reward == reward_of(c.arch) for c in h.finished())
    search(path, done + 3)
    assert_sound(path, done + 3)

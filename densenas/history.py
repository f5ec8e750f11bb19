"""Search history: every candidate of a search in one SQLite file, and the state to resume from.

Each candidate row holds its arch JSON, status (``running`` / ``ok`` / ``failed``), reward, metrics,
stage reached, wall time and seed. The strategy's ``state_dict`` is stored in the *same transaction* as the
row it belongs to, so a search killed at any instant (SIGKILL included) resumes from a consistent point:
finished candidates are never lost or re-run, and a candidate that was ``running`` when the process died
is evaluated again with the very arch that had been proposed.

A one-shot run (a DARTS supernet, Liu, Simonyan, Yang, ICLR 2019) is *one* candidate whose intermediate
results are rows of the ``steps`` table (candidate, step, arch derived after that step, reward, metrics,
cost, wall time), like Optuna's ``trial.report(value, step)``: the candidate row is finished with the
final arch and reward when the last step is done.

Stored states (strategy state, meta values) are ``torch.save`` bytes of plain data and tensors only, and
are read back with ``torch.load(weights_only=True)``. The strategy state's long lists (Optuna's trials, the
surrogate's observations) are stored by parts: each element once, by content, in ``state_blobs`` (JSON
text), and its position in ``state_lists``, so saving the state after a candidate writes what changed, not
the whole state again (:func:`~densenas.history_codec.split_state`).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .arch import Arch, InvalidArch
from .history_codec import (_CORRUPT, HistoryError, _number, _numbers_json, _pack, _sqlite_errors, _unpack,
                            join_state, split_state)
from .result import OVER_LIMIT, Result

RUNNING = "running"
_HELD = "held/"  # meta key prefix of a result kept until its row's turn (History.hold)
STATUSES = (RUNNING, "ok", "failed")
__all__ = ["History", "HistoryError", "Candidate", "Step", "RungRun", "RUNNING", "STATUSES"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    arch_key TEXT NOT NULL,
    arch_json TEXT NOT NULL,
    status TEXT NOT NULL,
    reward REAL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    cost_json TEXT NOT NULL DEFAULT '{}',
    stage INTEGER NOT NULL DEFAULT 0,
    wall_time REAL NOT NULL DEFAULT 0,
    seed INTEGER NOT NULL,
    error TEXT,
    started REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS candidates_key ON candidates(arch_key);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state_blobs (hash TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state_lists (key TEXT NOT NULL, idx INTEGER NOT NULL, hash TEXT NOT NULL,
                                        PRIMARY KEY (key, idx));
CREATE TABLE IF NOT EXISTS steps (
    candidate INTEGER NOT NULL REFERENCES candidates(id),
    step INTEGER NOT NULL,
    arch_json TEXT NOT NULL,
    reward REAL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    cost_json TEXT NOT NULL DEFAULT '{}',
    wall_time REAL NOT NULL DEFAULT 0,
    finished REAL NOT NULL,
    PRIMARY KEY (candidate, step)
);
CREATE TABLE IF NOT EXISTS rungs (
    candidate INTEGER NOT NULL REFERENCES candidates(id),
    rung INTEGER NOT NULL,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    reward REAL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    cost_json TEXT NOT NULL DEFAULT '{}',
    stage INTEGER NOT NULL DEFAULT 0,
    wall_time REAL NOT NULL DEFAULT 0,
    error TEXT,
    finished REAL NOT NULL,
    PRIMARY KEY (candidate, rung, repeat)
);
"""
_COLS = ("id, arch_json, status, reward, metrics_json, cost_json, stage, wall_time, seed, error, started, "
         "finished")


@dataclass
class Candidate:
    """One row of the history."""

    id: int
    arch: Arch
    status: str
    result: Result | None
    seed: int
    started: float
    finished: float | None


@dataclass
class Step:
    """One intermediate result of a candidate (an epoch of a supernet run).

    Attributes:
        candidate: id of the candidate row the step belongs to.
        step: 1-based step number (the epoch).
        arch: the arch derived after this step.
        result: reward, metrics, cost and wall time of the step (``result.stage == step``).
        finished: when the step was recorded (seconds since the epoch).
    """

    candidate: int
    step: int
    arch: Arch
    result: Result
    finished: float


@dataclass
class RungRun:
    """One training of a promoted candidate at a longer budget (:mod:`densenas.promotion`).

    Attributes:
        candidate: id of the candidate row.
        rung: the promotion rung (1 = the first budget above the search's own).
        repeat: 0-based index of the seed at this rung.
        seed: its training seed.
        result: reward, metrics, cost, stage and wall time (failed: ``reward`` None and ``error``).
        finished: when it was recorded (seconds since the epoch).
    """

    candidate: int
    rung: int
    repeat: int
    seed: int
    result: Result
    finished: float


def _result(where: str, status: str, reward: Any, metrics: Any, cost: Any, stage: Any, wall: Any, error: Any
            ) -> Result:
    """A finished row's :class:`Result`, every column checked (a corrupt one raises :class:`HistoryError`)."""
    if error is not None and not isinstance(error, str):
        raise HistoryError(f"{where}: column error holds {error!r:.60}, not text or NULL")
    return Result(status=status, reward=_number(reward, where, "reward", optional=True),
                  metrics=_numbers_json(metrics, where, "metrics_json"),
                  stage=_number(stage, where, "stage", integer=True), cost=_numbers_json(cost, where, "cost_json"),
                  wall_time=_number(wall, where, "wall_time"), error=error)


def history_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else ``path/history.sqlite`` (a search's work dir)."""
    path = Path(path)
    return path / "history.sqlite" if path.is_dir() else path


def read_results(path: str | Path) -> list[tuple[Arch, float]]:
    """The finished candidates of an earlier search's ``history.sqlite`` as ``(arch, reward)``, in row order
    (``strategy.prior`` of a search config: a transfer prior for the surrogate). The file is opened
    read-only, so a search still writing it is not disturbed; failed rows are left out.

    Raises:
        HistoryError: the file is missing, not a densenas history, or a row's arch cannot be read (named).
    """
    path = history_file(path)
    if not path.is_file():
        raise HistoryError(f"{path}: no such history file (give a search's work dir or its history.sqlite)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, arch_json, reward FROM candidates WHERE status = 'ok' "
                              "AND reward IS NOT NULL ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise HistoryError(f"{path}: not a densenas history ({e})") from None
    out = []
    for cid, arch_json, reward in rows:
        try:
            out.append((Arch.from_json(arch_json), float(reward)))
        except (ValueError, TypeError, KeyError, InvalidArch) as e:
            raise HistoryError(f"{path}: candidate #{cid}: unreadable arch ({e})") from None
    return out


class History:
    """SQLite-backed record of a search (``<work_dir>/history.sqlite``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            # UnicodeDecodeError: a damaged header page can make SQLite hand back undecodable text (found by
            # tests/test_fuzz_history.py flipping bits)
            raise HistoryError(f"history file {self.path} is not a densenas SQLite history: {e}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        (key, _pack(value, f"meta {key!r}")))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else _unpack(row[0], f"{self.path} (meta row {key!r})")

    @_sqlite_errors("keep a result until its turn")
    def hold(self, cid: int, result: Result) -> None:
        """Keep the result of running row ``cid`` that came back before older rows (pipeline mode records in row
        order), so a kill before its turn does not lose it: a resume records it without training it again.
        :meth:`finish` drops it."""
        self.set_meta(f"{_HELD}{cid}", result.to_dict())

    @_sqlite_errors("read the results kept until their turn")
    def held(self) -> dict[int, Result]:
        """``{row id: result}`` of the running rows whose results were kept by :meth:`hold`."""
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (_HELD + "%",)).fetchall()
        return {int(k[len(_HELD):]): Result.from_dict(_unpack(v, f"{self.path} (meta row {k!r})")) for k, v in rows}

    # ------------------------------------------------------------ candidates
    @_sqlite_errors("record a new candidate")
    def start(self, arch: Arch, seed: int, strategy_state: dict | None = None) -> int:
        """Record a proposed candidate as running (with the strategy state after proposing it)."""
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO candidates(arch_key, arch_json, status, seed, started) VALUES (?,?,?,?,?)",
                (arch.key, arch.to_json(indent=None), RUNNING, seed, time.time()))
            if strategy_state is not None:
                self._set_state(strategy_state)
            return int(cur.lastrowid)

    @_sqlite_errors("record the result of a candidate")
    def finish(self, cid: int, result: Result, strategy_state: dict | None = None,
               arch: Arch | None = None) -> None:
        """Store a candidate's result and, atomically with it, the strategy state after observing it.

        ``arch`` replaces the row's arch (a one-shot run ends with the arch derived after its last step).
        """
        reward = result.reward if result.ok else None
        with self._tx():
            self.db.execute(
                "UPDATE candidates SET status=?, reward=?, metrics_json=?, cost_json=?, stage=?, "
                "wall_time=?, error=?, finished=? WHERE id=?",
                (result.status, reward, json.dumps(result.metrics), json.dumps(result.cost),
                 result.stage, result.wall_time, result.error, time.time(), cid))
            self.db.execute("DELETE FROM meta WHERE key = ?", (f"{_HELD}{cid}",))
            if arch is not None:
                self.db.execute("UPDATE candidates SET arch_key=?, arch_json=? WHERE id=?",
                                (arch.key, arch.to_json(indent=None), cid))
            if strategy_state is not None:
                self._set_state(strategy_state)

    @_sqlite_errors("record the reopening of a candidate")
    def reopen(self, cid: int) -> None:
        """Mark a finished candidate ``running`` again (a one-shot run resumed for more steps, or after
        the failure of a step it restarts from its last good step)."""
        self.db.execute("UPDATE candidates SET status=?, error=NULL, finished=NULL WHERE id=?",
                        (RUNNING, cid))

    # ----------------------------------------------------------------- steps
    @_sqlite_errors("record a step")
    def add_step(self, cid: int, step: int, arch: Arch, result: Result,
                 strategy_state: dict | None = None) -> bool:
        """Record step ``step`` of candidate ``cid`` (idempotent: a step already there is kept as is).

        Returns:
            Whether the step was new.
        """
        reward = result.reward if result.ok else None
        with self._tx():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO steps(candidate, step, arch_json, reward, metrics_json, cost_json, "
                "wall_time, finished) VALUES (?,?,?,?,?,?,?,?)",
                (cid, int(step), arch.to_json(indent=None), reward, json.dumps(result.metrics),
                 json.dumps(result.cost), result.wall_time, time.time()))
            if strategy_state is not None and cur.rowcount:
                self._set_state(strategy_state)
        return bool(cur.rowcount)

    @_sqlite_errors("read the steps")
    def steps(self, cid: int | None = None) -> list[Step]:
        """Recorded steps (of candidate ``cid``, or of all candidates), in order."""
        out = []
        for c, n, arch_json, reward, metrics, cost, wall, finished in self._of_candidate(
                "SELECT candidate, step, arch_json, reward, metrics_json, cost_json, wall_time, finished FROM steps",
                cid, "candidate, step"):
            where = f"history file {self.path}, candidate {c} step {n}"
            c = _number(c, where, "candidate", integer=True)
            try:
                arch = Arch.from_json(arch_json, source=where)
            except InvalidArch as e:
                raise HistoryError(f"{e} (column arch_json of the steps table; {_CORRUPT})") from None
            n, wall = _number(n, where, "step", integer=True), _number(wall, where, "wall_time")
            reward = _number(reward, where, "reward", optional=True)
            result = (Result(reward=reward, metrics=_numbers_json(metrics, where, "metrics_json"), stage=n,
                             cost=_numbers_json(cost, where, "cost_json"), wall_time=wall)
                      if reward is not None else Result.failed("no reward", stage=n, wall_time=wall))
            out.append(Step(c, n, arch, result, _number(finished, where, "finished")))
        return out

    def best_step(self, cid: int | None = None) -> Step | None:
        """The step with the highest reward (the earliest among equals)."""
        ok = [s for s in self.steps(cid) if s.result.ok]
        return max(ok, key=lambda s: (s.result.reward, -s.candidate, -s.step)) if ok else None

    # ----------------------------------------------------------------- rungs
    @_sqlite_errors("record a promoted training")
    def add_rung(self, cid: int, rung: int, repeat: int, seed: int, result: Result) -> bool:
        """Record the training of candidate ``cid`` at promotion ``rung`` with seed number ``repeat``
        (idempotent: one already there is kept as is). Returns whether it was new."""
        reward = result.reward if result.ok else None
        status = "ok" if result.ok else "failed"
        cur = self.db.execute(
            "INSERT OR IGNORE INTO rungs(candidate, rung, repeat, seed, status, reward, metrics_json, cost_json, "
            "stage, wall_time, error, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (cid, int(rung), int(repeat), int(seed), status, reward, json.dumps(result.metrics),
             json.dumps(result.cost), int(result.stage), result.wall_time, result.error, time.time()))
        return bool(cur.rowcount)

    @_sqlite_errors("read the promoted trainings")
    def rung_runs(self, cid: int | None = None) -> list[RungRun]:
        """Recorded promoted trainings (of candidate ``cid``, or all), by candidate, rung and repeat."""
        out = []
        for (c, rung, rep, seed, status, reward, metrics, cost, stage, wall, error,
             finished) in self._of_candidate("SELECT candidate, rung, repeat, seed, status, reward, metrics_json, "
                                             "cost_json, stage, wall_time, error, finished FROM rungs", cid,
                                             "candidate, rung, repeat"):
            where = f"history file {self.path}, candidate {c} rung {rung} repeat {rep}"
            if status not in ("ok", "failed"):
                raise HistoryError(f"{where}: column status holds {status!r:.60}, not 'ok' or 'failed'")
            result = _result(where, status, reward, metrics, cost, stage, wall, error)
            out.append(RungRun(_number(c, where, "candidate", integer=True), _number(rung, where, "rung", integer=True),
                               _number(rep, where, "repeat", integer=True), _number(seed, where, "seed", integer=True),
                               result, _number(finished, where, "finished")))
        return out

    def _of_candidate(self, query: str, cid: int | None, order: str) -> list[tuple]:
        """The rows of ``query`` (of candidate ``cid`` when given), ordered by ``order``."""
        if cid is None:
            return self.db.execute(f"{query} ORDER BY {order}").fetchall()
        return self.db.execute(f"{query} WHERE candidate = ? ORDER BY {order}", (cid,)).fetchall()

    @_sqlite_errors("record the strategy state")
    def save_state(self, strategy_state: dict) -> None:
        with self._tx():
            self._set_state(strategy_state)

    @_sqlite_errors("read the strategy state")
    def strategy_state(self) -> dict | None:
        state = self.get_meta("strategy_state")
        if state is not None and not isinstance(state, dict):  # only ever written from a state_dict()
            raise HistoryError(f"history file {self.path}: the stored strategy state is a "
                               f"{type(state).__name__}, not a dict (a damaged meta row): restore the file from a "
                               f"copy or start afresh")
        return None if state is None else join_state(state, self._list, self._blobs, f"history file {self.path}")

    def _list(self, key: str) -> list[str]:
        return [h for (h,) in self.db.execute("SELECT hash FROM state_lists WHERE key=? ORDER BY idx", (key,))]

    def _blobs(self, hashes: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        wanted = sorted(set(hashes))
        for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            part = wanted[i:i + 500]
            out.update(self.db.execute(f"SELECT hash, value FROM state_blobs WHERE hash IN "
                                       f"({','.join('?' * len(part))})", part).fetchall())
        return out

    def _set_state(self, state: dict) -> None:
        skeleton, lists, blobs = split_state(state)
        # what is already stored is read, not written again (read from the file rather than remembered:
        # a rolled-back transaction would leave a memory of it wrong)
        self.db.executemany("INSERT OR IGNORE INTO state_blobs(hash, value) VALUES (?, ?)", blobs.items())
        for key, hashes in lists.items():
            stored = dict(self.db.execute("SELECT idx, hash FROM state_lists WHERE key=?", (key,)))
            self.db.executemany("INSERT OR REPLACE INTO state_lists(key, idx, hash) VALUES (?, ?, ?)",
                                [(key, i, h) for i, h in enumerate(hashes) if stored.get(i) != h])
            if len(stored) > len(hashes):
                self.db.execute("DELETE FROM state_lists WHERE key=? AND idx>=?", (key, len(hashes)))
        self.db.execute(f"DELETE FROM state_lists WHERE key NOT IN ({','.join('?' * len(lists))})", list(lists))
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('strategy_state', ?)",
                        (_pack(skeleton, "strategy state"),))

    def _tx(self):
        db = self.db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, typ, *_: Any) -> None:
                if typ is None:
                    try:
                        db.execute("COMMIT")
                        return
                    except sqlite3.Error:  # e.g. disk full at commit: undo the whole write, then raise
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                if db.in_transaction:  # SQLite may already have rolled back itself (SQLITE_FULL)
                    db.execute("ROLLBACK")
        return _Tx()

    # --------------------------------------------------------------- queries
    def _row(self, r: tuple) -> Candidate:
        """A candidate row, every column checked: a corrupt one raises :class:`HistoryError` naming the file
        and the row (never a ``TypeError`` deep inside a strategy or a report later)."""
        (cid, arch_json, status, reward, metrics, cost, stage, wall, seed, error, started,
         finished) = r
        where = f"history file {self.path}, candidate {cid}"
        cid = _number(cid, where, "id", integer=True)  # NULL when a damaged schema lost the rowid alias
        try:
            arch = Arch.from_json(arch_json, source=where)
        except InvalidArch as e:
            raise HistoryError(f"{e} (column arch_json; {_CORRUPT})") from None
        if status not in STATUSES:
            raise HistoryError(f"{where}: column status holds {status!r:.60}, not one of {list(STATUSES)}")
        seed = _number(seed, where, "seed", integer=True)
        started = _number(started, where, "started")
        finished = _number(finished, where, "finished", optional=True)
        result = None if status == RUNNING else _result(where, status, reward, metrics, cost, stage, wall, error)
        return Candidate(cid, arch, status, result, seed, started, finished)

    @_sqlite_errors("read the candidates")
    def candidates(self, status: str | None = None) -> list[Candidate]:
        q = f"SELECT {_COLS} FROM candidates"
        args: tuple = ()
        if status is not None:
            q += " WHERE status = ?"
            args = (status,)
        return [self._row(r) for r in self.db.execute(q + " ORDER BY id", args).fetchall()]

    def check(self) -> int:
        """Read every candidate and step row once, so a resume refuses a damaged history before it writes
        anything. Returns the number of candidate rows.

        Raises:
            HistoryError: the first corrupt row (named with the file), or an unreadable file.
        """
        n = len(self.candidates())
        self.steps()
        self.rung_runs()
        return n

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates())

    def finished(self) -> list[Candidate]:
        return [c for c in self.candidates() if c.status != RUNNING]

    def running(self) -> list[Candidate]:
        return self.candidates(RUNNING)

    @_sqlite_errors("read a candidate")
    def get(self, cid: int) -> Candidate:
        row = self.db.execute(f"SELECT {_COLS} FROM candidates WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no candidate #{cid}")
        return self._row(row)

    @_sqlite_errors("look up an arch")
    def lookup(self, arch: Arch) -> Candidate | None:
        """The finished candidate with this arch, if any (so an arch is never trained twice)."""
        row = self.db.execute(
            f"SELECT {_COLS} FROM candidates WHERE arch_key = ? AND status != ? ORDER BY id LIMIT 1",
            (arch.key, RUNNING)).fetchone()
        return None if row is None else self._row(row)

    @_sqlite_errors("count the candidates")
    def count(self, finished_only: bool = True, counted_only: bool = False) -> int:
        """Rows; ``finished_only``: not running; ``counted_only``: without the candidates rejected before
        training by a hard cost limit (:data:`~densenas.result.OVER_LIMIT`: not part of a search's budget)."""
        where = (["status != 'running'"] if finished_only else []) + (
            ["NOT (status = 'failed' AND COALESCE(error, '') LIKE ? || '%')"] if counted_only else [])
        q = "SELECT COUNT(*) FROM candidates" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.db.execute(q, (OVER_LIMIT,) if counted_only else ()).fetchone()[0])

    @_sqlite_errors("read the best candidate")
    def best(self) -> Candidate | None:
        row = self.db.execute(
            "SELECT id FROM candidates WHERE status='ok' AND reward IS NOT NULL "
            "ORDER BY reward DESC, id ASC LIMIT 1").fetchone()
        return None if row is None else self.get(row[0])

    def leaderboard(self, top: int = 10) -> list[Candidate]:
        ok = [c for c in self.candidates("ok") if c.result and c.result.reward is not None]
        return sorted(ok, key=lambda c: (-c.result.reward, c.id))[:top]

"""Kill the driver of a parallel search with candidates in flight and resume it (densenas/loop.py with the
executors of densenas/parallel.py); one real ``tools/search.py --workers 2`` search end to end (slow).

Run as a script, this file is the driver the SIGKILL test starts:
``python tests/test_parallel_resume.py WORK_DIR N HOLD_FROM`` (2 Ray workers, batch mode, toy space).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script: the tests folder (toy, test_parallel)

from test_parallel import MeanToy, descendants, ray, rows, search, toy  # noqa: E402  (sets the loopback env)

from densenas.history import History  # noqa: E402
from densenas.parallel import InProcessExecutor, ParallelCfg, make_executor  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED, STRATEGY = 3, "surrogate"


class GateToy(MeanToy):
    """Candidates with seed >= ``hold_from`` wait for ``<work>/gate`` (the test kills the driver meanwhile)."""

    def __init__(self, work: str, hold_from: int):
        super().__init__(calls_file=f"{work}/calls.txt")
        self.gate, self.hold_from = Path(work) / "gate", hold_from

    def evaluate(self, arch, seed=0):
        if seed >= self.hold_from and not self.gate.exists():
            with open(self.calls_file, "a") as f:
                f.write(f"{seed} {arch.key}\n")
            deadline = time.monotonic() + 120
            while not self.gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError("the driver was not killed")
        return super().evaluate(arch, seed)


def driver(work: Path, n: int, hold_from: int, mode: str = "batch") -> None:
    """One search process: 2 Ray workers of 1 thread, ``mode`` with batch (or depth) 2."""
    from densenas.loop import Budget, default_hooks, run

    space, ev = toy.ToySpace(), GateToy(str(work), hold_from)
    ex = make_executor(ParallelCfg(workers=2, cpus_per_worker=1), ev, space, log=print)
    try:
        with History(work / "history.sqlite") as h:
            run(space, build_strategy({"type": STRATEGY, "seed": SEED}, space), ev, h,
                Budget(candidates=n, seed=SEED, batch=2, mode=mode), executor=ex,
                hooks=default_hooks(print, live=False))
    finally:
        ex.close()


def _calls(work: Path) -> list[tuple[int, str]]:
    path = work / "calls.txt"
    return [(int(s), k) for s, k in (ln.split(" ", 1) for ln in path.read_text().splitlines())] \
        if path.exists() else []


def _start(work: Path, n: int, hold_from: int, mode: str = "batch") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(work), str(n), str(hold_from), mode], cwd=ROOT,
                            stdout=open(work / f"out{len(list(work.glob('out*')))}.txt", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _cleanup(work: Path, pids: set[int]) -> None:
    """Kill what the killed driver left (by pid: its Ray processes should die with it) and its temp dirs."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for out in work.glob("out*.txt"):
        for line in out.read_text().splitlines():
            if "temp dir /tmp/densenas_ray_" in line:
                tmp = line.split("temp dir ")[1].split(")")[0]
                subprocess.run(["rm", "-rf", tmp], check=False)


@pytest.mark.parametrize("mode", ["batch", "pipeline"])
def test_sigkill_with_candidates_in_flight_then_resume_reruns_only_those(tmp_path, mode):
    # batch: batch 1 (seeds 3, 4) finishes, batch 2 (5, 6) is in flight when killed; pipeline: 3 and 4 are
    # recorded, 5 and 6 (proposed as each was recorded) are in flight
    n, hold_from = 8, SEED + 2
    ref = search(tmp_path / "ref.sqlite", InProcessExecutor(MeanToy(), toy.ToySpace()), n, 2, strategy=STRATEGY,
                 seed=SEED, mode=mode)
    work = tmp_path / "run"
    work.mkdir()
    pids: set[int] = set()
    proc = _start(work, n, hold_from, mode)
    try:
        deadline = time.monotonic() + 120
        while len(_calls(work)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_calls(work)) == 4, (work / "out0.txt").read_text()
        pids = descendants(proc.pid)
        with History(work / "history.sqlite") as h:
            running, done_before = h.running(), {c.id: c.finished for c in h.finished()}
        assert [c.seed for c in running] == [5, 6] and len(done_before) == 2
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # Ray's processes share the driver's fate
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        assert not left, f"processes left after the driver was killed: {left}"

        (work / "gate").touch()
        proc = _start(work, n, hold_from, mode)
        assert proc.wait(timeout=180) == 0, (work / "out1.txt").read_text()
        out = (work / "out1.txt").read_text()
        assert "resuming: 2 finished, 2 interrupted candidate(s)" in out
        calls = _calls(work)
        again = calls[4:]
        assert sorted(again[:2]) == sorted((c.seed, c.arch.key) for c in running)  # the same archs and seeds
        assert sorted(s for s, _ in calls) == sorted([3, 4, 5, 6] + list(range(5, SEED + n)))
        got = rows(work / "history.sqlite")
        assert got == rows(tmp_path / "ref.sqlite")  # the strategy state was restored: the same search
        with History(work / "history.sqlite") as h:
            assert {c.id: c.finished for c in h.finished() if c.id in done_before} == done_before
        assert ref.done == n
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _cleanup(work, pids)


def test_in_process_batch_resume_after_a_kill_mid_batch(tmp_path):
    """No Ray: ``parallel.batch=2`` in one process, killed inside the second candidate of batch 2."""

    class Killed(BaseException):
        pass

    class Dying(MeanToy):
        def evaluate(self, arch, seed=0):
            if seed == SEED + 3:
                raise Killed()
            return super().evaluate(arch, seed)

    n, space = 8, toy.ToySpace()
    search(tmp_path / "ref.sqlite", InProcessExecutor(MeanToy(), space), n, 2, strategy=STRATEGY, seed=SEED)
    try:
        search(tmp_path / "h.sqlite", InProcessExecutor(Dying(), space), n, 2, strategy=STRATEGY, seed=SEED)
    except Killed:
        pass
    with History(tmp_path / "h.sqlite") as h:
        assert [c.seed for c in h.running()] == [SEED + 2, SEED + 3] and h.count() == 2
    lines: list[str] = []
    search(tmp_path / "h.sqlite", InProcessExecutor(MeanToy(), space), n, 2, strategy=STRATEGY, seed=SEED,
           log=lines.append)
    assert rows(tmp_path / "h.sqlite") == rows(tmp_path / "ref.sqlite")
    assert lines[0] == "resuming: 2 finished, 2 interrupted candidate(s)"


@pytest.mark.slow
def test_search_tool_with_two_workers_end_to_end(tmp_path):
    from test_tools import tiny_opts

    work = tmp_path / "w"
    res = subprocess.run([sys.executable, "tools/search.py", "configs/search/auxcell_proxy.py", "--work-dir",
                          str(work), "--workers", "2", "--cfg-options", *tiny_opts(tmp_path, n=4)], cwd=ROOT,
                         capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = (work / "search.log").read_text()
    assert "ray: 2 workers ready" in log and "evaluator shipped once to the object store" in log
    assert log.count(" ran on w") == 4 and "4 candidates in" in log
    assert "workers: 2; parallel.mode=pipeline: 2 in flight, recorded in row order" in log  # the default mode
    for name in ("best_arch.json", "leaderboard.md", "leaderboard.csv", "history.sqlite"):
        assert (work / name).is_file()
    got = rows(work / "history.sqlite")
    assert len(got) == 4 and [r[2] for r in got] == [0, 1, 2, 3]
    temp = log.split("temp dir ")[1].split(")")[0]
    assert temp.startswith("/tmp/densenas_ray_") and not Path(temp).exists()  # removed with the instance


if __name__ == "__main__":
    assert not ray.is_initialized()
    driver(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])

"""The many-decision tables of ``benchmarks/bench_transnas.py`` (CPU, seconds).

The history table (``--history``: the finished aux-cell archs of our own searches, 16 decisions) and the
composed TransNAS table (``--compose``: several 6-decision micro cells side by side): the loader builds a
valid :class:`densenas.space.TableSpace` from search histories without writing to them, averages the
rewards of an arch trained twice, the sparse table's mutation stays in the table, every strategy runs a
short search on the history table and the surrogate one on the composed table.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from _tools import load_script

from densenas.arch import InvalidArch
from densenas.decoders.auxcell import AuxCellSpace
from densenas.history import History
from densenas.result import Result

bench = load_script("benchmarks/bench_transnas.py", "bench_transnas_tabular")


def write_histories(tmp_path: Path) -> tuple[list[Path], dict[str, list[float]]]:
    """Two small aux-cell histories sharing one arch (two rewards), with a failed candidate each."""
    space = AuxCellSpace(num_classes=5, width=48)
    rng = np.random.default_rng(0)
    archs = list({a.key: a for a in (space.sample(rng) for _ in range(14))}.values())[:12]
    rewards: dict[str, list[float]] = {}
    paths = []
    for h, chunk in enumerate((archs[:7], archs[6:])):  # archs[6] is in both
        path = tmp_path / f"run{h}" / "history.sqlite"
        with History(path) as hist:
            for i, arch in enumerate(chunk):
                reward = float(rng.uniform(0.3, 0.8))
                cid = hist.start(arch, seed=h)
                hist.finish(cid, Result(reward=reward, cost={"params": 1e6 + 1e4 * i, "madds": 1e8}))
                rewards.setdefault(arch.key, []).append(reward)
            cid = hist.start(space.sample(rng), seed=h)
            hist.finish(cid, Result(status="failed", error="diverged"))
        paths.append(path.parent if h == 0 else path)  # a work dir and a history file
    return paths, rewards


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_history_table_is_a_valid_table_space(tmp_path):
    paths, rewards = write_histories(tmp_path)
    files = [bench.history_file(p) for p in paths]
    before = [digest(f) for f in files]
    space, rows = bench.load_history_space(paths)
    assert [digest(f) for f in files] == before  # read from copies: never written
    assert len(space.decisions()) == 16 and len(rows) == len(rewards) == 12
    assert set(space.table) == set(rows) == set(rewards)
    twice = [k for k, v in rewards.items() if len(v) == 2]
    assert len(twice) == 1
    assert rows[twice[0]]["val"] == pytest.approx(np.mean(rewards[twice[0]]))
    assert rows[twice[0]]["runs"] == 2
    for key, row in rows.items():
        assert space.table[key] == row["val"] and row["params"] >= 1e6
    rng = np.random.default_rng(1)
    for _ in range(20):
        space.check(space.sample(rng))  # uniform over the table's archs
    outside = AuxCellSpace(num_classes=5, width=48).sample(np.random.default_rng(99))
    if outside.key not in space.table:
        with pytest.raises(InvalidArch):
            space.check(outside)


def test_history_table_rejects_other_decisions(tmp_path):
    paths, _ = write_histories(tmp_path)
    small = AuxCellSpace(num_classes=5, width=48, num_cells=2).decisions()
    with pytest.raises(SystemExit, match="does not fit"):
        bench.load_history_space(paths, decisions=small)
    with pytest.raises(SystemExit, match="no history file"):
        bench.load_history_space([tmp_path / "missing"])


def test_listed_table_mutation_stays_in_the_table(tmp_path):
    paths, _ = write_histories(tmp_path)
    space, rows = bench.load_history_space(paths)
    base = space.sample(np.random.default_rng(0))
    neighbour = base.replace(**{"tmpl.b0.merge": "sum" if base["tmpl.b0.merge"] == "concat" else "concat"})
    space.table = {**space.table, neighbour.key: 0.5}
    child = space.mutate(base, np.random.default_rng(0))
    assert child.key == neighbour.key  # the only listed one-decision neighbour
    space.table = {base.key: 0.5}
    with pytest.raises(RuntimeError, match="no valid mutation"):
        space.mutate(base, np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["random", "evolution", "reinforce", "surrogate", "surrogate+params"])
def test_strategies_run_on_the_history_table(tmp_path, kind):
    paths, _ = write_histories(tmp_path)
    space, rows = bench.load_history_space(paths)
    (label, base, column), = bench.parse_strategies(kind)
    warm = (column, 16, 3) if column else None
    curve, proposals, distinct, _ = bench.run_search({"type": base, "seed": 0}, space, rows, 8, 160, warm)
    assert distinct == 8 and proposals >= 8
    assert (np.diff(curve) >= 0).all() and curve[-1] <= max(r["val"] for r in rows.values())


def test_composed_table_and_a_short_search():
    table = bench.DEFAULT_TABLE
    if not table.is_file():
        pytest.skip(f"no TransNAS-Bench-101 table at {table}")
    space, rows, top = bench.load_composed(table, ["segmentsemantic", "normal"])
    assert len(space.decisions()) == 12 and space.size() == 711 ** 2
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    space.check(space.mutate(arch, rng))
    expected = []
    for block, task in enumerate(["segmentsemantic", "normal"]):  # the mean of the standardised vals
        cell_space, cells = bench.load_space(table, task)
        vals = np.asarray([r["val"] for r in cells.values()])
        val = cells[cell_space.from_indices(space.split(arch)[block]).key]["val"]
        expected.append((val - vals.mean()) / vals.std())
        assert max(space.blocks[block].values()) == pytest.approx((vals.max() - vals.mean()) / vals.std())
    assert rows[arch.key]["val"] == pytest.approx(np.mean(expected)) and rows[arch.key]["val"] <= top
    curve, _, distinct, _ = bench.run_search({"type": "surrogate", "seed": 0}, space, rows, 8, 160)
    assert distinct == 8 and (np.diff(curve) >= 0).all() and curve[-1] <= top


def test_main_runs_on_a_history_table(tmp_path, capsys):
    paths, _ = write_histories(tmp_path)
    out = tmp_path / "report.json"
    bench.main(["--history", *map(str, paths), "--seeds", "2", "--budget", "6", "--at", "3,6",
                "--strategies", "random,surrogate", "--out", str(out)])
    text = capsys.readouterr().out
    assert "history table (2 searches): 12 archs, 16 decisions" in text
    report = json.loads(out.read_text())["tasks"]["history"]
    assert set(report["strategies"]) == {"random", "surrogate"}
    with pytest.raises(SystemExit, match="exceeds"):
        bench.main(["--history", *map(str, paths), "--budget", "50", "--at", "10"])

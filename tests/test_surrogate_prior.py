"""The surrogate's transfer prior (densenas/strategies/surrogate.py: ``set_prior``; ``strategy.prior`` of a
search config): results of an earlier search of the same space help the first proposals, a prior that ranks
the other way is dropped, the prior is part of the resumable state, and bad paths are refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from densenas.arch import Arch, Decision
from densenas.config import ConfigError
from densenas.history import History, HistoryError, read_results
from densenas.result import Result
from densenas.space import TableSpace
from densenas.strategies import SurrogateSearch, build_strategy

OPTS = ("a", "b", "c", "d")


def space() -> TableSpace:
    return TableSpace("toy", [Decision(f"d{i}", OPTS) for i in range(8)])


def reward(arch: Arch) -> float:
    """An additive toy with a known optimum: all decisions 'c' (8.0)."""
    return float(sum(v == "c" for _, v in arch.choices) + 0.3 * sum(v == "b" for _, v in arch.choices))


def earlier(n: int, fn=reward, seed: int = 99) -> list[tuple[Arch, float]]:
    rng = np.random.default_rng(seed)
    archs = {a.key: a for a in (space().sample(rng) for _ in range(n))}
    return [(a, fn(a)) for a in archs.values()]


def best_after(s: SurrogateSearch, n: int) -> float:
    best = -np.inf
    for _ in range(n):
        arch = s.propose()
        best = max(best, reward(arch))
        s.observe(arch, Result(reward=reward(arch)))
    return best


def test_a_prior_from_a_related_search_finds_the_optimum_in_the_first_proposals():
    """Without a prior the first 5 proposals are random; with 40 results of an earlier search (the same
    ranking, another scale: the prior is ranked on its own) the model proposes from the first query."""
    with_prior, without = [], []
    for seed in range(4):
        s = SurrogateSearch(space(), seed=seed)
        assert s.set_prior([(a, 10 * r + 3) for a, r in earlier(40, seed=seed + 50)]) == 40
        with_prior.append(best_after(s, 6))
        assert s.stats["model_proposals"] == 6  # no random start-up with a prior
        without.append(best_after(SurrogateSearch(space(), seed=seed), 6))
    assert min(with_prior) == 8.0  # the optimum, in 6 proposals, every seed
    assert max(without) < 8.0  # 6 proposals of 65,536 archs: random + one model proposal miss it


def test_a_prior_that_ranks_the_other_way_is_dropped_once_results_disagree():
    s = SurrogateSearch(space(), seed=0)
    s.set_prior(earlier(40, fn=lambda a: -reward(a)))
    best = best_after(s, 25)
    assert s.stats.get("prior_dropped", 0) > 0  # the check turned it off
    assert best >= 7.0  # and the search still learned the toy


def test_a_prior_that_ranks_alike_is_never_dropped_even_near_the_optimum():
    """Near the optimum the results vary little and the prior's predictions rank them only roughly; the check
    leaves a prior out on evidence that it misleads (tau significantly below 0), not for a tau near 0."""
    for seed in range(3):
        s = SurrogateSearch(space(), seed=seed)
        s.set_prior(earlier(40, seed=seed + 7))
        assert best_after(s, 25) == 8.0
        assert s.stats.get("prior_used", 0) == 20 and not s.stats.get("prior_dropped")


def test_the_prior_is_kept_in_the_state_and_a_resumed_search_proposes_the_same():
    s = SurrogateSearch(space(), seed=3)
    s.set_prior(earlier(30))
    best_after(s, 3)
    state = s.state_dict()
    r = build_strategy({"type": "surrogate", "seed": 3}, space())
    r.load_state_dict(state)
    assert [(a.key, v) for a, v in r.prior] == [(a.key, v) for a, v in s.prior]
    assert [s.propose().key for _ in range(3)] == [r.propose().key for _ in range(3)]


def test_failed_and_foreign_prior_results_are_left_out():
    other = TableSpace("toy", [Decision(f"d{i}", ("a", "z")) for i in range(8)])
    foreign = other.sample(np.random.default_rng(0)).replace(d0="z")
    pairs = earlier(5) + [(foreign, 1.0), (earlier(1, seed=7)[0][0], None), (earlier(1, seed=8)[0][0], float("nan"))]
    s = SurrogateSearch(space())
    assert s.set_prior(pairs) == 5
    with pytest.raises(ValueError, match="prior_distance"):
        SurrogateSearch(space(), prior_distance=0)


def test_read_results_takes_ok_rows_of_a_history_read_only(tmp_path):
    path = tmp_path / "history.sqlite"
    pairs = earlier(4)
    with History(path) as h:
        for i, (a, r) in enumerate(pairs):
            h.finish(h.start(a, seed=i), Result(reward=r) if i != 2 else Result.failed("diverged"))
        h.start(pairs[0][0], seed=9)  # still running: not a result
    before = path.read_bytes()
    got = read_results(tmp_path)  # a work dir: its history.sqlite
    assert [(a.key, r) for a, r in got] == [(a.key, r) for i, (a, r) in enumerate(pairs) if i != 2]
    assert path.read_bytes() == before
    with pytest.raises(HistoryError, match="no such history file"):
        read_results(tmp_path / "missing")
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(HistoryError, match="junk.sqlite: not a densenas history"):
        read_results(tmp_path / "junk.sqlite")


def test_strategy_prior_in_a_config_is_read_or_refused_by_name(tmp_path):
    from densenas.build import check_prior

    with pytest.raises(ConfigError, match="no history at .*nowhere"):
        check_prior(str(tmp_path / "nowhere"), "surrogate", "cfg.py")
    with pytest.raises(ConfigError, match="surrogate strategy only, not 'random'"):
        check_prior([str(tmp_path)], "random", "cfg.py")
    with pytest.raises(ConfigError, match="must be a search's work dir"):
        check_prior(3, "surrogate", "cfg.py")
    with History(tmp_path / "history.sqlite") as h:
        h.finish(h.start(earlier(1)[0][0], seed=0), Result(reward=1.0))
    assert check_prior(str(tmp_path), "surrogate", "cfg.py") == [tmp_path / "history.sqlite"]
    assert check_prior(None, "random", "cfg.py") is None


def default_search_with_prior(tmp_path, n: int):
    """The default search's config (tiny data, no weights) with ``strategy.prior`` naming an earlier search
    of ``n`` finished rows in ``tmp_path / "earlier"``; returns that config."""
    from pathlib import Path

    from densenas.build import build_search
    from densenas.config import load_config

    config = str(Path(__file__).resolve().parents[1] / "configs/search/auxcell_proxy.py")
    opts = [f"data.root={tmp_path / 'proxy'}", "data.proxy.num_train=8", "data.proxy.num_val=4",
            "backbone.pretrained=False"]
    plain = build_search(load_config(config, opts), build_evaluator=False, log=lambda m: None)
    rng = np.random.default_rng(0)
    earlier_dir = tmp_path / "earlier"
    earlier_dir.mkdir()
    with History(earlier_dir / "history.sqlite") as h:
        for i in range(n):
            h.finish(h.start(plain.space.sample(rng), seed=i), Result(reward=0.5 + 0.01 * i))
    return load_config(config, [*opts, f"strategy.prior=['{earlier_dir}']"])


def test_a_search_config_with_strategy_prior_hands_the_results_to_the_surrogate(tmp_path):
    """The default search's config with ``strategy.prior`` naming an earlier search's work dir: the builder
    reads its finished rows and the surrogate's first proposal is already a model proposal."""
    from densenas.build import build_search

    cfg = default_search_with_prior(tmp_path, 12)
    lines: list[str] = []
    search = build_search(cfg, build_evaluator=False, log=lines.append)
    assert len(search.strategy.prior) == 12
    assert any(ln.startswith("prior: 12 results of 1 earlier search(es)") for ln in lines)
    search.strategy.propose()
    assert search.strategy.stats["model_proposals"] == 1


def test_a_resumed_search_keeps_its_prior_when_the_earlier_search_is_gone(tmp_path):
    """``--resume`` after the prior's work dir was moved or deleted: the strategy state recorded in the
    history holds the prior, so the resume goes on (and says so); without such a state it is refused by name,
    and a fresh search still refuses the missing path."""
    import shutil

    from densenas.build import build_search

    cfg = default_search_with_prior(tmp_path, 6)
    earlier_dir, work = tmp_path / "earlier", tmp_path / "work"
    work.mkdir()
    first = build_search(cfg, work_dir=work, build_evaluator=False, log=lambda m: None)
    shutil.rmtree(earlier_dir)
    with pytest.raises(ConfigError, match=r"holds no strategy state with the prior .*restore the file"):
        build_search(cfg, work_dir=work, build_evaluator=False, log=lambda m: None, resume=True)
    with History(work / "history.sqlite") as h:  # what the loop records once the first candidate starts
        h.start(first.strategy.propose(), seed=0, strategy_state=first.strategy.state_dict())
    lines: list[str] = []
    resumed = build_search(cfg, work_dir=work, build_evaluator=False, log=lines.append, resume=True)
    assert any("not found since the search started; the resumed strategy keeps the 6 prior results" in ln
               for ln in lines)
    with History(work / "history.sqlite") as h:
        resumed.strategy.load_state_dict(h.strategy_state())
    assert [(a.key, r) for a, r in resumed.strategy.prior] == [(a.key, r) for a, r in first.strategy.prior]
    with pytest.raises(ConfigError, match="no history at .*earlier"):
        build_search(cfg, work_dir=tmp_path / "fresh", build_evaluator=False, log=lambda m: None)

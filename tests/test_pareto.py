"""Multi-objective rewards and the Pareto front: the front on hand-made points, MnasNet's scalarisation
against hand-computed values, config errors, and a real search under a hard limit whose exported model
stays under it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from densenas.config import ConfigError
from densenas.evaluation.objective import ObjectiveCfg
from densenas.pareto import front, non_dominated
from densenas.result import Result
from test_tools import _tool, tiny_opts

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs/search/auxcell_proxy.py"


def test_front_of_hand_made_points():
    # (metric, cost): B dominates C (better metric, lower cost); A dominates D; A and F are equal (both kept)
    pts = [(0.8, 10), (0.7, 5), (0.6, 8), (0.8, 12), (0.9, 20), (0.8, 10)]
    assert non_dominated(pts, ("max", "min")) == [True, True, False, False, True, True]
    # both maximised: only (0.9, 20) and nothing else beats it on cost... (0.9, 20) dominates all
    assert non_dominated(pts, ("max", "max")) == [False, False, False, False, True, False]
    assert non_dominated([], ("max", "min")) == []
    with pytest.raises(ValueError, match="'max' or 'min'"):
        non_dominated(pts, ("max", "least"))
    with pytest.raises(ValueError, match="2 objectives"):
        non_dominated([(1, 2, 3)], ("max", "min"))


def test_front_reads_results_and_leaves_failures_out():
    entries = [(1, Result(reward=0.5, cost={"params": 100.0})), (2, Result(reward=0.6, cost={"params": 200.0})),
               (3, Result(reward=0.4, cost={"params": 150.0})), (4, Result.failed("diverged")),
               (5, Result(reward=0.7, metrics={"metric_reward": 0.9}, cost={"params": 300.0}))]
    assert [(i, f) for i, _, _, f in front(entries)] == [(1, True), (2, True), (3, False), (5, True)]
    assert [i for i, *_ in front(entries, metric="metric_reward")] == [5]  # only #5 has that metric


def test_mnasnet_scalarisation_against_hand_values():
    soft = ObjectiveCfg(target=500.0)  # alpha = beta = -0.07
    assert soft.scalarise(0.5, 1000.0) == pytest.approx(0.5 * 2 ** -0.07)  # 0.4763
    assert soft.scalarise(0.5, 250.0) == pytest.approx(0.5 * 0.5 ** -0.07)  # under the target: a bonus
    assert soft.scalarise(-2.0, 1000.0) == pytest.approx(-2.0 / 2 ** -0.07)  # a negative loss gets worse
    assert soft.scalarise(-2.0, 1000.0) < -2.0 < soft.scalarise(-2.0, 250.0)
    hard = ObjectiveCfg(target=500.0, weight=0.0, weight_over=-1.0)  # MnasNet's hard-ish variant
    assert hard.scalarise(0.5, 400.0) == 0.5 and hard.scalarise(0.5, 1000.0) == pytest.approx(0.25)
    assert ObjectiveCfg(limit=10.0).scalarise(0.5, 1e9) == 0.5  # a limit alone leaves the reward as is


@pytest.mark.parametrize("opts, match", [
    (["objective.cost=params"], "target"),
    (["objective.cost=flops", "objective.limit=1e6"], "cost must be one of"),
    (["objective.target=1e6", "objective.weight=0.07"], "<= 0"),
    (["objective.limit=-3"], "positive"),
    (["objective.limit=1e6", "objective.latency_size=[64]"], "latency_size"),
    (["objective.limt=1e6"], "did you mean 'limit'"),
])
def test_objective_config_errors_name_the_key(opts, match):
    from densenas.build import plan_search
    from densenas.config import load_config

    with pytest.raises(ConfigError, match=match) as e:
        plan_search(load_config(CFG, opts))
    assert "objective" in str(e.value)


@pytest.mark.slow
def test_hard_limit_is_never_exceeded_by_a_candidate_or_its_export(tmp_path):
    import numpy as np
    from mmengine.config import Config

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.history import History
    from densenas.task import task_of_config

    opts = tiny_opts(tmp_path, n=6)
    probe = build_search(load_config(CFG, opts), work_dir=tmp_path / "probe", log=lambda s: None)
    rng = np.random.default_rng(0)
    costs = sorted(probe.evaluator.cost_of(probe.evaluator.candidate(probe.space.sample(rng)))["decoder_params"]
                   for _ in range(12))
    limit = costs[len(costs) // 2]  # about half the space is over it
    work = tmp_path / "w"
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options", *opts,
                            f"objective.limit={limit}", "objective.cost=decoder_params",
                            "strategy.type=random"]) == 0
    with History(work / "history.sqlite") as h:
        rows = h.finished()
    ok = [c for c in rows if c.result.ok]
    over = [c for c in rows if not c.result.ok and "over the hard limit" in c.result.error]
    assert ok and all(c.result.cost["decoder_params"] <= limit for c in ok)
    assert all(c.result.cost["decoder_params"] > limit and c.result.stage == 0 for c in over)
    # the rejected were screened on the driver and did not count: 6 candidates trained (ok, or failed training)
    assert len([c for c in rows if not c.result.over_limit]) == 6 and all(c.result.over_limit for c in over)
    board = (work / "leaderboard.md").read_text()
    assert "Pareto front" in board and (work / "pareto.png").stat().st_size > 1000

    # every candidate on the front exports to an mmseg model under the limit (aux heads excluded)
    cid = max(ok, key=lambda c: c.result.reward).id
    out = tmp_path / "c.py"
    assert _tool("export")([str(work / "history.sqlite"), "--candidate", str(cid), "--out", str(out),
                            "--data-root", str(tmp_path / "proxy"), "--crop", "64"]) == 0
    cfg = Config.fromfile(str(out))
    cfg.model.backbone.backbone.pretrained = False
    task = task_of_config(cfg)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import densenas.tasks.segmentation.mm  # noqa: F401  (registers the found decoder)

    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg.model)
    _, params, _, _ = task.test_cost_model(model, cfg)
    best = next(c for c in ok if c.id == cid)
    assert params == best.result.cost["params"]  # the proxy counted what is deployed
    decoder = params - (best.result.cost["params"] - best.result.cost["decoder_params"])
    assert decoder <= limit and math.isfinite(decoder)


def test_latency_objective_scalarises_the_measured_reward(tmp_path):
    import numpy as np

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.evaluation.objective import CostAware

    opts = tiny_opts(tmp_path) + ["objective.cost=latency_ms", "objective.target=1.0",
                                  "objective.latency_size=[32,48]", "objective.latency_repeats=3"]
    search = build_search(load_config(CFG, opts), work_dir=tmp_path / "w", log=lambda s: None)
    ev = search.evaluator
    assert isinstance(ev, CostAware) and ev.latency_size == (32, 48) and search.front == ("metric_reward",
                                                                                         "latency_ms")
    r = ev.evaluate(search.space.sample(np.random.default_rng(1)), seed=0)
    assert r.ok and r.cost["latency_ms"] > 0 and r.cost["params"] > 1e5
    assert r.reward == pytest.approx(search.objective.scalarise(r.metrics["metric_reward"], r.cost["latency_ms"]))
    assert ev.cfg is ev.inner.cfg  # the proxy trainer's settings stay reachable (tools/fidelity.py)


def test_a_cost_aware_evaluator_survives_the_pickling_that_ships_it_to_ray_workers(tmp_path):
    """Ray sends the evaluator to its workers pickled; rebuilding a CostAware used to recurse without end
    in ``__getattr__`` (``inner`` not set yet), so every search with an ``objective`` on Ray workers died."""
    import numpy as np
    from ray import cloudpickle  # what Ray pickles the evaluator with (our own object, in memory: no user file)

    from densenas.build import build_search
    from densenas.config import load_config

    opts = tiny_opts(tmp_path) + ["objective.cost=decoder_params", "objective.limit=1e9"]
    search = build_search(load_config(CFG, opts), work_dir=tmp_path / "w", log=lambda s: None)
    ev = search.evaluator
    back = cloudpickle.loads(cloudpickle.dumps(ev))
    assert type(back) is type(ev) and back.objective == ev.objective and back.latency_size == ev.latency_size
    assert back.cfg == ev.cfg  # attribute lookup still reaches the wrapped evaluator
    with pytest.raises(AttributeError):
        back.no_such_attribute
    arch = search.space.sample(np.random.default_rng(0))
    assert back.cost(arch) == ev.cost(arch) and back.cost(arch)["decoder_params"] > 0


def test_latency_on_onnxruntime_is_measured_once_per_arch_and_validated(tmp_path, monkeypatch):
    """runtime='onnxruntime': the candidate is exported and timed by ONNX Runtime (CPU provider, threads as
    configured), once per distinct arch; a runtime without latency as the cost, or an unknown one, is refused."""
    import numpy as np

    import densenas.evaluation.objective as objective
    from densenas.build import build_search
    from densenas.config import load_config

    opts = tiny_opts(tmp_path) + ["objective.cost=latency_ms", "objective.limit=1e6", "objective.runtime=onnxruntime",
                                  "objective.latency_size=[32,32]", "objective.latency_repeats=2",
                                  "objective.latency_warmup=1", "objective.latency_threads=1"]
    search = build_search(load_config(CFG, opts), work_dir=tmp_path / "w", log=lambda s: None)
    ev = search.evaluator
    calls = []
    real = objective.measure

    def spy(*a, **k):
        lat = real(*a, **k)
        calls.append(lat)
        return lat

    monkeypatch.setattr(objective, "measure", spy)
    arch = search.space.sample(np.random.default_rng(1))
    first = ev.cost(arch)
    assert first["latency_ms"] > 0 and len(calls) == 1
    assert calls[0].runtime == "onnxruntime" and calls[0].provider == "CPUExecutionProvider"
    assert calls[0].threads == 1 and calls[0].shape == (1, 3, 32, 32)
    assert ev.cost(arch)["latency_ms"] == first["latency_ms"] and len(calls) == 1  # cached
    assert next(ev.inner.encoder.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="runtime must be one of"):
        ObjectiveCfg(cost="latency_ms", limit=1.0, runtime="tflite")
    with pytest.raises(ValueError, match="is not latency_ms"):
        ObjectiveCfg(cost="params", limit=1.0, runtime="onnxruntime")


def test_latency_from_a_lookup_table(tmp_path):
    """objective.latency_table: FBNet's estimate, the table file built on first use and reused. The table times
    eager PyTorch here: its plumbing through a search is the same for every runtime, and the ONNX Runtime table
    (an export per op, 45 s more for this search's encoder) is tested on a toy model in tests/test_latency.py."""
    import numpy as np

    from densenas.build import build_search
    from densenas.config import load_config
    from densenas.latency_table import LatencyTable

    lut = tmp_path / "lut.json"
    opts = tiny_opts(tmp_path) + ["objective.cost=latency_ms", "objective.limit=1e6", "objective.runtime=torch",
                                  f"objective.latency_table={lut}", "objective.latency_size=[32,32]",
                                  "objective.latency_repeats=2", "objective.latency_warmup=1"]
    search = build_search(load_config(CFG, opts), work_dir=tmp_path / "w", log=lambda s: None)
    ev = search.evaluator
    arch = search.space.sample(np.random.default_rng(3))
    est = ev.cost(arch)["latency_ms"]
    table = LatencyTable(lut, runtime="torch", threads=1)
    assert est > 0 and len(table.entries) > 3
    from densenas.evaluation.objective import _Deployed

    model = _Deployed(ev.inner.encoder, ev.inner.candidate(arch)).eval()
    assert table.estimate(model, (1, 3, 32, 32)) == pytest.approx(est)  # every op looked up, none re-timed
    with pytest.raises(ValueError, match="is not latency_ms"):
        ObjectiveCfg(cost="params", limit=1.0, latency_table=str(lut))


def test_leaderboard_shows_the_latency_of_a_latency_search(tmp_path):
    """A search whose cost is latency_ms shows it in leaderboard.md (it was in the CSV only)."""
    from densenas.arch import Arch
    from densenas.history import History
    from densenas.viz import write_reports

    with History(tmp_path / "history.sqlite") as h:
        for i, (reward, ms) in enumerate([(0.5, 30.0), (0.6, 41.25)]):
            cid = h.start(Arch("toy", (("x", i),)), seed=0)
            h.finish(cid, Result(reward=reward, metrics={"metric_reward": reward}, stage=1,
                                 cost={"params": 1e5, "madds": 1e8, "latency_ms": ms}))
        write_reports(h, tmp_path, front=("metric_reward", "latency_ms"))
    board = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert board[0].endswith("| latency (ms) |") and board[1].count("|") == board[0].count("|")
    assert board[2].endswith("| 41.25 |") and board[3].endswith("| 30.00 |")

"""Zero-cost proxies (NASWOT, Mellor et al., ICML 2021; synflow, Tanaka et al., NeurIPS 2020; Zen-score,
Lin et al., ICCV 2021), ranking a random pool, the warm start of every sampling strategy and its config
wiring (``strategy.warm_start``) through a real tiny search, fresh and resumed."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from densenas import zerocost
from densenas.build import Search, check_warm_start, plan_search
from densenas.backbones.common import named_shapes
from densenas.backbones.mobilenet_v2 import MobileNetV2Encoder
from densenas.config import ConfigError, load_config
from densenas.evaluation.proxy import ProxyTrainer
from densenas.history import History
from densenas.strategies import STRATEGIES, build_strategy
from test_proxy_trainer import SIZE, K, SegToyTask, _cfg, _space
from test_tools import CFG, _tool, tiny_opts
from toy import ToySpace, reward_of


# ------------------------------------------------------------------------------------ the scores
def _linear_relu(inplace: bool = False) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(inplace=inplace))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return net


@pytest.mark.parametrize("inplace", [False, True])
def test_naswot_by_hand(inplace):
    """Pre-activations (1,-2,-1), (-1,2,1), (2,1,3): codes 100, 011, 111; hamming 3, 2, 1 among 3 units, so
    K_H = [[3,0,1],[0,3,2],[1,2,3]] with determinant 15 - 3 = 12."""
    x = torch.tensor([[1.0, -2.0], [-1.0, 2.0], [2.0, 1.0]])
    assert zerocost.naswot(_linear_relu(inplace), [x]) == pytest.approx(math.log(12.0), abs=1e-12)
    # the same code for two inputs makes K_H singular: -inf, which rank_pool ranks last
    assert zerocost.naswot(_linear_relu(inplace), [torch.cat([x, x[:1] * 2])]) == float("-inf")


def test_naswot_needs_activations_and_a_batch():
    with pytest.raises(ValueError, match="no ReLU-family module"):
        zerocost.naswot(nn.Linear(2, 2), [torch.randn(4, 2)])
    with pytest.raises(ValueError, match="at least 2"):
        zerocost.naswot(_linear_relu(), [torch.randn(1, 2)])


def test_synflow_of_a_linear_chain_is_its_closed_form():
    """Positive weights make R = 1^T |W2| |W1| 1 linear in each layer, so sum theta dR/dtheta = R per layer:
    synflow = 2 R. The signs of the given module stay as they were."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        for layer in net:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
    before = copy.deepcopy(net.state_dict())
    w1, w2 = (layer.weight.detach().double().abs() for layer in net)
    closed = 2 * float(torch.ones(2, dtype=torch.float64) @ w2 @ w1 @ torch.ones(4, dtype=torch.float64))
    assert zerocost.synflow(net, [torch.randn(5, 4)]) == pytest.approx(closed, rel=1e-12)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_synflow_does_not_overflow_a_deep_chain():
    """40 layers of weight 30: R = 30^40 (about 1e59) is past float32's range; double precision holds it."""
    net = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(40)])
    for layer in net:
        nn.init.constant_(layer.weight, -30.0)
    assert zerocost.synflow(net, [torch.ones(2, 1)]) == pytest.approx(40 * 30.0 ** 40, rel=1e-9)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize("name", sorted(zerocost.SCORES))
def test_scores_are_deterministic_and_touch_nothing(name):
    net = _convnet().train()
    x = [torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))]
    state, rng = copy.deepcopy(net.state_dict()), torch.get_rng_state()
    a = zerocost.score(name, net, x, seed=3)
    assert math.isfinite(a) and zerocost.score(name, net, x, seed=3) == a
    assert torch.equal(torch.get_rng_state(), rng) and net.training
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'nasbot'"):
        zerocost.score("nasbot", net, x)


# ------------------------------------------------------------------------------------- rank_pool
def test_rank_pool_orders_best_first_and_ranks_failures_last():
    space, logs = ToySpace(), []
    bad, nan = set(), set()

    def score(arch):
        if arch.key in bad:
            raise RuntimeError("out of memory")
        return float("nan") if arch.key in nan else reward_of(arch) + 1e-3 * arch["d4"]

    pool = [a for a, _ in zerocost.rank_pool(space, score, 12, np.random.default_rng(5))]
    bad.add(pool[0].key)
    nan.add(pool[1].key)
    ranked = zerocost.rank_pool(space, score, 12, np.random.default_rng(5), log=logs.append)
    archs, scores = [a for a, _ in ranked], [s for _, s in ranked]
    assert len(ranked) == 12 and len({a.key for a in archs}) == 12 and {a.key for a in archs} == {a.key for a in pool}
    assert scores[:10] == sorted(scores[:10], reverse=True) and all(math.isfinite(s) for s in scores[:10])
    assert [a.key for a in archs[10:]] == [pool[0].key, pool[1].key] and scores[10:] == [float("-inf")] * 2
    assert any("out of memory" in m for m in logs) and any("score is nan" in m for m in logs)


def test_rank_pool_of_a_small_space_says_so():
    logs = []
    ranked = zerocost.rank_pool(ToySpace(n=2, k=2), lambda a: 0.0, 10, np.random.default_rng(0), log=logs.append)
    assert len({a.key for a, _ in ranked}) == 4 and any("only 4 distinct" in m for m in logs)


@pytest.mark.parametrize("kind", sorted(k for k, c in STRATEGIES.items() if not c.one_shot))
def test_every_sampling_strategy_proposes_the_warm_start_first(kind):
    space = ToySpace()
    top = [a for a, _ in zerocost.rank_pool(space, reward_of, 20, np.random.default_rng(1))[:4]]
    strategy = build_strategy({"type": kind, "seed": 0}, space)
    strategy.seed_with(top)
    first = [strategy.propose() for _ in range(len(top))]
    assert [a.key for a in first] == [a.key for a in top]


# ------------------------------------------------------------------------------------ config wiring
BASE = ('task = dict(type="segmentation")\ndata = dict(layout="proxy", root="data/x")\n'
        'space = dict(type="auxcell")\nevaluator = dict(type="proxy")\n')


@pytest.mark.parametrize("strategy, match", [
    ('dict(type="random", warm_start=dict(proxy="nasbot"))', r"'strategy.warm_start.proxy' is 'nasbot'"),
    ('dict(type="random", warm_start=dict(pool=4, take=8))', r"'strategy.warm_start.take' \(8\) is larger"),
    ('dict(type="random", warm_start=dict(pol=4))', r"unknown key 'strategy.warm_start.pol'"),
    ('dict(type="random", warm_start=dict(pool=0))', r"'strategy.warm_start.pool' must be a positive"),
    ('dict(type="random", warm_start="naswot")', r"'strategy.warm_start' must be a dict"),
])
def test_warm_start_config_errors_name_the_key(tmp_path, strategy, match):
    p = tmp_path / "c.py"
    p.write_text(BASE + f"strategy = {strategy}\n")
    with pytest.raises(ConfigError, match=match):
        plan_search(load_config(p))


def test_warm_start_defaults_and_evaluator_checks():
    assert check_warm_start({"pool": 16}, "evolution", False, "proxy", ProxyTrainer, "c.py") == \
        {"proxy": "naswot", "pool": 16, "take": 8}
    with pytest.raises(ConfigError, match=r"strategy.warm_start' needs a sampling strategy.*'darts' is one-shot"):
        check_warm_start({}, "darts", True, "supernet", object, "c.py")
    with pytest.raises(ConfigError, match=r"needs an evaluator with zero_cost\(\); evaluator.type='supernet'"):
        check_warm_start({}, "random", False, "supernet", object, "c.py")


# ------------------------------------------------------------------------------- the proxy trainer
def test_proxy_zero_cost_scores_the_candidate_evaluate_trains_and_changes_nothing():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, SIZE, SIZE, generator=g), torch.randint(K, (10, SIZE, SIZE), generator=g)
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder(pretrained=False).eval()
    space, task = _space(), SegToyTask((x[:6], y[:6]), (x[6:], y[6:]))
    shapes = named_shapes(encoder.feature_shapes())
    ev = ProxyTrainer(task, space, encoder, shapes, _cfg(), log=lambda s: None)
    arch = space.sample(np.random.default_rng(0))
    rng = torch.get_rng_state()
    score = ev.zero_cost(arch, "naswot", seed=4, batch_size=4)
    assert torch.equal(torch.get_rng_state(), rng) and ev.stage1_rewards == []
    torch.manual_seed(4)
    cand = task.build_candidate(space, arch, shapes)
    idx = torch.randperm(6, generator=torch.Generator().manual_seed(4))[:4].sort().values
    assert score == zerocost.naswot(cand, ev.caches["train"].batch(idx), seed=4) and math.isfinite(score)
    fresh = ProxyTrainer(task, space, encoder, shapes, _cfg(), log=lambda s: None)
    assert ev.evaluate(arch, seed=1).reward == fresh.evaluate(arch, seed=1).reward
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'zenn'"):
        ev.zero_cost(arch, "zenn")


def test_seed_warm_start_queues_the_top_scored_with_its_own_rng(tmp_path):
    """Search.seed_warm_start: a pool from its own generator (the strategy's RNG is untouched), the best
    ``take`` queued in order, a failed score never queued, the ranking written as plain JSON."""
    space = ToySpace()

    class Scorer:  # the evaluator's zero_cost hook; d0 == 1 raises
        def zero_cost(self, arch, method, seed=0):
            if arch["d0"] == 1:
                raise RuntimeError("cannot score")
            return reward_of(arch)

    strategy = build_strategy({"type": "random", "seed": 7}, space)
    rng = copy.deepcopy(strategy.rng.bit_generator.state)
    search = Search(None, space, strategy, Scorer(), torch.device("cpu"), 7, {}, "proxy",
                    warm_start={"proxy": "naswot", "pool": 30, "take": 5})
    logs = []
    ranked = search.seed_warm_start(tmp_path, log=logs.append)
    assert strategy.rng.bit_generator.state == rng
    assert [a.key for a in strategy.queue] == [a.key for a, _ in ranked[:5]]
    assert all(a["d0"] != 1 for a in strategy.queue) and any("cannot score" in m for m in logs)
    saved = json.loads((tmp_path / "zero_cost.json").read_text())
    assert saved["proxy"] == "naswot" and [r["score"] for r in saved["ranked"][:5]] == [s for _, s in ranked[:5]]
    assert saved["ranked"][-1]["score"] is None and "warm start: ranked 30 random archs by naswot" in logs[-1]


def test_warm_started_search_proposes_the_top_ranked_first_and_resume_does_not_rerank(tmp_path):
    """A real tiny search (random MobileNetV2, 64 px): the first candidates are zero_cost.json's top archs in
    order; the queued rest survives in the strategy state and a resumed search neither ranks again nor
    loses it."""
    work = tmp_path / "w"
    ws = ["strategy.warm_start.proxy=naswot", "strategy.warm_start.pool=5", "strategy.warm_start.take=3"]
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--cfg-options", *tiny_opts(tmp_path, n=2), *ws]) == 0
    ranking = (work / "zero_cost.json").read_text()
    rows = json.loads(ranking)["ranked"]
    assert len(rows) == 5 and [r["queued"] for r in rows] == [True] * 3 + [False] * 2
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    with History(work / "history.sqlite") as h:
        assert [c.arch.to_dict() for c in h.candidates()] == [r["arch"] for r in rows[:2]]
    assert _tool("search")([str(CFG), "--work-dir", str(work), "--resume", "--cfg-options",
                            *tiny_opts(tmp_path, n=3), *ws]) == 0
    with History(work / "history.sqlite") as h:
        assert [c.arch.to_dict() for c in h.candidates()] == [r["arch"] for r in rows[:3]]
    assert (work / "zero_cost.json").read_text() == ranking
    assert (work / "search.log").read_text().count("warm start: ranked 5 random archs by naswot") == 1


def test_proxy_zero_cost_scores_detection_candidates_through_the_same_path(tmp_path):
    """A NAS-FCOS candidate (neck + FCOS head, ``forward(*feats)`` gives every head output) is scored like a
    segmentation decoder: the task's candidate on the cached encoder features."""
    pytest.importorskip("mmdet")
    import test_det_evaluator as det

    data = dict(layout="proxy_coco", root=str(tmp_path / "coco"), image_size=det.SIZE,
                proxy=dict(num_train=8, num_val=4, size=det.SIZE, num_classes=2, seed=0))
    torch.manual_seed(0)
    encoder, shapes = det.build_backbone({"type": "mobilenet_v2", "out_indices": (6, 13, 17), "pretrained": False})
    space, ev = det._trainer((data, encoder.eval(), shapes), "nasfcos")
    arch = space.sample(np.random.default_rng(0))
    for name in zerocost.SCORES:
        value = ev.zero_cost(arch, name, batch_size=8)
        assert math.isfinite(value) and ev.zero_cost(arch, name, batch_size=8) == value

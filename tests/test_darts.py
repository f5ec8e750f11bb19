"""Tests of the first-order DARTS trainer (Liu, Simonyan, Yang, ICLR 2019) and the differentiable search
loop (history rows per epoch, atomic checkpoints, resume without repeating epochs), on a toy supernet with
a known best op and on a tiny Auto-DeepLab supernet (Liu et al., CVPR 2019). CPU, milliseconds to seconds."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision
from densenas.decoders.autodeeplab import AutoDeepLabSpace
from densenas.evaluation.supernet_search import (CHECKPOINT, DERIVED, Splits, run_differentiable,
                                                 search_segmentation, seg_score_fn, split_halves)
from densenas.history import History
from densenas.search import progress_line
from densenas.strategies.darts import DartsCfg, DartsTrainer
from densenas.supernet import DifferentiableSpace, Supernet
from densenas.tasks.segmentation.losses import seg_loss

TOY_OPS = ("zero", "identity", "negate")


class ToyMixedSpace(DifferentiableSpace):
    """One mixed op between zero, identity and negation; the regression target ``2 x`` wants identity."""

    name = "toymixed"

    def decisions(self) -> list[Decision]:
        return [Decision("op", TOY_OPS)]

    def build_supernet(self, in_shapes=None) -> "ToySupernet":
        return ToySupernet(self)


class ToySupernet(Supernet):
    def __init__(self, space: ToyMixedSpace):
        super().__init__()
        self.space = space
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(TOY_OPS)))
        self.scale = nn.Parameter(torch.ones(4))
        self.bias = nn.Parameter(torch.zeros(4))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.alpha, 0)
        return self.scale * (w[0] * 0 * x + w[1] * x - w[2] * x) + self.bias

    def derive(self) -> Arch:
        return Arch(self.space.name, (("op", TOY_OPS[int(self.alpha.argmax())]),))


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return x, 2 * x


def _toy(seed: int = 0, **cfg) -> tuple[ToySupernet, DartsTrainer]:
    torch.manual_seed(seed)
    net = ToyMixedSpace().build_supernet()
    kw = dict(w_lr=0.05, arch_lr=0.05, batch_size=8, total_epochs=6)
    kw.update(cfg)
    return net, DartsTrainer(net, F.mse_loss, DartsCfg(**kw), seed=seed)


def _toy_score(net: Supernet, val) -> tuple[float, dict[str, float]]:
    with torch.no_grad():
        mse = float(F.mse_loss(net(val[0]), val[1]))
    return 1.0 / (1.0 + mse), {"mse": mse}


SPLITS = Splits(_toy_data(32, 1), _toy_data(32, 2), _toy_data(16, 3))


# -------------------------------------------------------------------------------------------- trainer
def test_alpha_moves_to_the_right_op():
    net, trainer = _toy()
    w0 = torch.softmax(net.alpha, 0).detach().clone()
    for _ in range(6):
        stats = trainer.train_epoch(SPLITS.weights, SPLITS.arch)
    w = torch.softmax(net.alpha, 0).detach()
    assert net.derive()["op"] == "identity"
    assert w[1] > 0.6 > w0[1] and w[2] < w0[2] and w[0] < w0[1]
    assert trainer.epoch == 6 and stats["w_loss"] < 1.0 and stats["lr"] < 0.05


def test_warmup_trains_weights_only_and_cosine_lr():
    net, trainer = _toy(warmup_epochs=2)
    a0, s0 = net.alpha.detach().clone(), net.scale.detach().clone()
    stats = trainer.train_epoch(SPLITS.weights, SPLITS.arch)
    assert torch.equal(net.alpha, a0) and not torch.equal(net.scale, s0)
    assert stats["a_loss"] != stats["a_loss"]  # NaN: no arch step
    trainer.train_epoch(SPLITS.weights, SPLITS.arch)
    trainer.train_epoch(SPLITS.weights, SPLITS.arch)
    assert not torch.equal(net.alpha, a0)
    assert trainer.lr(0) == pytest.approx(0.05) and trainer.lr(6) == pytest.approx(0.001)
    assert trainer.lr(0) > trainer.lr(3) > trainer.lr(5)


def test_resumed_trainer_is_bit_identical():
    net1, t1 = _toy(seed=3)
    for _ in range(3):
        t1.train_epoch(SPLITS.weights, SPLITS.arch)

    net2, t2 = _toy(seed=3)
    t2.train_epoch(SPLITS.weights, SPLITS.arch)
    buf = io.BytesIO()
    torch.save(t2.state_dict(), buf)
    torch.manual_seed(123)  # the resumed process starts from other RNG states and other weights
    torch.randn(5)
    net3, t3 = _toy(seed=99)
    buf.seek(0)
    t3.load_state_dict(torch.load(buf, weights_only=False))
    assert t3.epoch == 1
    for _ in range(2):
        t3.train_epoch(SPLITS.weights, SPLITS.arch)
    assert torch.equal(net1.alpha, net3.alpha) and torch.equal(net1.scale, net3.scale)
    assert not torch.equal(net1.alpha, net2.alpha)


def test_nan_loss_raises_clear_error():
    net, trainer = _toy()
    bad = (SPLITS.weights[0], torch.full_like(SPLITS.weights[1], float("nan")))
    with pytest.raises(FloatingPointError, match="weight loss is nan at epoch 1 step 1"):
        trainer.train_epoch(bad, SPLITS.arch)
    net, trainer = _toy()
    with pytest.raises(FloatingPointError, match="architecture loss is nan"):
        trainer.train_epoch(SPLITS.weights, bad)


def test_trainer_needs_both_parameter_kinds():
    class NoArch(ToySupernet):
        def arch_parameters(self):
            return []
    with pytest.raises(ValueError, match="architecture"):
        DartsTrainer(NoArch(ToyMixedSpace()), F.mse_loss)


# --------------------------------------------------------------------------------------- search loop
def test_run_differentiable_records_epochs_and_resumes(tmp_path):
    ref_net, ref_trainer = _toy(seed=5)
    with History(tmp_path / "ref" / "history.sqlite") as h:
        run_differentiable(ref_net, ref_trainer, SPLITS, _toy_score, h, tmp_path / "ref", epochs=4)

    work = tmp_path / "run"
    lines: list[str] = []
    net, trainer = _toy(seed=5)
    with History(work / "history.sqlite") as h:
        arch = run_differentiable(net, trainer, SPLITS, _toy_score, h, work, epochs=2,
                                  on_progress=lambda p: lines.append(progress_line(p)))
        assert [c.result.stage for c in h.finished()] == [1, 2] and arch == net.derive()
    assert lines[0].startswith("[1/2] #1 reward") and "best" in lines[1]
    assert (work / CHECKPOINT).is_file() and Arch.load(work / DERIVED) == arch

    calls = []
    net, trainer = _toy(seed=77)  # a fresh process: other init, state comes from the checkpoint
    orig = trainer.train_epoch
    trainer.train_epoch = lambda *a, **k: (calls.append(trainer.epoch), orig(*a, **k))[1]
    with History(work / "history.sqlite") as h:
        run_differentiable(net, trainer, SPLITS, _toy_score, h, work, epochs=4)
        rows = h.finished()
        assert [c.result.stage for c in rows] == [1, 2, 3, 4] and not h.running()
        assert all(c.result.ok and "mse" in c.result.metrics and "w_loss" in c.result.metrics for c in rows)
        assert h.strategy_state()["epoch"] == 4
        run_differentiable(net, trainer, SPLITS, _toy_score, h, work, epochs=4)  # nothing left to do
        assert h.count() == 4
    assert calls == [2, 3]
    assert torch.equal(net.alpha, ref_net.alpha) and torch.equal(net.scale, ref_net.scale)


def test_kill_between_checkpoint_and_history_row(tmp_path, monkeypatch):
    net, trainer = _toy(seed=1)
    real_finish = History.finish

    def dying_finish(self, cid, result, strategy_state=None):
        if result.stage == 2:
            raise KeyboardInterrupt("killed")
        return real_finish(self, cid, result, strategy_state)

    monkeypatch.setattr(History, "finish", dying_finish)
    with History(tmp_path / "history.sqlite") as h, pytest.raises(KeyboardInterrupt):
        run_differentiable(net, trainer, SPLITS, _toy_score, h, tmp_path, epochs=3)
    monkeypatch.setattr(History, "finish", real_finish)
    with History(tmp_path / "history.sqlite") as h:
        assert len(h.running()) == 1 and h.count() == 1
        net, trainer = _toy(seed=1)
        calls = []
        orig = trainer.train_epoch
        trainer.train_epoch = lambda *a, **k: (calls.append(trainer.epoch), orig(*a, **k))[1]
        run_differentiable(net, trainer, SPLITS, _toy_score, h, tmp_path, epochs=3)
        assert [c.result.stage for c in h.finished()] == [1, 2, 3] and not h.running()
    assert calls == [2]


def test_missing_checkpoint_and_divergence(tmp_path):
    net, trainer = _toy()
    with History(tmp_path / "history.sqlite") as h:
        run_differentiable(net, trainer, SPLITS, _toy_score, h, tmp_path, epochs=1)
    (tmp_path / CHECKPOINT).unlink()
    net, trainer = _toy()
    with History(tmp_path / "history.sqlite") as h, pytest.raises(RuntimeError, match="missing"):
        run_differentiable(net, trainer, SPLITS, _toy_score, h, tmp_path, epochs=2)

    bad = Splits(SPLITS.weights, (SPLITS.arch[0], SPLITS.arch[1] * float("nan")), SPLITS.val)
    net, trainer = _toy()
    with History(tmp_path / "h2" / "history.sqlite") as h:
        with pytest.raises(FloatingPointError):
            run_differentiable(net, trainer, bad, _toy_score, h, tmp_path / "h2", epochs=2)
        (row,) = h.finished()
        assert row.status == "failed" and "architecture loss is nan" in row.result.error


def test_time_budget_stops_between_epochs(tmp_path):
    net, trainer = _toy()
    with History(tmp_path / "history.sqlite") as h:
        assert run_differentiable(net, trainer, SPLITS, _toy_score, h, tmp_path, epochs=5,
                                  time_budget_s=0.0) is None
        assert h.count() == 0 and trainer.epoch == 0


# ---------------------------------------------------------------------------------- Auto-DeepLab
def test_darts_on_tiny_autodeeplab(tmp_path):
    space = AutoDeepLabSpace(3, layers=3, blocks=2, filter_multiplier=4, aspp_channels=8,
                             aspp_rates=(2, 1, 1, 1))
    torch.manual_seed(0)
    supernet = space.build_supernet()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 16, 16, generator=g)
    labels = (images[:, 0] > 0).long() + (images[:, 1] > 1).long()
    split_a, split_b = split_halves((images, labels), seed=0)
    assert len(split_a[0]) == len(split_b[0]) == 4
    key = images.flatten(1)[:, 0]  # distinct per image
    both = torch.cat([split_a[0], split_b[0]]).flatten(1)[:, 0]
    assert torch.equal(both.sort().values, key.sort().values)  # disjoint halves covering the set
    splits = Splits(split_a, split_b, (images[:2], labels[:2]))
    trainer = DartsTrainer(supernet, seg_loss, DartsCfg(batch_size=2, steps_per_epoch=2, arch_lr=3e-3),
                           seed=0)
    a0 = [p.detach().clone() for p in supernet.arch_parameters()]
    with History(tmp_path / "history.sqlite") as h:
        arch = run_differentiable(supernet, trainer, splits, seg_score_fn(3, batch_size=2), h, tmp_path,
                                  epochs=2, cost_fn=lambda a: {"params": float(sum(
                                      p.numel() for p in space.build(a).parameters()))})
        rows = h.finished()
        assert [c.result.stage for c in rows] == [1, 2]
        assert all(c.result.ok and 0 <= c.result.metrics["miou"] <= 1 and c.result.cost["params"] > 0
                   for c in rows)
        assert rows[-1].arch == arch
    space.check(arch)
    assert all(not torch.equal(a, p) for a, p in zip(a0, supernet.arch_parameters()))
    state = copy.deepcopy(trainer.state_dict())
    assert state["epoch"] == 2 and "beta" in state["supernet"]
    net = space.build(arch).eval()
    with torch.no_grad():
        assert net(images[:1]).shape == (1, 3, 16, 16)


def test_autodeeplab_trainer_resume_is_bit_identical():
    space = AutoDeepLabSpace(3, layers=2, blocks=1, filter_multiplier=2, aspp_channels=4,
                             aspp_rates=(1, 1, 1, 1))
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 16, 16, generator=g)
    labels = (images[:, 0] > 0).long()
    cfg = DartsCfg(batch_size=2, steps_per_epoch=1, arch_lr=1e-2, total_epochs=2)

    def fresh(seed: int) -> tuple[Supernet, DartsTrainer]:
        torch.manual_seed(seed)
        net = space.build_supernet()
        return net, DartsTrainer(net, seg_loss, cfg, seed=0)

    net1, t1 = fresh(0)
    for _ in range(2):
        t1.train_epoch((images, labels), (images.flip(0), labels.flip(0)))
    _, t2 = fresh(0)
    t2.train_epoch((images, labels), (images.flip(0), labels.flip(0)))
    buf = io.BytesIO()
    torch.save(t2.state_dict(), buf)
    buf.seek(0)
    net3, t3 = fresh(7)
    t3.load_state_dict(torch.load(buf, weights_only=False))
    t3.train_epoch((images, labels), (images.flip(0), labels.flip(0)))
    for a, b in zip(net1.arch_parameters(), net3.arch_parameters()):
        assert torch.equal(a, b)
    for (n, a), b in zip(net1.state_dict().items(), net3.state_dict().values()):
        assert torch.equal(a, b), n


def test_search_segmentation_end_to_end_and_resume(tmp_path):
    space = AutoDeepLabSpace(2, layers=2, blocks=1, filter_multiplier=2, aspp_channels=4,
                             aspp_rates=(1, 1, 1, 1))
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 3, 16, 16, generator=g)
    labels = (images[:, 0] > 0).long()
    darts = dict(batch_size=2, steps_per_epoch=1)
    with History(tmp_path / "history.sqlite") as h:
        first = search_segmentation(space, (images, labels), (images[:2], labels[:2]), 2, h, tmp_path,
                                    epochs=1, darts=darts)
    with History(tmp_path / "history.sqlite") as h:
        last = search_segmentation(space, (images, labels), (images[:2], labels[:2]), 2, h, tmp_path,
                                   epochs=2, darts=darts)
        assert [c.result.stage for c in h.finished()] == [1, 2]
        assert h.finished()[0].arch == first and h.finished()[1].arch == last
        assert h.finished()[1].result.cost["params"] == sum(p.numel() for p in space.build(last).parameters())
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["trainer"]["cfg"]["total_epochs"] == 2

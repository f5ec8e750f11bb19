"""Tests of first-order DARTS (Liu, Simonyan, Yang, ICLR 2019): the task-agnostic supernet trainer, the
one-shot ``Darts`` strategy, and whole searches through the one loop on a tiny Auto-DeepLab supernet (Liu
et al., CVPR 2019); the loop's own guarantees (steps, resume, budget) are in ``test_loop.py``. Toy
supernet with a known best op; CPU, milliseconds to seconds."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenas.arch import Arch, Decision
from densenas.decoders.autodeeplab import AutoDeepLabSpace
from densenas.evaluation.supernet import (Splits, SupernetTrainer, build_supernet_trainer, split_halves,
                                          trainer_for_task)
from densenas.history import History
from densenas.loop import CHECKPOINT, DERIVED, Budget, load_checkpoint, run
from densenas.strategies.darts import Darts, DartsCfg
from densenas.differentiable import DifferentiableSpace, Supernet
from densenas.tasks.segmentation.losses import seg_loss
from densenas.tasks.segmentation.supernet import seg_score_fn

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


def _toy_score(net: Supernet, val) -> tuple[float, dict[str, float]]:
    with torch.no_grad():
        mse = float(F.mse_loss(net(val[0]), val[1]))
    return 1.0 / (1.0 + mse), {"mse": mse}


SPLITS = Splits(_toy_data(32, 1), _toy_data(32, 2), _toy_data(16, 3))


def _toy(seed: int = 0, splits: Splits = SPLITS, **cfg) -> tuple[ToySupernet, SupernetTrainer]:
    torch.manual_seed(seed)
    net = ToyMixedSpace().build_supernet()
    kw = dict(w_lr=0.05, arch_lr=0.05, batch_size=8, total_epochs=6)
    kw.update(cfg)
    return net, SupernetTrainer(net, F.mse_loss, DartsCfg(**kw), score_fn=_toy_score, splits=splits, seed=seed)


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
    t3.load_state_dict(torch.load(buf, weights_only=True))
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
        SupernetTrainer(NoArch(ToyMixedSpace()), F.mse_loss)


# ------------------------------------------------------------------------------------------- strategy
def test_darts_strategy_steps_through_its_trainer():
    net, trainer = _toy(seed=2)
    strategy = Darts(ToyMixedSpace(), w_lr=0.05)
    assert strategy.one_shot and strategy.cfg.w_lr == 0.05
    with pytest.raises(RuntimeError, match="attach"):
        strategy.propose()
    strategy.attach(trainer)
    assert strategy.steps_done == 0 and strategy.propose() == net.derive()
    arch, result = strategy.step()
    assert strategy.steps_done == 1 and result.stage == 1 and arch == net.derive()
    assert result.ok and {"mse", "w_loss", "a_loss", "lr"} <= set(result.metrics) and result.cost == {}
    strategy.observe(arch, result)
    state = strategy.state_dict()
    other = Darts(ToyMixedSpace())
    other.load_state_dict(state)
    assert other.best == (1, result.reward)


def test_darts_refuses_bad_space_and_keys():
    from toy import ToySpace

    with pytest.raises(ValueError, match="differentiable space"):
        Darts(ToySpace())
    with pytest.raises(ValueError, match="w_lrr"):
        Darts(ToyMixedSpace(), w_lrr=0.1)
    from densenas.config import allowed_keys

    assert {"w_lr", "arch_lr", "warmup_epochs", "seed"} <= allowed_keys(Darts)  # config checks see the cfg


def test_supernet_trainer_state_loads_weights_only_and_applies_new_lrs():
    net, trainer = _toy(seed=4)
    trainer.train_epoch()
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    net2, t2 = _toy(seed=4, arch_lr=0.01)  # resumed with a lower architecture learning rate
    t2.load_state_dict(state)
    assert t2.epoch == 1 and t2.a_opt.param_groups[0]["lr"] == 0.01
    assert torch.equal(net2.alpha, net.alpha)


def test_trainer_for_task_uses_the_task_hooks():
    class FakeTask:  # the one-shot hooks of a task plugin
        def supernet_data(self):
            return SPLITS.weights, SPLITS.val

        def supernet_loss(self, out, target):
            return F.mse_loss(out, target)

        def supernet_score(self, batch_size):
            self.batch_size = batch_size
            return _toy_score

    task = FakeTask()
    trainer = trainer_for_task(task, ToyMixedSpace(), epochs=3, cfg={"batch_size": 4}, seed=1)
    assert task.batch_size == 4 and trainer.cfg.total_epochs == 3
    assert len(trainer.splits.weights[0]) == len(trainer.splits.arch[0]) == 16  # disjoint halves
    trainer.train_epoch()
    assert trainer.epoch == 1 and "mse" in trainer.score()[1]


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
    trainer = SupernetTrainer(supernet, seg_loss, DartsCfg(batch_size=2, steps_per_epoch=2, arch_lr=3e-3),
                              score_fn=seg_score_fn(3, batch_size=2), splits=splits, seed=0,
                              cost_fn=lambda a: {"params": float(sum(p.numel() for p in space.build(a).parameters()))})
    a0 = [p.detach().clone() for p in supernet.arch_parameters()]
    with History(tmp_path / "history.sqlite") as h:
        arch = run(space, Darts(space), trainer, h, Budget(epochs=2), work_dir=tmp_path).arch
        steps = h.steps()
        assert [s.step for s in steps] == [1, 2]
        assert all(s.result.ok and 0 <= s.result.metrics["miou"] <= 1 and s.result.cost["params"] > 0
                   for s in steps)
        assert steps[-1].arch == arch
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
        return net, SupernetTrainer(net, seg_loss, cfg, seed=0)

    net1, t1 = fresh(0)
    for _ in range(2):
        t1.train_epoch((images, labels), (images.flip(0), labels.flip(0)))
    _, t2 = fresh(0)
    t2.train_epoch((images, labels), (images.flip(0), labels.flip(0)))
    buf = io.BytesIO()
    torch.save(t2.state_dict(), buf)
    buf.seek(0)
    net3, t3 = fresh(7)
    t3.load_state_dict(torch.load(buf, weights_only=True))
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

    def search(epochs: int) -> Arch:
        strategy = Darts(space, batch_size=2, steps_per_epoch=1)
        trainer = build_supernet_trainer(space, (images, labels), (images[:2], labels[:2]), seg_loss,
                                         seg_score_fn(2, 2), epochs=2, cfg=strategy.cfg)
        with History(tmp_path / "history.sqlite") as h:
            return run(space, strategy, trainer, h, Budget(epochs=epochs), work_dir=tmp_path).arch

    first = search(1)
    last = search(2)
    with History(tmp_path / "history.sqlite") as h:
        steps, (row,) = h.steps(), h.finished()
        assert [s.step for s in steps] == [1, 2]
        assert steps[0].arch == first and steps[1].arch == last == row.arch == Arch.load(tmp_path / DERIVED)
        assert steps[1].result.cost["params"] == sum(p.numel() for p in space.build(last).parameters())
        assert row.result.reward == steps[1].result.reward and row.result.stage == 2
    assert load_checkpoint(tmp_path / CHECKPOINT)["trainer"]["cfg"]["total_epochs"] == 2

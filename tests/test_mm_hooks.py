"""``densenas.mm_hooks.HeadFirstHook`` in a real mmengine Runner: the backbone (weights and BatchNorm statistics)
stays fixed for the head-only iterations while the head learns, then everything trains, with fresh AdamW
state for the backbone; a run resumed past the head-only phase is left alone; bad settings are refused."""
from __future__ import annotations

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

from densenas.mm_hooks import HeadFirstHook


class _Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, inputs, targets=None, mode="tensor"):
        out = self.head(self.backbone(inputs))
        if mode == "loss":
            return {"loss": ((out - targets[:, None]) ** 2).mean()}
        return out


class _Data(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, 8, 8, generator=g), torch.randn(8, 8, generator=g)


def _collate(items):
    return {"inputs": torch.stack([x for x, _ in items]), "targets": torch.stack([y for _, y in items])}


def _train(tmp_path, iters: int, hook_iters: int, name: str, **hook):
    torch.manual_seed(0)
    model = _Toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = Runner(model=model, work_dir=str(tmp_path / name),
                    train_dataloader=DataLoader(_Data(), batch_size=4, collate_fn=_collate),
                    optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-2)),
                    train_cfg=dict(by_epoch=False, max_iters=iters),
                    custom_hooks=[dict(type="HeadFirstHook", iters=hook_iters, **hook)],
                    default_hooks=dict(checkpoint=None, logger=None), default_scope="mmengine")
    runner.train()
    return before, model, runner


def test_backbone_fixed_while_the_head_trains_then_everything_trains(tmp_path):
    before, model, _ = _train(tmp_path, 2, 2, "a")
    after = model.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]) == k.startswith("backbone."), k  # BN statistics included
    before, model, runner = _train(tmp_path, 5, 2, "b")
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before), "every tensor moves once the backbone trains"
    opt = runner.optim_wrapper.optimizer
    steps = {n: float(opt.state[p]["step"]) for n, p in model.named_parameters()}
    assert steps == {n: (3.0 if n.startswith("backbone.") else 5.0) for n in steps}  # fresh moments at the switch
    assert model.backbone[1].training  # its own train mode back (the toy has no norm_eval)


class _FakeRunner:
    """What the hook reads of a runner: the model, the iteration and the logger."""

    def __init__(self, model, it):
        self.model, self.iter = model, it
        self.logger = type("L", (), {"info": staticmethod(lambda msg: None)})()


def test_zero_iters_and_a_resume_past_the_phase_change_nothing_and_bad_settings_are_refused(tmp_path):
    _, plain, _ = _train(tmp_path, 3, 0, "c")
    torch.manual_seed(0)
    ref = _Toy()
    Runner(model=ref, work_dir=str(tmp_path / "d"), train_dataloader=DataLoader(_Data(), batch_size=4, collate_fn=_collate),
           optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-2)), train_cfg=dict(by_epoch=False, max_iters=3),
           default_hooks=dict(checkpoint=None, logger=None), default_scope="mmengine").train()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k]), k
    hook, model = HeadFirstHook(iters=2), _Toy()
    resumed = _FakeRunner(model, 4)
    hook.before_train(resumed)  # resumed at iteration 4 of a run whose head-only phase was 2 iterations
    w = model.backbone[0].weight.detach().clone()
    with torch.no_grad():
        model.backbone[0].weight.add_(1.0)
    hook.before_train_iter(resumed, 4)
    hook.after_train_iter(resumed, 4)
    assert torch.equal(model.backbone[0].weight, w + 1.0) and model.backbone[1].training
    for bad in (-1, True):
        with pytest.raises(ValueError, match="iters must be"):
            HeadFirstHook(iters=bad)
    with pytest.raises(ValueError, match="no module 'neck'"):
        HeadFirstHook(1, module="neck").before_train(_FakeRunner(_Toy(), 0))


def test_decayed_head_lr_and_a_full_restart(tmp_path):
    """``decay_lr``: the head-only phase trains at the config's rates times (1 - i / iters) ** 0.9, and the
    config's schedule goes on unchanged; ``restart="all"``: every parameter's AdamW state restarts at the switch."""
    seen = []

    class Spy(torch.optim.AdamW):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    from mmengine.registry import OPTIMIZERS
    OPTIMIZERS.register_module(name="SpyAdamW", module=Spy, force=True)
    torch.manual_seed(0)
    model = _Toy()
    runner = Runner(model=model, work_dir=str(tmp_path / "f"),
                    train_dataloader=DataLoader(_Data(), batch_size=4, collate_fn=_collate),
                    optim_wrapper=dict(optimizer=dict(type="SpyAdamW", lr=1e-2)),
                    param_scheduler=[dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=6, by_epoch=False)],
                    train_cfg=dict(by_epoch=False, max_iters=6),
                    custom_hooks=[dict(type="HeadFirstHook", iters=2, decay_lr=True, restart="all")],
                    default_hooks=dict(checkpoint=None, logger=None), default_scope="mmengine")
    runner.train()
    config = [1e-2 * (1 - i / 5) ** 0.9 for i in range(6)]  # mmengine's PolyLR reaches 0 at its last step
    want = [config[0], config[1] * 0.5 ** 0.9, *config[2:]]  # head-only iterations 0 and 1 scaled, then as is
    assert seen == pytest.approx(want, rel=1e-9)
    opt = runner.optim_wrapper.optimizer
    assert {float(opt.state[p]["step"]) for p in model.parameters()} == {4.0}  # 6 steps, restarted after 2
    with pytest.raises(ValueError, match="restart must be"):
        HeadFirstHook(2, restart="head")

"""The pieces that keep a candidate's training loop off the host (``densenas/evaluation/device_loop.py``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from densenas.devicecheck import EMULATED, DeviceMixCheck
from densenas.evaluation.common import Diverged
from densenas.evaluation.device_loop import DeviceCopies, LossWatch, PolyakAverage, autocast
from densenas.evaluation.proxy_cfg import ProxyCfg


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_polyak_average_is_averaged_models_arithmetic_bit_for_bit():
    net = _net()
    ours = PolyakAverage(net, 0.9)
    theirs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(5):
        net.train()
        loss = net(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(step))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.update(net)
        theirs.update_parameters(net)
    for a, b in zip([*ours.module.parameters(), *ours.module.buffers()],
                    [*theirs.module.parameters(), *theirs.module.buffers()]):
        assert torch.equal(a, b)
    assert ours.updates == 5 and not torch.equal(ours.module[0].weight, net[0].weight)


def test_loss_watch_reads_in_blocks_and_names_the_first_bad_step():
    watch = LossWatch(stage=1, every=4)
    for v in (1.0, 0.5, 0.25):
        watch.add(torch.tensor(v))
    assert watch.values() == [1.0, 0.5, 0.25]
    watch = LossWatch(stage=2, every=4)
    watch.add(torch.tensor(1.0))
    watch.add(torch.tensor(float("nan")))  # step 1: found when the block of 4 is full
    watch.add(torch.tensor(float("inf")))
    with pytest.raises(Diverged, match="loss is nan at stage 2 iter 1"):
        watch.add(torch.tensor(2.0))
    late = LossWatch(stage=1, every=25)
    for i in range(3):
        late.add(torch.tensor(math.inf if i == 2 else 1.0))
    with pytest.raises(Diverged, match="loss is inf at stage 1 iter 2"):
        late.check()  # the stage's end reads what is left


def test_device_copies_move_once_per_tensor_and_device():
    copies = DeviceCopies()
    with DeviceMixCheck() as check:  # the emulated device: a move is a real copy there
        x = torch.arange(5)
        a, b = copies(x, EMULATED), copies(x, "cpu:0")
        assert a is b and a is not x and torch.equal(a.cpu(), x) and check.side(a) == "device"
        y = torch.arange(5)  # another tensor with the same values: its own copy
        assert copies(y, EMULATED) is not a and copies(x, "cpu") is x


def test_autocast_only_where_asked():
    assert isinstance(autocast(torch.device("cpu"), "auto"), type(autocast(torch.device("cpu"), "off")))
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="evaluator.amp"):
        autocast(torch.device("cpu"), "fp8")
    for bad, key in ((dict(amp="half"), "amp"), (dict(check_every=0), "check_every")):
        with pytest.raises(ValueError, match=f"evaluator.{key}"):
            ProxyCfg(**bad)

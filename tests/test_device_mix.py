"""Every task's evaluator and both supernet spaces keep their data on the evaluator's device.

CI has no GPU, so a tensor left on the host (the IR-NAS supernet's val split once was) passes on the CPU
and crashes on CUDA. :class:`densenas.devicecheck.DeviceMixCheck` emulates a separate device on the CPU:
each test builds the task, its data and the evaluator under it, with the emulated device, and trains and
scores a tiny candidate (both stages, the zero-cost score) or a supernet epoch. Any op that would mix
host and device memory on CUDA raises :class:`~densenas.devicecheck.DeviceMixError` here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_task_contract import NAMES, TINY

from densenas.backbones import build_backbone
from densenas.build import make_space, space_class
from densenas.devicecheck import EMULATED, DeviceMixCheck, DeviceMixError
from densenas.evaluation.common import StageCfg
from densenas.evaluation.proxy import ProxyCfg, ProxyTrainer
from densenas.evaluation.supernet import trainer_for_task
from densenas.differentiable import DifferentiableSpace
from densenas.task import task_class

CASES = [(n, s) for n in NAMES for s in TINY[n]["spaces"]]


# ------------------------------------------------------------------------------ the check itself
def test_check_catches_a_host_input_to_a_device_module():
    with DeviceMixCheck() as check:
        conv = torch.nn.Conv2d(3, 4, 3).to(EMULATED)
        x = torch.randn(2, 3, 8, 8)
        with pytest.raises(DeviceMixError, match="conv2d.*host tensor \\(2, 3, 8, 8\\)"):
            conv(x)
        y = conv(x.to(EMULATED))
        assert y.device == EMULATED and x.device == torch.device("cpu")
        assert check.side(x) == "host" and check.side(y) == "device"
        # a target moved to the prediction's device, then mixed: fine, as on CUDA
        loss = (y - torch.zeros(2, 4, 6, 6).to(y.device)).pow(2).mean()
        loss.backward()
        torch.optim.AdamW(conv.parameters(), fused=True).step()
        loss * torch.tensor(2.0)  # a 0-dim host tensor is allowed (CUDA allows it)
        assert float(loss) >= 0 and y.detach().cpu().numpy().shape == (2, 4, 6, 6)
        with pytest.raises(DeviceMixError, match="numpy"):
            y.detach().numpy()
        with pytest.raises(DeviceMixError, match="host tensor"):
            torch.cat([y.detach(), torch.zeros(2, 4, 6, 6)])
        # a module left on the host, fed device data
        with pytest.raises(DeviceMixError, match="device tensor \\(2, 3, 8, 8\\)"):
            torch.nn.Conv2d(3, 4, 3)(x.to(EMULATED))
        assert check.checked > 10
    assert torch.zeros(1).device == torch.device("cpu")  # Tensor.device restored


def test_check_moves_copy_and_index_rules():
    with DeviceMixCheck() as check:
        x = torch.arange(6.0)
        d = x.to(EMULATED)
        assert d is not x and check.side(x) == "host" and check.side(d) == "device"
        assert check.side(d.to(EMULATED)) == "device"
        assert check.side(d[torch.tensor([0, 2])]) == "device"  # host index into a device tensor: allowed
        with pytest.raises(DeviceMixError, match="indexed with a device"):
            x[torch.tensor([0, 2]).to(EMULATED)]
        assert check.side(torch.zeros(3, device=EMULATED)) == "device"
        assert check.side(d.half()) == "device" and check.side(d.cpu()) == "host"


# ------------------------------------------------------------------------------ every task
def _tiny_cfg() -> ProxyCfg:
    return ProxyCfg(stage1=StageCfg(iters=2, batch_size=2, lr=1e-3),
                    stage2=StageCfg(iters=2, batch_size=2, lr=1e-4), early_stop=False,
                    eval_batch_size=2, kd_weight=0.5)


@pytest.mark.parametrize("name,space", CASES)
def test_evaluator_keeps_data_on_its_device(tmp_path, name, space):
    spec = TINY[name]
    with DeviceMixCheck() as check:
        torch.manual_seed(0)
        task = task_class(name)()
        task.build_data(spec["data"](Path(tmp_path)), log=lambda m: None)
        sp = make_space(space_class(space), dict(spec["spaces"][space]), task, source="test")
        if isinstance(sp, DifferentiableSpace):
            trainer = trainer_for_task(task, sp, epochs=1, cfg=dict(batch_size=2, steps_per_epoch=2,
                                                                    warmup_epochs=0), device=EMULATED)
            out = trainer.train_epoch()
            reward, metrics = trainer.score()
            assert np.isfinite(out["w_loss"]) and np.isfinite(reward), (out, metrics)
            assert trainer.supernet.derive() is not None if hasattr(trainer.supernet, "derive") else True
        else:
            encoder, shapes = build_backbone(spec.get("space_backbones", {}).get(space, spec["backbone"]))
            encoder = encoder.eval().to(EMULATED)
            task.prepare(encoder, shapes, device=EMULATED, work_dir=None, seed=0, log=lambda m: None)
            trainer = ProxyTrainer(task, sp, encoder, shapes, _tiny_cfg(), device=EMULATED, log=lambda m: None)
            arch = sp.sample(np.random.default_rng(0))
            result = trainer.evaluate(arch)
            assert result.ok and result.stage == 2, result.error
            assert np.isfinite(trainer.zero_cost(arch, "naswot", batch_size=2))
            longer = trainer.train_longer(arch, iters=2, stage2_iters=1)
            assert np.isfinite(longer["reward"])
        assert check.checked > 100


def test_evaluator_reports_a_mix_as_a_failed_candidate(tmp_path):
    """The check works through the trainer: a task whose targets stay on the host fails the candidate."""
    spec = TINY["segmentation"]
    with DeviceMixCheck():
        task = task_class("segmentation")()
        task.build_data(spec["data"](Path(tmp_path)), log=lambda m: None)
        sp = make_space(space_class("auxcell"), dict(spec["spaces"]["auxcell"]), task, source="test")
        encoder, shapes = build_backbone(spec["backbone"])
        encoder = encoder.eval().to(EMULATED)
        trainer = ProxyTrainer(task, sp, encoder, shapes, _tiny_cfg(), device=EMULATED, log=lambda m: None)
        good = task.batch
        task.batch = lambda split, idx, device: good(split, idx, "cpu")  # the bug: targets left on the host
        result = trainer.evaluate(sp.sample(np.random.default_rng(0)))
    assert not result.ok and "DeviceMixError" in result.error and "host tensor" in result.error


@pytest.mark.parametrize("name", ["segmentation", "depth", "keypoints"])
def test_dense_training_steps_never_read_the_device(tmp_path, name):
    """Issue #23: the proxy trainer's steps of the dense tasks read nothing back from the device, so on CUDA
    a step runs without a host synchronisation and can be replayed from a CUDA graph. Counted with the
    check's ``host_reads``: a longer training (more steps in both stages) makes no more reads than a shorter
    one (what remains is per stage and per validation: the loss watch's block read, the metrics)."""
    spec = TINY[name]
    space = next(s for n, s in CASES if n == name)
    reads = {}
    with DeviceMixCheck() as check:
        torch.manual_seed(0)
        task = task_class(name)()
        task.build_data(spec["data"](Path(tmp_path)), log=lambda m: None)
        sp = make_space(space_class(space), dict(spec["spaces"][space]), task, source="test")
        encoder, shapes = build_backbone(spec.get("space_backbones", {}).get(space, spec["backbone"]))
        encoder = encoder.eval().to(EMULATED)
        task.prepare(encoder, shapes, device=EMULATED, work_dir=None, seed=0, log=lambda m: None)
        cfg = _tiny_cfg()
        cfg.check_every = 1000  # one block read per stage, whatever its length
        trainer = ProxyTrainer(task, sp, encoder, shapes, cfg, device=EMULATED, log=lambda m: None)
        arch = sp.sample(np.random.default_rng(0))
        for iters in (2, 6):
            before = len(check.host_reads)
            out = trainer.train_longer(arch, iters=iters, stage2_iters=iters)
            assert np.isfinite(out["reward"]) and out["stage"] == 2
            reads[iters] = check.host_reads[before:]
    assert len(reads[6]) == len(reads[2]), (reads[2], reads[6])

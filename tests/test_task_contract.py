"""Contract test over every registered task plugin (timm ``test_models.py`` style): each reads a tiny
proxy set, fills its spaces' data-dependent arguments, and plays its part in the proxy trainer (images,
candidate, targets, loss, predict, metrics, reward) or the supernet trainer (data, loss, score)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.backbones import build_backbone
from densenas.build import make_space, space_class
from densenas.plugins import TASKS, available
from densenas.differentiable import DifferentiableSpace
from densenas.task import Task, task_class

#: a tiny data section and small space settings per task; a new task must add its entry here
TINY = {
    "segmentation": dict(
        data=lambda root: dict(layout="proxy", root=str(root), image_size=64,
                               proxy=dict(num_train=6, num_val=2, size=64, num_classes=3)),
        spaces={"auxcell": dict(width=8, num_cells=2, blocks_per_cell=1),
                "autodeeplab": dict(layers=2, blocks=2, filter_multiplier=4, aspp_channels=8),
                "template": dict(widths=(8, 12), num_templates=2, blocks=2)},
        backbone=dict(type="mobilenet_v2", pretrained=False),
        # a space that decodes other levels than the task's default backbone gives
        space_backbones={"template": dict(type="mobilenet_v2", out_indices=(3, 6), pretrained=False)}),
    "detection": dict(
        data=lambda root: dict(layout="proxy_coco", root=str(root), image_size=64,
                               proxy=dict(num_train=4, num_val=2, size=64, num_classes=2)),
        spaces={"nasfcos": dict(part="fpn", width=8), "nasfpn": dict(out_channels=8)},
        backbone=dict(type="mobilenet_v2", out_indices=(6, 13, 17), pretrained=False)),
    "depth": dict(
        data=lambda root: dict(layout="proxy", root=str(root), image_size=(32, 48),
                               proxy=dict(num_train=4, num_test=2, height=48, width=64)),
        spaces={"auxcell": dict(width=8, num_cells=2, blocks_per_cell=1),
                "template": dict(widths=(8, 12), num_templates=2, blocks=2)},
        backbone=dict(type="mobilenet_v2", pretrained=False),
        space_backbones={"template": dict(type="mobilenet_v2", out_indices=(3, 6), pretrained=False)}),
    "keypoints": dict(
        data=lambda root: dict(layout="proxy", root=str(root), input_size=(64, 48),
                               proxy=dict(num_train=4, num_val=2, size=96)),
        spaces={"auxcell": dict(width=8, num_cells=2, blocks_per_cell=1)},
        backbone=dict(type="mobilenet_v2", pretrained=False)),
    "restoration": dict(
        data=lambda root: dict(layout="proxy", root=str(root), image_size=16,
                               proxy=dict(num_train=4, num_val=2, size=32)),
        spaces={"irnas": dict(width=4, layers=2, blocks=1)}, backbone=None),
}
# the shipped tasks: a task plugin installed from elsewhere in the same environment is not this suite's to check
NAMES = [n for n in available(TASKS) if task_class(n).__module__.startswith("densenas.tasks.")]


def test_every_task_has_a_contract_entry():
    missing = sorted(set(NAMES) - set(TINY))
    assert not missing, f"add a TINY entry (data section, space settings) for task(s) {missing}"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Task]:
    out = {}
    for name in NAMES:
        task = task_class(name)()
        task.build_data(TINY[name]["data"](Path(tmp_path_factory.mktemp(name))), log=lambda m: None)
        out[name] = task
    return out


@pytest.mark.parametrize("name", NAMES)
def test_task_class_declares_itself(name):
    cls = task_class(name)
    assert cls.name == name and cls.spaces and cls.reward_label
    assert set(cls.spaces) == set(TINY[name]["spaces"]), "contract entry must cover every space of the task"
    with pytest.raises((ValueError, TypeError)):
        cls(nonsense_option=1)


@pytest.mark.parametrize("name,space", [(n, s) for n in NAMES for s in TINY[n]["spaces"]])
def test_task_drives_its_spaces(built, name, space):
    task = built[name]
    sp = make_space(space_class(space), dict(TINY[name]["spaces"][space]), task, source="test")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    if isinstance(sp, DifferentiableSpace):  # one-shot: the supernet trainer's view of the task
        (x, y), (vx, vy) = task.supernet_data()
        assert len(x) == len(y) and len(vx) == len(vy) > 0
        supernet = sp.build_supernet()
        loss = task.supernet_loss(supernet(x[:2]), y[:2])
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        reward, metrics = task.supernet_score(2)(supernet, (vx, vy))
        assert np.isfinite(reward) and reward == pytest.approx(task.reward(metrics))
        return
    encoder, shapes = build_backbone(TINY[name].get("space_backbones", {}).get(space, TINY[name]["backbone"]))
    images = task.images("train")
    assert images.ndim == 4 and images.shape[1] == 3 and len(task.images("val")) > 0
    cand = task.build_candidate(sp, sp.sample(rng), shapes)
    idx = torch.arange(2)
    with torch.no_grad():
        feats = encoder.eval()(images[idx])
    losses = cand.train().loss(feats, task.batch("train", idx, "cpu"))
    assert losses and all(k.startswith("loss_") and torch.isfinite(v) for k, v in losses.items())
    sum(losses.values()).backward()
    with torch.no_grad():
        vfeats = encoder(task.images("val"))
        preds = [cand.eval().predict(vfeats, task.batch("val", torch.arange(len(task.images("val"))), "cpu"))]
    metrics = task.metrics(preds, "val")
    reward = task.reward(metrics)
    assert metrics and np.isfinite(reward)
    assert all(key in metrics for key, _ in task.report_metrics)


@pytest.mark.parametrize("name", NAMES)
def test_task_refuses_a_bad_data_key(tmp_path, name):
    from densenas.config import ConfigError

    data = TINY[name]["data"](tmp_path)
    data["imgae_size"] = 3
    with pytest.raises(ConfigError, match="imgae_size"):
        task_class(name)().build_data(data, log=lambda m: None)

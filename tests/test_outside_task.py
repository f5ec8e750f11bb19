"""A task plugged in from outside (issue #25, item 5, for tasks): a toy dense-regression task in a temporary
package ("edges": the Sobel edge magnitude of real photographs, L1 loss, mean absolute error, reward
``1 / (1 + MAE)``), declared through the ``densenas.task_plugins`` entry point group and nothing else, is searched
with two shipped spaces (``auxcell`` and ``template``) because it accepts their output kind (``dense_map``), with
no file of ``densenas/``, ``tasks/`` or ``decoders/`` edited: the history's rewards are the task's ``reward()`` of
the recorded metrics. Its own exporter (``Task.export``, reached through ``tools/export.py`` from the search's
``config.py``) asks each space for its ``decode_head`` fragment, hosts it in the package's own mmseg head with the
task's loss, and writes an ordinary mmseg ``DepthEstimator`` config that ``tools/train.py`` trains and
``tools/test.py`` evaluates, reporting the task's metric (``edges/mae``)."""
from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
from _tools import tool

from mmengine.config import Config

from densenas.history import History

ROOT = Path(__file__).resolve().parents[1]

TASK = '''
"""The toy "edges" task: per-pixel regression of the Sobel edge magnitude of a photograph."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from densenas.arch import Arch
from densenas.config import ConfigError, check_keys
from densenas.evaluation.common import Diverged
from densenas.space import SearchSpace, ShapeSpec, dense_map_forward
from densenas.task import Task, TensorForward

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # real photographs shipped with scikit-image
SCALE = 1000  # edge magnitudes are stored as uint16 thousandths (mmseg's LoadDepthAnnotation reads them back)
MANIFEST = "edges.json"


def build_edges_set(root: str, num_train: int = 8, num_val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write random crops of real photographs and their Sobel edge magnitude in mmseg's NYU layout
    (``images/{train,test}/edge_<i>.png``, ``annotations/{train,test}/edge_<i>.png``); kept when it exists."""
    from skimage import color, data, filters

    root, want = Path(root), dict(num_train=num_train, num_val=num_val, size=size, seed=seed)
    if (root / MANIFEST).is_file() and json.loads((root / MANIFEST).read_text()) == want:
        return root
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    for split, n in (("train", num_train), ("test", num_val)):
        for folder in ("images", "annotations"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo = photos[int(rng.integers(len(photos)))]
            h, w = photo.shape[:2]
            side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
            y, x = int(rng.integers(h - side)), int(rng.integers(w - side))
            img = np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR))
            edges = filters.sobel(color.rgb2gray(img))
            Image.fromarray(img).save(root / "images" / split / f"edge_{i:03d}.png")
            Image.fromarray(np.round(edges * SCALE).astype(np.uint16)).save(
                root / "annotations" / split / f"edge_{i:03d}.png")
    (root / MANIFEST).write_text(json.dumps(want))
    return root


def load_split(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """``(images N x 3 x H x W ImageNet-normalised, edges N x 1 x H x W)`` of a split, as stored."""
    names = sorted((root / "images" / split).glob("*.png"))
    imgs = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
                        for p in names]).float() / 255.0
    imgs = (imgs - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    edges = torch.stack([torch.from_numpy(np.asarray(Image.open(root / "annotations" / split / p.name),
                                                     dtype=np.float32))[None] for p in names]) / SCALE
    return imgs, edges


def edge_loss(pred: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    """L1 (or MSE) between ``pred`` resized to the target and the target."""
    pred = F.interpolate(pred, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


class EdgeCandidate(nn.Module):
    """A one-channel ``dense_map`` module regressing edge magnitude (the proxy trainer's candidate)."""

    def __init__(self, decoder: nn.Module, loss: str = "l1"):
        super().__init__()
        self.decoder, self.loss_kind = decoder, loss

    @property
    def aux_heads(self) -> nn.Module | None:
        return getattr(self.decoder, "aux_heads", None)

    def forward(self, *feats: Tensor) -> Tensor:
        return dense_map_forward(self.decoder, list(feats), False)[0]

    def loss(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out, aux = dense_map_forward(self.decoder, list(feats), self.training)
        losses = {"loss_edges": edge_loss(out, batch["edges"], self.loss_kind)}
        for i, a in enumerate(aux):
            losses[f"loss_aux{i}"] = edge_loss(a, batch["edges"], self.loss_kind)
        return losses

    def predict(self, feats: Sequence[Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        out = dense_map_forward(self.decoder, list(feats), False)[0]
        if not torch.isfinite(out).all():
            raise Diverged("non-finite edge maps at validation")
        size = tuple(batch["edges"].shape[-2:])
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)[:, 0].cpu()


class EdgeTargets:
    """The edge maps of the splits: ``batch`` and ``metrics`` (mean absolute and root-mean-square error)."""

    def __init__(self, train: Tensor, val: Tensor):
        self.edges = {"train": train, "val": val}

    def batch(self, split: str, idx: Tensor, device: Any) -> dict[str, Tensor]:
        return {"edges": self.edges[split][idx.cpu()].to(device)}

    def metrics(self, preds: list[Tensor], split: str) -> dict[str, float]:
        pred, gt = torch.cat(preds), self.edges[split][:, 0]
        if pred.shape != gt.shape:
            raise ValueError(f"predictions {tuple(pred.shape)} do not cover split {split!r} {tuple(gt.shape)}")
        err = pred - gt
        return {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt())}


class EdgesTask(Task):
    """Sobel edge magnitude regression.

    Args:
        loss: ``l1`` or ``mse``.
    """

    name = "edges"
    accepts = ("dense_map",)  # any space of this kind, the shipped ones included, without naming them
    report_metrics = (("mae", "MAE"), ("rmse", "RMSE"))
    reward_label = "reward 1 / (1 + MAE)"
    export_help = {"data_root": "default: the search's data root", "crop": "training crop (default: the data size)",
                   "iters": "default 1000", "lr": "default 3e-3", "batch_size": "default 8"}
    test_metric = (r"(^|/)mae$", False)
    deploy_output = "edges"

    def __init__(self, loss: str = "l1"):
        if loss not in ("l1", "mse"):
            raise ValueError(f"task.loss is {loss!r}; use 'l1' or 'mse'")
        self.loss_kind = loss
        self.data: dict[str, tuple[Tensor, Tensor]] = {}
        self.targets: EdgeTargets | None = None

    def build_data(self, data_cfg: Mapping[str, Any], *, source: str = "config", log=print) -> None:
        data_cfg = dict(data_cfg)
        check_keys("data", data_cfg, build_edges_set, source=source)
        if "root" not in data_cfg:
            raise ConfigError(f"{source}: 'data.root' is required")
        root = build_edges_set(**data_cfg)
        self.data = {"train": load_split(root, "train"), "val": load_split(root, "test")}
        self.targets = EdgeTargets(self.data["train"][1], self.data["val"][1])
        log(f"data: edges at {root}: {len(self.data['train'][0])} train / {len(self.data['val'][0])} val")

    def space_defaults(self) -> dict[str, Any]:
        return {"num_classes": 1}

    def images(self, split: str) -> Tensor:
        return self.data[split][0]

    def build_candidate(self, space: SearchSpace, arch: Arch, shapes: Mapping[str, ShapeSpec]) -> nn.Module:
        return EdgeCandidate(space.build(arch, shapes), self.loss_kind)

    def reward(self, metrics: Mapping[str, float]) -> float:
        return 1.0 / (1.0 + float(metrics["mae"]))

    def test_cost_model(self, model: nn.Module, cfg: Any) -> tuple[nn.Module, int, int, str]:
        from densenas.costs import count_params

        return TensorForward(model, lambda m, x: m._forward(x)), count_params(model), 3, " (aux heads included)"

    def test_size(self, cfg: Any, runner: Any) -> tuple[int, int]:
        return tuple(int(s) for s in runner.test_dataloader.dataset[0]["inputs"].shape[-2:])

    def export(self, path, *, arch: Arch | None = None, baseline: str | None = None,
               search_cfg: Mapping[str, Any] | None = None, **options: Any) -> Path:
        """An mmseg ``DepthEstimator`` config: the space's ``decode_head`` fragment (its own mmseg adapter) with
        this task's loss, hosted by :class:`toyedges.mm.EdgeHead`; data read by mmseg's ``NYUDataset``."""
        from densenas.backbones import backbone_shapes
        from densenas.export import dump_config, fill_defaults, runtime_config
        from densenas.tasks.dense import space_export_options

        if arch is None or baseline is not None:
            raise ValueError("the edges task exports found archs only (it has no baselines)")
        search_cfg = dict(search_cfg or {})
        data = dict(search_cfg.get("data") or {})
        # tools/export.py builds the task with its defaults: the searched task options are in the search's config
        loss = dict(search_cfg.get("task") or {}).get("loss", self.loss_kind)
        space = space_export_options(options, arch, search_cfg, self)  # by output kind, never by name
        fill_defaults(options, data_root=data.get("root", "data/toy_edges"), crop=data.get("size", 64), iters=1000,
                      lr=3e-3, batch_size=8, workers=2, seed=0)
        if not (Path(options["data_root"]) / MANIFEST).is_file():
            build_edges_set(options["data_root"])
        backbone = {"type": "mobilenet_v2", "pretrained": True, **dict(options.get("backbone") or {})}
        head = space.mm_fragment(arch, "decode_head", options=options, in_shapes=backbone_shapes(backbone),
                                 num_classes=1, norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
                                 loss_decode=dict(type="EdgeLoss", kind=loss),
                                 threshold=0.5)  # unused by a regressor; mmseg warns on one channel without it
        iters, crop, workers = int(options["iters"]), int(options["crop"]), int(options["workers"])
        pack = dict(type="PackSegInputs", meta_keys=("img_path", "depth_map_path", "ori_shape", "img_shape",
                                                     "pad_shape", "scale_factor", "flip", "flip_direction"))
        load = [dict(type="LoadImageFromFile"), dict(type="LoadDepthAnnotation", depth_rescale_factor=1 / SCALE)]
        ds = dict(type="NYUDataset", data_root=str(options["data_root"]), img_suffix=".png")
        train = dict(ds, data_prefix=dict(img_path="images/train", depth_map_path="annotations/train"),
                     pipeline=[*load, dict(type="RandomFlip", prob=0.5),
                               dict(type="RandomCrop", crop_size=(crop, crop)), pack])
        test = dict(ds, test_mode=True, data_prefix=dict(img_path="images/test", depth_map_path="annotations/test"),
                    pipeline=[*load, pack])
        loader = dict(num_workers=workers, persistent_workers=workers > 0)
        cfg = dict(
            densenas_task=self.name, default_scope="mmseg",
            # toyedges.mm: this task's head, loss and metric; densenas.decoders.mmseg_adapters: where the shipped
            # dense_map spaces register their mmseg decode heads (the decode_head fragments), no sibling task
            custom_imports=dict(imports=["toyedges.mm", "densenas.decoders.mmseg_adapters", *space.mm_imports],
                                allow_failed_imports=False),
            model=dict(type="DepthEstimator",
                       data_preprocessor=dict(type="SegDataPreProcessor", mean=[255 * m for m in MEAN],
                                              std=[255 * s for s in STD], bgr_to_rgb=True, pad_val=0,
                                              seg_pad_val=0, size_divisor=32, test_cfg=dict(size_divisor=32)),
                       backbone=dict(type="DenseNASBackbone", backbone=backbone),
                       decode_head=dict(type="EdgeHead", head=head), train_cfg=dict(), test_cfg=dict(mode="whole")),
            train_dataloader=dict(batch_size=int(options["batch_size"]),
                                  sampler=dict(type="InfiniteSampler", shuffle=True), dataset=train, **loader),
            val_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False), dataset=test,
                                **loader),
            test_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False), dataset=test,
                                 **loader),
            val_evaluator=dict(type="EdgeMAE"), test_evaluator=dict(type="EdgeMAE"),
            optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=float(options["lr"]),
                                                                   weight_decay=1e-4)),
            param_scheduler=[dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=iters, by_epoch=False)],
            **runtime_config(iters, int(options.get("val_interval") or iters), "edges/mae", rule="less",
                             seed=int(options["seed"]), work_dir=options.get("work_dir") or "work_dirs/edges"))
        return dump_config(cfg, path)
'''

MM = '''
"""mmseg registrations of the toy edges task (imported by its exported configs only)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModule
from mmseg.registry import METRICS, MODELS
from torch import Tensor, nn

import densenas.tasks.mmseg_backbone  # noqa: F401  (DenseNASBackbone, the shared mmseg backbone)

from .task import edge_loss


class EdgeHead(BaseModule):
    """Hosts a space's mmseg decode head (its ``mm_fragment(arch, "decode_head")``) as an edge regressor: the
    head's main map, trained with the head's ``loss_decode`` (the task's loss) against ``gt_depth_map``."""

    def __init__(self, head: dict, init_cfg: Any = None):
        super().__init__(init_cfg)
        self.head = MODELS.build(head)
        if self.head.out_channels != 1:
            raise ValueError(f"EdgeHead: one output channel, got {self.head.out_channels}")
        self.align_corners, self.num_classes, self.out_channels = self.head.align_corners, 1, 1

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.head(inputs)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: list, train_cfg: Any) -> dict[str, Tensor]:
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples])
        return {"loss_edges": self.head.loss_decode(self.forward(inputs), gt)}

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: list[dict], test_cfg: Any) -> Tensor:
        return self.head.predict_by_feat(self.forward(inputs), batch_img_metas)


class EdgeLoss(nn.Module):
    """The task's loss as an mmseg ``loss_decode``."""

    def __init__(self, kind: str = "l1", loss_weight: float = 1.0):
        super().__init__()
        self.kind, self.loss_weight = kind, float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return self.loss_weight * edge_loss(pred, target, self.kind)

    @property
    def loss_name(self) -> str:
        return "loss_edges"


class EdgeMAE(BaseMetric):
    """Mean absolute error of the predicted edge maps (``edges/mae``)."""

    default_prefix = "edges"

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            pred = s["pred_depth_map"]["data"].squeeze()
            gt = s["gt_depth_map"]["data"].squeeze().to(pred)
            self.results.append((float((pred - gt).abs().sum()), gt.numel()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        return {"mae": sum(r[0] for r in results) / sum(r[1] for r in results)}


for _registry, _cls in ((MODELS, EdgeHead), (MODELS, EdgeLoss), (METRICS, EdgeMAE)):
    if _cls.__name__ not in _registry.module_dict:  # once per process, whoever imports this module first
        _registry.register_module(module=_cls)
'''

SPACES = {  # the two shipped dense_map spaces, tiny (template decodes MobileNetV2's stride-4 and stride-8 levels),
    # each with its own task option: the exporter must take the searched one
    "auxcell": (dict(type="auxcell", width=8, num_cells=2, blocks_per_cell=1),
                dict(type="mobilenet_v2", pretrained=False), "l1"),
    "template": (dict(type="template", widths=(8, 12), num_templates=2, blocks=2),
                 dict(type="mobilenet_v2", out_indices=(3, 6), pretrained=False), "mse"),
}


@pytest.fixture
def edges_plugin(tmp_path, monkeypatch):
    """The toy package and its dist-info (entry point ``edges``) on ``sys.path``, entry-point cache cleared."""
    from densenas import plugins

    assert "edges" not in plugins.available(plugins.TASKS)
    site = tmp_path / "site"
    (site / "toyedges").mkdir(parents=True)
    (site / "toyedges" / "__init__.py").write_text('"""A toy task plugin from outside densenas."""\n')
    (site / "toyedges" / "task.py").write_text(textwrap.dedent(TASK))
    (site / "toyedges" / "mm.py").write_text(textwrap.dedent(MM))
    info = site / "toyedges-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyedges\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[densenas.task_plugins]\nedges = toyedges.task:EdgesTask\n")
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points.cache_clear()
    yield site
    for name in ("toyedges", "toyedges.task", "toyedges.mm"):
        sys.modules.pop(name, None)
    plugins._entry_points.cache_clear()


def _search_config(path: Path, space: str, data_root: Path) -> Path:
    """A search config of the toy task with ``space`` (tiny budgets, 64 px images, no pretrained weights)."""
    space_cfg, backbone, loss = SPACES[space]
    path.write_text(textwrap.dedent(f"""\
        seed = 0
        device = "cpu"
        task = dict(type="edges", loss={loss!r})
        data = dict(root={str(data_root)!r}, num_train=8, num_val=4, size=64)
        backbone = {backbone!r}
        space = {space_cfg!r}
        strategy = dict(type="random")
        evaluator = dict(type="proxy", stage1=dict(iters=3, batch_size=4, lr=3e-3),
                         stage2=dict(iters=1, batch_size=4, lr=1e-3), early_stop=False, kd_weight=0.0)
        search = dict(num_candidates=2)
        """))
    return path


def test_a_toy_task_from_outside_is_searched_with_two_shipped_spaces_exported_and_trained(tmp_path, edges_plugin,
                                                                                          capsys):
    """Search the toy task with ``auxcell`` and ``template``, then export, train (one iteration) and test each
    found arch through the task's own exporter and the shipped tools."""
    from densenas.plugins import TASKS, available
    from densenas.task import task_class

    assert "edges" in available(TASKS)
    cls = task_class("edges")
    assert cls.__module__ == "toyedges.task" and Path(sys.modules[cls.__module__].__file__).is_relative_to(tmp_path)
    task = cls()
    data = tmp_path / "edges"
    for space in SPACES:
        work = tmp_path / space
        cfg = _search_config(tmp_path / f"{space}_edges.py", space, data)
        assert tool("search")([str(cfg), "--work-dir", str(work), "--workers", "1"]) == 0, space
        with History(work / "history.sqlite") as h:
            rows = h.finished()
        assert len(rows) == 2 and all(c.arch.space == space and c.result.ok for c in rows), space
        for c in rows:  # the task's metrics went through the core untouched, and its reward is what strategies saw
            m = c.result.metrics
            assert 0 < m["mae"] <= m["rmse"] and math.isfinite(m["rmse"]) and "stage1_mae" in m and "stage2_mae" in m
            assert c.result.reward == pytest.approx(task.reward(m)) == pytest.approx(1 / (1 + m["mae"]))
        best = json.loads((work / "best_arch.json").read_text())
        assert best["space"] == space
        assert best["choices"] == max(rows, key=lambda c: c.result.reward).arch.to_dict()["choices"]

        # exported by the task's own exporter (the task comes from the search's config.py), trained, tested
        out, ft = tmp_path / f"{space}_found.py", tmp_path / f"{space}_ft"
        rc = tool("export")([str(work / "best_arch.json"), "--out", str(out), "--iters", "1", "--batch-size", "2",
                             "--workers", "0", "--work-dir", str(ft)])
        assert rc == 0, space
        exported = Config.fromfile(str(out))
        head = exported.model.decode_head
        assert exported.densenas_task == "edges" and exported.train_dataloader.dataset.data_root == str(data)
        assert head.type == "EdgeHead"  # the task's own head, hosting what the space wrote for "decode_head"
        assert head.head.type == {"auxcell": "AuxCellHead", "template": "TemplateHead"}[space]
        assert head.head.arch["choices"] == best["choices"] and head.head.num_classes == 1
        # the searched task's loss, in the space's head
        assert head.head.loss_decode == {"type": "EdgeLoss", "kind": SPACES[space][2]}
        capsys.readouterr()
        assert tool("train")([str(out)]) == 0, space
        # the toy task's metric, from its own mmseg evaluator
        assert "final val metrics: {'edges/mae': " in capsys.readouterr().out
        ckpt = ft / "iter_1.pth"
        assert ckpt.is_file(), space
        report = tmp_path / f"{space}_test.json"
        assert tool("test")([str(out), str(ckpt), "--json", str(report)]) == 0, space
        figures = json.loads(report.read_text())
        assert figures["task"] == "edges" and math.isfinite(figures["metrics"]["edges/mae"])
        assert figures["input_size"] == [64, 64] and figures["params"] > 0

"""Tests of the mmengine restoration adapters and config export of IR-NAS (Zhang, Chen, Li, Shen,
"Memory-Efficient Hierarchical Neural Architecture Search for Image Restoration"): the PSNR/SSIM metric
against hand-computed values, fixed test degradations, the model's modes, clear errors, and an exported
config for IR-NAS and a parameter-matched DnCNN trained two iterations and tested by mmengine's
``Runner``. CPU only, tiny fixtures."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.arch import Arch, InvalidArch
from densenas.datasets.restore_fixtures import write_bsd_fixture, write_rain100_fixture
from densenas.decoders.dncnn import DnCNN, dncnn_params
from densenas.decoders.irnas import IRNASNet, IRNASSpace
from densenas.tasks.restoration.export import restoration_config, restoration_pair
from densenas.costs import count_params
from densenas.tasks.restoration.functional import restoration_loss
from densenas.tasks.restoration.mm import (DenseNASRestorationDataset, DenseNASRestorationMetric,
                                           DenseNASRestorationPreprocessor, DenseNASRestorer,
                                           build_restoration_net)


@pytest.fixture(scope="module")
def bsd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bsd")
    write_bsd_fixture(root, counts={"train": 3, "val": 2}, size=(24, 32), ext="png")
    return root


@pytest.fixture(scope="module")
def arch() -> Arch:
    return IRNASSpace(width=4, layers=2, blocks=2).sample(np.random.default_rng(0))


def _bad(arch: Arch, **changes) -> dict:
    d = arch.to_dict()
    d["choices"] = dict(d["choices"], **changes)
    return d


# --------------------------------------------------------------------------------------------- metric
def test_metric_matches_hand_computed_psnr_and_ssim():
    gt = torch.full((2, 3, 16, 16), 0.5)
    pred = gt + torch.tensor([0.125, 0.0625]).view(2, 1, 1, 1)  # exact in float32
    metric = DenseNASRestorationMetric()
    metric.process({}, [dict(pred=pred[0], gt=gt[0])])
    metric.process({}, [dict(pred=pred[1], gt=gt[1])])
    out = metric.evaluate(2)
    expected_psnr = (20 * math.log10(8) + 20 * math.log10(16)) / 2  # MSE 1/64 and 1/256: 18.06 and 24.08 dB
    c1 = 0.01 ** 2  # constant images: the structure term is c2 / c2, SSIM is the luminance term
    expected_ssim = np.mean([(2 * 0.5 * p + c1) / (0.25 + p * p + c1) for p in (0.625, 0.5625)])
    assert set(out) == {"psnr", "ssim"}
    assert out["psnr"] == pytest.approx(expected_psnr, abs=1e-6)
    assert out["ssim"] == pytest.approx(expected_ssim, abs=1e-6)
    assert metric.results == []  # reset after evaluate


def test_metric_clips_predictions_and_prefixes():
    gt = torch.full((3, 16, 16), 0.875)
    metric = DenseNASRestorationMetric(prefix="val")
    metric.process({}, [dict(pred=torch.full((3, 16, 16), 1.5), gt=gt)])  # clipped to 1.0: error 1/8
    out = metric.evaluate(1)
    assert out["val/psnr"] == pytest.approx(20 * math.log10(8), abs=1e-9)
    with pytest.raises(ValueError, match="'gt'"):
        metric.process({}, [dict(pred=gt)])


# -------------------------------------------------------------------------------------------- dataset
def test_test_degradations_are_fixed_per_image(bsd):
    a = DenseNASRestorationDataset(bsd, "val", sigma=25, crop=None)
    b = DenseNASRestorationDataset(bsd, "val", sigma=25, crop=None)
    assert a.test_mode and len(a) == 2
    s0, s1 = a[0], a[1]
    assert s0["inputs"].shape == s0["gt"].shape == (3, 24, 32)
    assert torch.equal(s0["inputs"], a[0]["inputs"]) and torch.equal(s0["inputs"], b[0]["inputs"])
    assert not torch.equal(s0["inputs"] - s0["gt"], s1["inputs"] - s1["gt"])  # per-image noise
    noise = torch.cat([(s["inputs"] - s["gt"]).flatten() for s in (s0, s1)])
    assert abs(noise.std().item() - 25 / 255) < 0.1 * 25 / 255
    assert not torch.equal(s0["inputs"], DenseNASRestorationDataset(bsd, "val", sigma=25, crop=None,
                                                                    seed=1)[0]["inputs"])
    c = DenseNASRestorationDataset(bsd, "val", sigma=25, crop=16)  # center crop of the same clean image
    assert torch.equal(c[0]["gt"], s0["gt"][:, 4:20, 8:24])
    rain = DenseNASRestorationDataset(bsd, "val", task="derain", crop=16)
    r0 = rain[0]["inputs"]
    assert torch.equal(r0, rain[0]["inputs"]) and not torch.equal(r0, rain[0]["gt"])


def test_training_samples_are_random_crops(bsd):
    ds = DenseNASRestorationDataset(bsd, "train", sigma=50, crop=40)  # larger than the image: upscaled
    assert not ds.test_mode
    torch.manual_seed(0)
    x, y = ds[0], ds[0]
    assert x["inputs"].shape == (3, 40, 40) and 0 <= x["gt"].min() and x["gt"].max() <= 1
    assert not torch.equal(x["inputs"] - x["gt"], y["inputs"] - y["gt"])  # fresh noise every time


def test_rain100_pairs(tmp_path):
    write_rain100_fixture(tmp_path, n=2, size=(24, 32), split="test")
    ds = DenseNASRestorationDataset(tmp_path, "test", layout="rain100", task="derain", crop=16)
    s = ds[1]
    assert s["inputs"].shape == s["gt"].shape == (3, 16, 16)
    assert torch.equal(s["inputs"], ds[1]["inputs"]) and not torch.equal(s["inputs"], s["gt"])


def test_dataset_errors(tmp_path, bsd):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DenseNASRestorationDataset(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="test"):
        DenseNASRestorationDataset(bsd, "test")
    with pytest.raises(ValueError, match="layout"):
        DenseNASRestorationDataset(bsd, "val", layout="coco")
    with pytest.raises(ValueError, match="derain"):
        DenseNASRestorationDataset(bsd, "val", layout="rain100", task="denoise")
    with pytest.raises(ValueError, match="sigma"):
        DenseNASRestorationDataset(bsd, "val", sigma=300)
    with pytest.raises(ValueError, match="crop"):
        DenseNASRestorationDataset(bsd, "train", crop=None)


# ---------------------------------------------------------------------------------------------- model
def test_model_modes(arch):
    model = DenseNASRestorer(net=dict(type="irnas", arch=arch.to_dict(), width=4), loss=dict(lam=0.2))
    assert isinstance(model.net, IRNASNet) and model.net.widths == IRNASSpace(width=4, layers=2).widths(arch)
    assert isinstance(model.data_preprocessor, DenseNASRestorationPreprocessor)
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 16, 16)
    batch = model.data_preprocessor(dict(inputs=list(gt + 0.1), gt=list(gt)))
    assert batch["inputs"].shape == (2, 3, 16, 16) and torch.equal(batch["data_samples"], gt)
    losses = model(**batch, mode="loss")
    with torch.no_grad():
        restored = model(batch["inputs"], mode="tensor")
    assert restored.shape == gt.shape
    assert losses["loss"].requires_grad and {"mse", "psnr"} <= set(losses)
    assert losses["loss"].item() == pytest.approx(restoration_loss(restored, gt, 0.2).item(), rel=1e-5)
    model.eval()
    preds = model.test_step(dict(inputs=list(gt + 0.1), gt=list(gt)))
    assert len(preds) == 2 and torch.equal(preds[1]["gt"], gt[1]) and preds[1]["pred"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="different sizes"):
        model.data_preprocessor(dict(inputs=[gt[0], gt[0, :, :8]], gt=[gt[0], gt[0, :, :8]]))
    with pytest.raises(ValueError, match="data_samples"):
        model(gt, mode="loss")
    dn = DenseNASRestorer(net=dict(type="dncnn", width=8, depth=4))
    assert isinstance(dn.net, DnCNN) and dn.net.width == 8 and dn.net.depth == 4


def test_model_errors_name_the_problem(arch, tmp_path):
    with pytest.raises(ValueError, match="'unet' is unknown"):
        DenseNASRestorer(net=dict(type="unet"))
    with pytest.raises(ValueError, match="depht"):
        build_restoration_net(dict(type="dncnn", depht=5))
    with pytest.raises(ValueError, match="needs arch"):
        build_restoration_net(dict(type="irnas"))
    with pytest.raises(InvalidArch, match="cell.b0.op0"):
        build_restoration_net(dict(type="irnas", arch=_bad(arch, **{"cell.b0.op0": "fft"})))
    with pytest.raises(InvalidArch, match="width.l1"):
        build_restoration_net(dict(type="irnas", arch=_bad(arch, **{"width.l0": 1, "width.l1": 4})))
    with pytest.raises(InvalidArch, match="cell.b1.in1"):
        build_restoration_net(dict(type="irnas", arch=_bad(arch, **{"cell.b1.in0": 2, "cell.b1.in1": 2})))
    with pytest.raises(ValueError, match="space.type='irnas' but the arch is of space 'auxcell'"):
        build_restoration_net(dict(type="irnas", arch=dict(arch.to_dict(), space="auxcell")))
    with pytest.raises(ValueError, match="outputs 'dense_map': the restoration task exports \\['restorer'\\]"):
        build_restoration_net(dict(type="auxcell", arch=dict(arch.to_dict(), space="auxcell")))
    with pytest.raises(InvalidArch, match="'choices'"):
        build_restoration_net(dict(type="irnas", arch={"space": "irnas"}))
    with pytest.raises(ValueError, match="layers=3"):
        build_restoration_net(dict(type="irnas", arch=arch.to_dict(), layers=3))
    with pytest.raises(ValueError, match="lam"):
        DenseNASRestorer(net=dict(type="dncnn"), loss=dict(lamda=1.0))
    path = tmp_path / "derived_arch.json"
    arch.save(path)  # a search's derived_arch.json
    assert build_restoration_net(dict(type="irnas", arch=str(path), width=4)).widths == \
        IRNASSpace(width=4, layers=2).widths(arch)


# --------------------------------------------------------------------------------------------- export
def test_export_errors(arch, bsd, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        restoration_config(tmp_path / "a.py", arch=arch, data_root=str(tmp_path / "missing_root"))
    with pytest.raises(ValueError, match="arch="):
        restoration_config(tmp_path / "a.py", data_root=str(bsd))
    with pytest.raises(ValueError, match="unet"):
        restoration_config(tmp_path / "a.py", baseline="unet", data_root=str(bsd))
    with pytest.raises(InvalidArch, match="width.l1"):
        restoration_config(tmp_path / "a.py", arch=_bad(arch, **{"width.l0": 4, "width.l1": 1}),
                           data_root=str(bsd))
    assert not (tmp_path / "a.py").exists()


def test_export_reads_the_search_space_settings(arch, bsd, tmp_path):
    from mmengine.config import Config

    search_cfg = tmp_path / "config.py"  # what tools/search.py dumps into its work dir
    search_cfg.write_text('space = dict(type="irnas", width=4, layers=2, blocks=2)\n')
    cfg = Config.fromfile(restoration_config(tmp_path / "f.py", arch=arch, space=search_cfg, data_root=str(bsd)))
    net = cfg.model.net
    assert (net.width, net.layers, net.blocks, net.in_channels, net.aspp) == (4, 2, 2, 3, True)
    assert build_restoration_net(net).widths == IRNASSpace(width=4, layers=2).widths(arch)
    with pytest.raises(ValueError, match="layers=3"):
        restoration_config(tmp_path / "g.py", arch=arch, space=dict(type="irnas", layers=3), data_root=str(bsd))
    used = arch["cell.b0.op0"]
    others = [o for o in IRNASSpace().ops if o != used]
    with pytest.raises(InvalidArch, match="cell.b0.op0"):  # an op outside the searched op set
        restoration_config(tmp_path / "g.py", arch=arch, space=dict(type="irnas", ops=others),
                           data_root=str(bsd))
    with pytest.raises(ValueError, match="auxcell"):
        restoration_config(tmp_path / "g.py", arch=arch, space=dict(type="auxcell"), data_root=str(bsd))


def test_exported_configs_train_and_test_with_the_runner(arch, bsd, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    found, base = restoration_pair(tmp_path / "cfg", arch, data_root=str(bsd), sigma=25, crop=16, iters=2,
                                   batch_size=2, width=4, dncnn_depth=5, workers=0,
                                   work_dir=str(tmp_path / "wd"))
    cf, cb = Config.fromfile(found), Config.fromfile(base)
    assert "default_scope" not in cf and cf.custom_imports.imports == ["densenas.tasks.restoration.mm"]
    assert cf.train_cfg.type == "IterBasedTrainLoop" and cf.train_cfg.max_iters == 2
    assert cf.val_cfg.type == "ValLoop" and cf.test_cfg.type == "TestLoop"
    ck = cf.default_hooks.checkpoint
    assert ck.type == "CheckpointHook" and ck.save_best == "psnr" and ck.rule == "greater"
    assert cb.model.net.type == "dncnn" and cf.model.net.type == "irnas"
    shared = ("train_dataloader", "val_dataloader", "test_dataloader", "optim_wrapper", "param_scheduler",
              "train_cfg", "val_evaluator")
    assert all(cf[k] == cb[k] for k in shared) and cf.model.loss == cb.model.loss
    assert Arch.from_dict(cf.model.net.arch) == arch

    params = {}
    for name, cfg in (("irnas", cf), ("dncnn", cb)):
        runner = Runner.from_cfg(cfg)
        runner.train()
        metrics = runner.test()
        assert set(metrics) == {"psnr", "ssim"} and all(math.isfinite(v) for v in metrics.values())
        assert 0 < metrics["psnr"] <= 100 and -1 <= metrics["ssim"] <= 1
        assert list(Path(cfg.work_dir).glob("best_psnr_iter_2.pth"))
        params[name] = count_params(runner.model.net)
    assert params["irnas"] == count_params(IRNASSpace(width=4, layers=2).build(arch))
    assert params["dncnn"] >= params["irnas"]  # the smallest such width
    assert dncnn_params(cb.model.net.width - 1, 5) < params["irnas"] <= dncnn_params(cb.model.net.width, 5)

    plain = Config.fromfile(restoration_config(tmp_path / "plain.py", baseline="dncnn", data_root=str(bsd),
                                               dncnn_width=12, dncnn_depth=5, sigma=50))
    assert plain.model.net.width == 12 and plain.test_dataloader.dataset.sigma == 50
    unmatched = Config.fromfile(restoration_config(tmp_path / "u.py", arch=arch, baseline="dncnn", width=4,
                                                   match_params=False, dncnn_width=7, data_root=str(bsd)))
    assert unmatched.model.net.width == 7

"""The detection task's metrics (NAS-FCOS, Wang et al. CVPR 2020; NAS-FPN, Ghiasi et al. CVPR 2019): mmdet
sample packing, the summed-loss reward, COCO AP on hand-computed cases and Kendall's tau against a hand
count. Pure functions, no training."""
import pytest
import torch

from densenas.tasks.detection.metrics import coco_ap, det_loss_reward, det_loss_total, pack_det_samples


def test_pack_samples_and_loss_reward():
    pytest.importorskip("mmdet")
    samples = pack_det_samples([torch.tensor([[1.0, 2.0, 10.0, 12.0]]), torch.zeros(0, 4)],
                               [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], (32, 48))
    assert len(samples) == 2 and samples[0].img_shape == (32, 48) and samples[0].pad_shape == (32, 48)
    assert samples[0].scale_factor == (1.0, 1.0) and samples[1].gt_instances.bboxes.shape == (0, 4)
    losses = {"loss_cls": [torch.tensor(1.0), torch.tensor(2.0)], "loss_bbox": torch.tensor(0.5), "acc": 9.0}
    assert det_loss_total(losses).item() == pytest.approx(3.5)
    assert det_loss_reward(losses) == pytest.approx(-3.5)
    with pytest.raises(ValueError):
        pack_det_samples([torch.zeros(2, 4)], [torch.zeros(1, dtype=torch.long)], (8, 8))


def test_coco_ap_perfect_shifted_and_wrong_class():
    pytest.importorskip("pycocotools")
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[20.0, 20.0, 40.0, 50.0]])]
    gt_labels = [torch.tensor([0]), torch.tensor([1])]
    perfect = [dict(bboxes=b, scores=torch.ones(1), labels=lab) for b, lab in zip(gt_boxes, gt_labels)]
    assert coco_ap(perfect, (gt_boxes, gt_labels), 2) == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
    # Shifted by 2 px: IoU = 80 / 120 = 2/3, a match at the thresholds 0.50, 0.55, 0.60, 0.65 of ten.
    shifted = [dict(bboxes=torch.tensor([[2.0, 0.0, 12.0, 10.0]]), scores=torch.ones(1), labels=torch.tensor([0]))]
    ap = coco_ap(shifted, ([gt_boxes[0]], [gt_labels[0]]), ["a", "b"])
    assert ap == pytest.approx({"ap": 0.4, "ap50": 1.0, "ap75": 0.0})
    wrong = [dict(bboxes=gt_boxes[0], scores=torch.ones(1), labels=torch.tensor([1]))]
    assert coco_ap(wrong, ([gt_boxes[0]], [gt_labels[0]]), 2)["ap"] == 0.0
    empty = [dict(bboxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))]
    assert coco_ap(empty, ([gt_boxes[0]], [gt_labels[0]]), 2)["ap"] == 0.0
    with pytest.raises(ValueError, match="ground-truth"):
        coco_ap(empty, ([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)]), 2)



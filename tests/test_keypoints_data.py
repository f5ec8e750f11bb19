"""The proxy keypoint set (exact keypoints and visibility), the COCO / MPII readers and their errors, and the
top-down crops and heatmap targets of the keypoint task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densenas.datasets.cocokpt import KeypointFormatError, coco_paths, crop_persons, read_coco_keypoints, read_mpii
from densenas.datasets.kpt_proxy import KEYPOINT_NAMES, build_proxy_kpt, head_size, iter_scenes

K = len(KEYPOINT_NAMES)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proxy_kpt")
    build_proxy_kpt(root, num_train=6, num_val=3, size=96, seed=3)
    return root


def test_proxy_keypoints_are_where_the_joints_were_drawn(proxy):
    """Replaying the scenes: every saved keypoint is the drawn joint, a v=2 joint's pixel belongs to its
    figure, a v=1 joint's pixel is covered by something drawn later; head size is MPII's of the head box."""
    anns = []
    for split in ("train", "val"):
        anns += json.loads(coco_paths(proxy, split)[0].read_text())["annotations"]
    scenes = list(iter_scenes(9, 96, 3))
    figs = [(f, owner, i) for _, fs, owner in scenes for i, f in enumerate(fs)]
    assert len(figs) == len(anns)
    seen = set()
    for ann, (fig, owner, i) in zip(anns, figs):
        kp = np.asarray(ann["keypoints"], float).reshape(K, 3)
        np.testing.assert_allclose(kp[:, :2], fig["keypoints"], atol=1e-3)
        px = np.rint(kp[:, :2]).astype(int)
        drawn = owner[px[:, 1], px[:, 0]] == i
        assert (drawn == (kp[:, 2] == 2)).all() and np.isin(kp[:, 2], (1, 2)).all()
        seen |= set(kp[:, 2].tolist())
        assert ann["head_size"] == pytest.approx(head_size(ann["head_box"]), abs=1e-3)
        x1, y1, x2, y2 = ann["head_box"]
        assert x1 <= kp[0, 0] <= x2 and y1 <= kp[0, 1] <= y2  # head_top lies inside the drawn head
        bx, by, bw, bh = ann["bbox"]
        assert (kp[:, 0] >= bx).all() and (kp[:, 0] <= bx + bw).all() and (kp[:, 1] >= by).all()
    assert seen == {1, 2}, "the set must hold occluded (v=1) and visible (v=2) joints"


def test_proxy_set_is_reused_and_rebuilt(proxy, tmp_path):
    manifest = json.loads((proxy / "densenas_proxy_kpt.json").read_text())
    stamp = coco_paths(proxy, "train")[0].stat().st_mtime_ns
    assert build_proxy_kpt(proxy, num_train=6, num_val=3, size=96, seed=3) == manifest
    assert coco_paths(proxy, "train")[0].stat().st_mtime_ns == stamp
    other = build_proxy_kpt(tmp_path, num_train=2, num_val=1, size=96, seed=4)
    assert other["params"]["seed"] == 4 and len(list((tmp_path / "train2017").glob("*.jpg"))) == 2


def test_mmpose_reads_the_proxy_set(proxy):
    """mmpose's CocoDataset (through our head-size subclass) and its metainfo file read what we wrote."""
    import densenas.tasks.keypoints.mm  # noqa: F401
    from mmpose.registry import DATASETS

    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmpose"):  # another test may have left mmseg's scope current
        ds = DATASETS.build(dict(type="CocoHeadSizeDataset", data_root=str(proxy), data_mode="topdown",
                                 ann_file="annotations/person_keypoints_val2017.json",
                                 data_prefix=dict(img="val2017/"),
                                 metainfo=dict(from_file=str(proxy / "metainfo.py")), test_mode=True, pipeline=[]))
    persons, _ = read_coco_keypoints(*coco_paths(proxy, "val"))
    assert len(ds) == len(persons) and ds.metainfo["num_keypoints"] == K
    assert ds.metainfo["flip_indices"][2] == 5 and ds.metainfo["flip_indices"][0] == 0
    info = ds[0]
    np.testing.assert_allclose(info["keypoints"][0], persons[0].keypoints, atol=1e-3)
    assert info["head_size"].item() == pytest.approx(persons[0].head_size, rel=1e-5)


def _coco(tmp_path: Path, keypoints: list, image_id: int = 1) -> Path:
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "train2017").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "train2017" / "a.jpg")
    data = dict(images=[dict(id=1, file_name="a.jpg", width=40, height=30)],
                annotations=[dict(id=7, image_id=image_id, category_id=1, bbox=[1, 1, 20, 20], area=50, iscrowd=0,
                                  keypoints=keypoints)],
                categories=[dict(id=1, name="person", keypoints=["a", "b"])])
    path = tmp_path / "annotations" / "person_keypoints_train2017.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("keypoints,image_id,match", [
    ([5, 5, 2, 45, 5, 2], 1, r"annotation id 7: 'keypoints' keypoint 1 at \(45, 5\) is outside its 40x30 image"),
    ([5, 5, 2, 6, 6, 2, 1, 1, 1], 1, r"annotation id 7: 'keypoints' has 9 values, expected 3\*K = 6"),
    ([5, 5, 6, 6], 1, r"annotation id 7: 'keypoints' has 4 values = 2\*K .* visibility flag .* missing"),
    ([5, 5, 2, 6, 6, 2], 9, r"annotation id 7: 'image_id' 9 is not in 'images'"),
    ([5, 5, 3, 6, 6, 2], 1, r"annotation id 7: 'keypoints' visibility of keypoint 0 is 3"),
])
def test_coco_reader_errors_name_file_annotation_and_field(tmp_path, keypoints, image_id, match):
    path = _coco(tmp_path, keypoints, image_id)
    with pytest.raises(KeypointFormatError, match=match) as e:
        read_coco_keypoints(path, tmp_path / "train2017")
    assert str(path) in str(e.value)


def test_coco_reader_keeps_unlabelled_points_outside_and_crops_like_mmpose(tmp_path):
    path = _coco(tmp_path, [5, 6, 2, 0, 0, 0])  # an unlabelled keypoint (v=0) may sit anywhere
    persons, info = read_coco_keypoints(path, tmp_path / "train2017")
    assert info["num_keypoints"] == 2 and persons[0].visible.tolist() == [2, 0]
    # mmpose's GetBBoxCenterScale: centre of the box, size x 1.25
    np.testing.assert_allclose(persons[0].center, [11, 11]) and np.testing.assert_allclose(persons[0].scale, [25, 25])
    imgs, centers, scales, kp = crop_persons(persons, (24, 32))
    assert imgs.shape == (1, 32, 24, 3) and np.allclose(scales[0], [25, 25 * 32 / 24])
    # crop coordinates: (x - (cx - sw/2)) * w / sw
    assert kp[0, 0, 0] == pytest.approx((5 - (11 - 12.5)) * 24 / 25, abs=1e-3)


def _mpii(tmp_path: Path, joints_vis: list, heads: bool = True) -> tuple[Path, Path, Path]:
    from scipy.io import savemat

    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "images" / "000001.jpg")
    joints = [[10 + 3 * i, 20 + 2 * i] for i in range(16)]
    ann = tmp_path / "annotations" / "mpii_val.json"
    ann.write_text(json.dumps([dict(image="000001.jpg", center=[50, 40], scale=0.3, joints=joints,
                                    joints_vis=joints_vis)]))
    mat = tmp_path / "annotations" / "mpii_gt_val.mat"
    savemat(mat, {"headboxes_src": np.array([[10.0, 20.0], [16.0, 28.0]])[:, :, None]})  # 2 corners x (x, y) x N
    return ann, tmp_path / "images", mat


def test_mpii_reader_reads_head_sizes_as_mmpose(tmp_path):
    ann, imgs, mat = _mpii(tmp_path, [1] * 15 + [0])
    persons, _ = read_mpii(ann, imgs, mat)
    assert persons[0].head_size == pytest.approx(0.6 * 10.0)  # 0.6 * ||(6, 8)||
    assert persons[0].visible.tolist() == [2] * 15 + [0]
    # mmpose's MpiiDataset: centre moved down 15/200 of the scale, minus 1; scale 0.3 * 200 (x 1.25 padding)
    np.testing.assert_allclose(persons[0].center, [49, 39 + 15 / 200 * 60], rtol=1e-6)
    np.testing.assert_allclose(persons[0].scale, [75, 75], rtol=1e-6)


def test_mpii_reader_refuses_missing_visibility(tmp_path):
    ann, imgs, mat = _mpii(tmp_path, [1] * 15)
    with pytest.raises(KeypointFormatError, match=r"mpii_val.json: annotation #0: 'joints_vis' has 15 flags"):
        read_mpii(ann, imgs, mat)


def test_task_data_targets_peak_at_the_keypoints(proxy):
    """Heatmap targets (mmpose's MSRA codec) peak at the crop coordinates of each visible keypoint."""
    from densenas.tasks.keypoints.data import build_data

    data = build_data(dict(layout="proxy", root=str(proxy), proxy=dict(num_train=6, num_val=3, size=96, seed=3),
                           input_size=(64, 48)), log=lambda m: None)
    s = data.val
    assert s.images.shape[1:] == (3, 64, 48) and s.heatmaps.shape[1:] == (K, 16, 12)
    persons, _ = read_coco_keypoints(*coco_paths(proxy, "val"))
    _, _, _, kp = crop_persons(sorted(persons, key=lambda p: (str(p.img_path), p.ann_id)), (48, 64))
    hm = s.heatmaps.numpy()
    for n in range(len(s)):
        for j in range(K):
            if s.weights[n, j] > 0:
                y, x = np.unravel_index(hm[n, j].argmax(), hm[n, j].shape)
                assert abs(x - kp[n, j, 0] / 4) <= 0.5 + 1e-6 and abs(y - kp[n, j, 1] / 4) <= 0.5 + 1e-6
    assert np.isfinite(s.head_size).all() and len(s.anns) == len(s)

# The found decoder #37 of configs/search/keypoints_proxy.py (keypoints_found_proxy.py), fine-tuned 2,000
# iterations on a 20x larger proxy keypoint set (1,200 train images / 1,799 persons, 60 val images / 90
# persons; docs/depth_keypoints.md, "A larger set and the full schedule").
# Build the set first (13 s), then train:
#   python3 -c "from densenas.datasets.kpt_proxy import build_proxy_kpt; build_proxy_kpt('data/proxy_kpt_1200', num_train=1200, num_val=60)"
#   python3 tools/train.py configs/finetune/keypoints_found_proxy_1200.py
_base_ = ['./keypoints_found_proxy.py']
R = 'data/proxy_kpt_1200'
train_dataloader = dict(dataset=dict(data_root=R, metainfo=dict(from_file=R + '/metainfo.py')))
val_dataloader = dict(dataset=dict(data_root=R, metainfo=dict(from_file=R + '/metainfo.py')))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='CocoMetric', ann_file=R + '/annotations/person_keypoints_val2017.json'),
    dict(type='PCKAccuracy', thr=0.5, norm_item='head', prefix='pckh@0.5'),
    dict(type='PCKAccuracy', thr=0.1, norm_item='head', prefix='pckh@0.1'),
]
test_evaluator = val_evaluator
train_cfg = dict(max_iters=2000, val_interval=500)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=2000, by_epoch=False)]
work_dir = 'work_dirs/keypoints_found_proxy_1200'

# The pick (#2) of configs/search/keypoints_ext_proxy_1200.py (the keypoint search on the 20x larger proxy set,
# promoted to 8x the budget with 2 seeds), as an mmpose top-down heatmap head (AuxCellHeatmapHead, 2.770 M
# parameters), on the set and schedule of keypoints_found_proxy_1200.py (docs/depth_keypoints.md, "The search
# on the larger set"). The search trained without auxiliary heads (evaluator.aux_weight=0), so the head has
# none. Written by
#   python tools/export.py work_dirs/keypoints_ext_proxy_1200/best_arch.json --width 48 --iters 2000 \
#       --val-interval 1000 --out ...
# and reduced to what differs from keypoints_found_proxy_1200.py.
#   python3 tools/train.py configs/finetune/keypoints_found_ext_proxy_1200.py
_base_ = ['./keypoints_found_proxy_1200.py']
model = dict(head=dict(
    arch=dict(choices=dict(
        _delete_=True,
        **{'cell0.in0': 3, 'cell0.in1': 2, 'cell1.in0': 2, 'cell1.in1': 1, 'cell2.in0': 1, 'cell2.in1': 0,
           'tmpl.b0.in0': 0, 'tmpl.b0.in1': 0, 'tmpl.b0.op0': 'conv3x3', 'tmpl.b0.op1': 'sep_conv_3x3_dil4',
           'tmpl.b0.merge': 'concat', 'tmpl.b1.in0': 2, 'tmpl.b1.in1': 1, 'tmpl.b1.op0': 'gap',
           'tmpl.b1.op1': 'skip', 'tmpl.b1.merge': 'concat', 'enc0.proj': 'aspp', 'enc1.proj': 'aspp',
           'enc2.proj': 'aspp', 'enc3.proj': 'deconv', 'head.fuse': 'conv1x1'})),
    aux=False, aux_weight=0.0))
train_cfg = dict(max_iters=2000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
work_dir = 'work_dirs/keypoints_found_ext_proxy_1200'

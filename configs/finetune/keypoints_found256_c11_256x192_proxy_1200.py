# Candidate #11 of the keypoint search run at 256 x 192 (configs/search/keypoints_ext_proxy_1200_256x192.py),
# promoted to its top rung, fine-tuned with the recipe of keypoints_found_ext_256x192_proxy_1200.py (256 x 192,
# UDP, the lighter augmentation, 1,000 iterations): only the arch differs (docs/depth_keypoints.md, "The search
# at 256 x 192"). 2.748 M parameters. Written from
#   python tools/export.py work_dirs/keypoints_ext_proxy_1200_256x192/history.sqlite --candidate 11 --width 48 ...
#   python3 tools/train.py configs/finetune/keypoints_found256_c11_256x192_proxy_1200.py
_base_ = ['./keypoints_found_ext_256x192_proxy_1200.py']
model = dict(head=dict(
    arch=dict(choices=dict(
        _delete_=True,
        **{'cell0.in0': 2, 'cell0.in1': 2, 'cell1.in0': 3, 'cell1.in1': 1, 'cell2.in0': 0, 'cell2.in1': 2,
           'tmpl.b0.in0': 1, 'tmpl.b0.in1': 1, 'tmpl.b0.op0': 'conv1x1', 'tmpl.b0.op1': 'sep_conv_3x3_dil2',
           'tmpl.b0.merge': 'sum', 'tmpl.b1.in0': 0, 'tmpl.b1.in1': 1, 'tmpl.b1.op0': 'sep_conv_3x3_dil4',
           'tmpl.b1.op1': 'skip', 'tmpl.b1.merge': 'sum', 'enc0.proj': 'sep_aspp', 'enc1.proj': 'sep_aspp',
           'enc2.proj': 'sep_aspp', 'enc3.proj': 'aspp', 'head.fuse': 'conv1x1'}))))
work_dir = 'work_dirs/keypoints_found256_c11_256x192_proxy_1200'

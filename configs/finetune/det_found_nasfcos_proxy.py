# NAS-FCOS (Wang et al., CVPR 2020) found by the progressive proxy search: the FPN of
# configs/search/nasfcos_fpn_proxy.py (best negative loss) with the head of configs/search/nasfcos_head_proxy.py,
# fine-tuned on the proxy COCO set. Regenerate from your own search with
# tools/export.py work_dirs/nasfcos_head_proxy/best_arch.json --iters 600
_base_ = ["./_base_/proxy_coco_mobilenetv2.py"]
work_dir = "work_dirs/det/found_nasfcos"
model = dict(
    neck=dict(type="NASFCOSSearchedFPN", in_channels=[32, 96, 320], out_channels={{_base_.width}}, num_outs=5,
              arch=dict(format=1, space="nasfcos_fpn", choices={
                  "fpn.cell0.agg": "concat", "fpn.cell0.in0": 0, "fpn.cell0.in1": 0,
                  "fpn.cell0.op0": "sep_conv_3x3_dil3", "fpn.cell0.op1": "conv1x1",
                  "fpn.cell1.agg": "sum", "fpn.cell1.in0": 0, "fpn.cell1.in1": 1,
                  "fpn.cell1.op0": "sep_conv_3x3_dil3", "fpn.cell1.op1": "sep_conv_3x3_dil3",
                  "fpn.cell2.agg": "concat", "fpn.cell2.in0": 0, "fpn.cell2.in1": 1,
                  "fpn.cell2.op0": "sep_conv_5x5", "fpn.cell2.op1": "skip", "fpn.cell3.agg": "sum",
                  "fpn.cell3.in0": 5, "fpn.cell3.in1": 2, "fpn.cell3.op0": "sep_conv_5x5",
                  "fpn.cell3.op1": "conv3x3_dil2", "fpn.cell4.agg": "concat", "fpn.cell4.in0": 6,
                  "fpn.cell4.in1": 2, "fpn.cell4.op0": "conv1x1", "fpn.cell4.op1": "skip",
                  "fpn.cell5.agg": "sum", "fpn.cell5.in0": 3, "fpn.cell5.in1": 1,
                  "fpn.cell5.op0": "deform_conv3x3", "fpn.cell5.op1": "sep_conv_5x5_dil6",
                  "fpn.cell6.agg": "sum", "fpn.cell6.in0": 8, "fpn.cell6.in1": 3,
                  "fpn.cell6.op0": "conv1x1", "fpn.cell6.op1": "conv3x3_dil2"})),
    bbox_head=dict(type="NASFCOSSearchedHead", num_classes=4, in_channels={{_base_.width}},
                   feat_channels={{_base_.width}}, strides=[8, 16, 32, 64, 128], shared_position="last",
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type="IoULoss", loss_weight=1.0),
                   loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                   arch=dict(format=1, space="nasfcos_head", choices={
                       "head.op0": "gn_sep_conv_3x3_dil3", "head.op1": "skip",
                       "head.op2": "gn_deform_conv3x3", "head.op3": "skip",
                       "head.op4": "gn_deform_conv3x3", "head.op5": "gn_deform_conv3x3",
                       "head.shared": 1})))

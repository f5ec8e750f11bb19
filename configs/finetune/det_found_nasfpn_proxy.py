# NAS-FPN (Ghiasi et al., CVPR 2019) merging cells found by configs/search/nasfpn_proxy.py (best proxy AP),
# on RetinaNet with the search's 2-conv head towers, fine-tuned on the proxy COCO set. Regenerate from your
# own search with tools/export.py work_dirs/nasfpn_proxy/best_arch.json --iters 600
_base_ = ["./det_fpn_retinanet_proxy.py"]  # data, schedule, RetinaNet head of the baseline
custom_imports = dict(imports=["densenas.tasks.detection.mm"], allow_failed_imports=False)
work_dir = "work_dirs/det/found_nasfpn"
model = dict(
    neck=dict(_delete_=True, type="NASFPNSearchedNeck", in_channels=[32, 96, 320], out_channels={{_base_.width}},
              num_outs=5, stack=1,
              arch=dict(format=1, space="nasfpn", choices={
                  "cell0.in0": 0, "cell0.in1": 3, "cell0.level": 6, "cell0.op": "gp_attention",
                  "cell1.in0": 3, "cell1.in1": 1, "cell1.level": 5, "cell1.op": "sum",
                  "cell2.in0": 3, "cell2.in1": 5, "cell2.level": 4, "cell2.op": "gp_attention",
                  "cell3.in0": 0, "cell3.in1": 7, "cell3.level": 5, "cell3.op": "gp_attention",
                  "cell4.in0": 3, "cell4.in1": 6, "cell4.level": 6, "cell4.op": "gp_attention",
                  "cell5.in0": 2, "cell5.in1": 3, "cell5.level": 3, "cell5.op": "gp_attention",
                  "cell6.in0": 6, "cell6.in1": 5, "cell6.level": 7, "cell6.op": "sum"})))

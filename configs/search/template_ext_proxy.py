# The template search (template_proxy.py) in the space's extended variant, which can express the DeepLab
# heads: a context module after the last layer (head.context: none, DeepLabV3's ASPP or DeepLabV3+'s
# separable ASPP) and the final stage (head.fuse: the paper's sum + separable conv, DeepLabV3+'s concatenation
# with the reduced stride-4 level + two 3x3 separable convs (Chen et al., ECCV 2018), or none). The paper's
# variant (template_proxy.py) stays the default. The last layer has 64 channels, not 96: an ASPP head on 96
# channels alone has 684K parameters (DeepLabV3+'s 490K), over the 500K limit of this search; on 64 channels
# the baselines (TemplateSpace(..., **EXTENDED).baseline_archs(), densenas/decoders/template.py) fit it.
# python tools/search.py configs/search/template_ext_proxy.py
_base_ = ["./template_proxy.py"]
work_dir = "work_dirs/template_ext_proxy"
space = dict(type="template", num_templates=2, blocks=2, widths=(32, 48, 64, 64),
             context_ops=["none", "aspp", "sep_aspp"], fuse_ops=["sum_sep", "concat_sep_x2", "none"])
# the baselines as this space expresses them are the first candidates (densenas/build.py: seed_baselines)
search = dict(baselines=True)

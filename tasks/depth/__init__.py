"""The monocular depth-estimation task plugin (transfer of Nekrasov et al., CVPR 2019's decoders to NYUv2)."""

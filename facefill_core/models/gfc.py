"""Context Encoder (Pathak et al., CVPR 2016) adapted to 64x64. (Filled in by the baselines work.)"""

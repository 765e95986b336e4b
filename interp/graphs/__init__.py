"""Attribution graphs over transcoder features (Ameisen et al. 2025; circuit-tracer): the frozen local
replacement model of one prompt, its graph of direct effects, pruning by influence, checks by
intervention and export."""

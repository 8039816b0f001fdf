# Run 8 of the robust compact model (issue #14): `bash scripts/gpu_session.sh 330 scripts/gpu_lanes/run8.sh`.
# From run 5's weights (lane e_motion, the shipped compact_robust.pth), a second cosine cycle with `h264_motion` in
# the mix: the same mix at a new seed, at half the rates, with a longer two-tap drag, and with JPEG down to 30.
STEPS=1900
init=(--init package:weights/compact_robust.pth --lr-schedule cosine --later-wins-ties)
motion=identity,identity,jpeg,resize,h264,h264_motion,h264_motion,resize_jpeg,brightness,contrast,blur
lanes=(
  [m_cont_seed3]="${init[*]} --seed 3 --attacks $motion"
  [n_lowlr]="${init[*]} --lr-embedder 5e-5 --lr-detector 1e-4 --attacks $motion"
  [o_reach2]="${init[*]} --motion-reach 0.025 --motion-taps 2 --attacks $motion"
  [p_q30]="${init[*]} --jpeg-min-quality 30 --attacks $motion"
)

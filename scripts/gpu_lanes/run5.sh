# Run 5 of the robust compact model (issues #13, #14): `bash scripts/gpu_session.sh 270 scripts/gpu_lanes/run5.sh`.
# From run 4's weights (lane d_nocrop_seed1), with `h264_motion` (a P/B frame's sub-pixel motion-compensated
# reference, then 4:2:0 + JPEG) for video re-encoded at CRF 30; a saturated validation score keeps the later step.
STEPS=1700
init=(--init package:weights/compact_robust.pth --lr-schedule cosine --later-wins-ties)
motion=identity,identity,jpeg,resize,h264,h264_motion,h264_motion,resize_jpeg,brightness,contrast,blur
heavy=identity,jpeg,h264,h264_motion,h264_motion,h264_motion,resize_jpeg,blur
lanes=(
  [e_motion]="${init[*]} --attacks $motion"
  [f_motion_margin]="${init[*]} --lambda-margin 0.1 --margin 3 --attacks $motion"
  [g_motion_seed2]="${init[*]} --seed 2 --attacks $motion"
  [h_motion_heavy]="${init[*]} --lr-embedder 5e-5 --lr-detector 1e-4 --attacks $heavy"
)

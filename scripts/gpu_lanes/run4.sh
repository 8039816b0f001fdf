# Run 4 of the robust compact model (issue #13): `bash scripts/gpu_session.sh 390 scripts/gpu_lanes/run4.sh`.
# From run 3's weights (compact_robust.pth when it ran), cosine learning rates over STEPS (about what a lane
# does in 390 s on an H100).
STEPS=2900
init=(--init package:weights/compact_robust.pth --lr-schedule cosine)
no_crop=identity,identity,jpeg,resize,h264,h264,resize_jpeg,brightness,contrast,blur
lanes=(
  [a_mix]="${init[*]} --attacks identity,jpeg,resize,crop,crop,crop,h264,resize_jpeg,brightness,contrast,blur"
  [b_nocrop]="${init[*]} --attacks $no_crop"
  [c_nocrop_hilr]="${init[*]} --lr-embedder 2e-4 --lr-detector 4e-4 --attacks $no_crop"
  [d_nocrop_seed1]="${init[*]} --seed 1 --attacks $no_crop"
)

# Run 3 of the robust compact model (issue #13): `bash scripts/gpu_session.sh 420 scripts/gpu_lanes/run3.sh`, then
# the same with 190 (resumes from last.pt). From run 2's weights (compact_robust.pth when it ran); constant rates.
STEPS=100000
robust=package:weights/compact_robust.pth
mix=identity,jpeg,resize,crop,crop,crop,h264,resize_jpeg,brightness,contrast,blur
lanes=(
  [a_cont]="--init $robust --attacks $mix"
  [b_hilr]="--init $robust --lr-embedder 3e-4 --lr-detector 6e-4 --attacks $mix"
  [c_crop]="--init $robust --lr-embedder 2e-4 --lr-detector 5e-4 --min-crop-area 0.3 \
    --attacks identity,jpeg,h264,crop,crop,crop,crop,resize_jpeg"
  [d_compact]="--init package:weights/compact.pth --lr-embedder 2e-4 --lr-detector 4e-4 --attacks $mix"
)

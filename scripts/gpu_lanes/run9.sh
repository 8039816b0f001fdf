# Run 9 of the robust compact model (issue #13, the crop): `bash scripts/gpu_session.sh 285 scripts/gpu_lanes/run9.sh`.
# A crop curriculum from run 5's weights (e_motion): the attack strength ramps over 90 % of the run, so the crops
# start at ~100 % of the area (the mark barely rescaled) and reach 50 %; validation's crop90 shows whether the mark
# learns to survive a small rescale at all. Constant rates (the curriculum is the schedule).
STEPS=1600
init=(--init package:weights/compact_robust.pth --ramp-fraction 0.9 --min-crop-area 0.5)
mix=identity,jpeg,h264,h264_motion,resize_jpeg,crop,crop,crop
lanes=(
  [q_crop_curriculum]="${init[*]} --attacks $mix"
  [r_crop_curriculum_hilr]="${init[*]} --lr-embedder 3e-4 --lr-detector 6e-4 --attacks $mix"
  [s_crop_only]="${init[*]} --attacks identity,crop,crop,crop"
  [t_crop_detector_fast]="${init[*]} --lr-detector 1e-3 --attacks $mix"
)

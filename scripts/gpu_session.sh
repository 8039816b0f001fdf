#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool; see README, "The compact model"):
#   1. robust fine-tuning lanes of scripts/train_robust.py side by side on the one GPU (issue #13), each stopped by
#      --time-budget, validated and checkpointed, the best weights of each lane written to $OUT/<lane>.pth;
#   2. LiteRT's CompiledModel with the GPU accelerator against the CPU on the carried .tflite files (issue #16).
# The machine has torch but not videoseal; the wheels travel in .whl (carry), the .tflite files in .gpucheck.
# Usage there: bash scripts/gpu_session.sh SECONDS_OF_TRAINING [LANES_FILE]  (scripts/gpu_lanes/: one file per run)
set -u
BUDGET=${1:-420}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" runs/gpu
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# videoseal.augmentation.video imports PyAV at module level; training never calls it, so an empty module stands in
mkdir -p /tmp/site/av && echo "# stand-in: training never decodes video" >/tmp/site/av/__init__.py
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=60
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, videoseal, timm; from videoseal_tflite.training.robust import finetune_robust; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__)" || exit 1

LANES=${2:-scripts/gpu_lanes/run5.sh}  # sets STEPS and `lanes` (name -> train_robust.py arguments)
declare -A lanes
# shellcheck source=/dev/null
source "$LANES" || exit 1
common=(--device cuda --batch 32 --threads 3 --steps "$STEPS" --eval-every 250 --checkpoint-every 1000
        --ramp-fraction 0.005 --target-psnr 38.5 --full-sizes 256 384 512 640 768 --time-budget "$BUDGET")
for lane in "${!lanes[@]}"; do
  # shellcheck disable=SC2086
  python3 scripts/train_robust.py --workdir "runs/gpu/$lane" --out "$OUT/$lane.pth" "${common[@]}" ${lanes[$lane]} \
    >"runs/gpu/$lane.log" 2>&1 &
done
if [ -d .gpucheck ]; then  # LiteRT's GPU accelerator is WebGPU over Vulkan: the loader travels in .gl (Debian .debs)
  G=/tmp/gl; mkdir -p $G
  for d in .gl/*.deb; do dpkg-deb -x "$d" $G 2>/dev/null; done
  export LD_LIBRARY_PATH=$G/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>&1 | head
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    [ -e "$icd" ] && export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd && break
  done
  if [ -z "${VK_ICD_FILENAMES:-}" ]; then
    L=$(ldconfig -p | grep -o '/[^ ]*libGLX_nvidia.so.0' | head -1)
    [ -n "$L" ] && printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}' "$L" \
      >$G/nvidia_icd.json && export VK_ICD_FILENAMES=$G/nvidia_icd.json VK_DRIVER_FILES=$G/nvidia_icd.json
  fi
  echo "vulkan driver file: ${VK_ICD_FILENAMES:-none}"
  timeout 240 python3 scripts/litert_gpu_check.py --out runs/gpu/litert_gpu.json .gpucheck/*.tflite \
    >runs/gpu/litert_gpu.log 2>&1
  tail -25 runs/gpu/litert_gpu.log
fi
wait
for lane in "${!lanes[@]}"; do echo "== $lane"; grep '^{"step"' "runs/gpu/$lane.log" | tail -3; tail -2 "runs/gpu/$lane.log"; done
tar czf "$OUT/logs.tgz" runs/gpu/*.log runs/gpu/*.json runs/gpu/*/summary.json 2>/dev/null
ls -la "$OUT"

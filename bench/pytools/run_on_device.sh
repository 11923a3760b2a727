#!/bin/bash
# On a GPU machine with torch, transformers and accelerate: make a real FSDP checkpoint, then time ckptgate and the
# Python tools on it. Needs bin/ckptgate (linux/amd64) built beforehand: make build.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
W=${WORK:-/tmp/pyb}; NP=${NPROC:-2}; OUTDIR=${OUT:-/tmp/out}
rm -rf "$W"; mkdir -p "$W"
nvidia-smi -L; nproc; free -g | head -2; df -h /tmp | tail -1
python3 -c 'import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)'
python3 -m torch.distributed.run --nproc_per_node="$NP" bench/pytools/make_ckpt.py --out "$W" \
  --side goldens/mllama-tiny-dev/base --text-layers "${TEXT_LAYERS:-2}" --vision-layers "${VISION_LAYERS:-4}" 2>&1 | grep -v -i warn | tail -20
ls -la "$W/ckpt" | head
python3 bench/pytools/compare.py --ckpt "$W/ckpt" --base "$W/base" --ckptgate "${CKPTGATE:-bin/ckptgate}" \
  --work "$W/work" --json "$OUTDIR/compare.json"

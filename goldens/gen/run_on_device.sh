#!/bin/bash
# Runs the fixture generator on a machine with 4 GPUs and packs what it made into $OUT.
#
#   bash goldens/gen/run_on_device.sh        (from the repository root)
#
# Files identical to one already in goldens/mllama-tiny-dev (the earlier run; any path, so the copies of
# tokenizer.json count too) are listed in $OUT/files.json but not packed; the rest go into
# $OUT/fx.tar.xz.part-* (15 MiB each). Environment: FX_AC=1 adds the activation-checkpointing run;
# FX_DIR is where the generator writes (default /tmp/fx); PYTHONPATH may put other torch/transformers
# versions first (see goldens/README.md).
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
: "${OUT:?set OUT to the directory that receives the results}"
FX=${FX_DIR:-/tmp/fx}
HERE=$(cd "$(dirname "$0")" && pwd)
PREV=$HERE/../mllama-tiny-dev
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "gpus", torch.cuda.device_count())'
rm -rf "$FX"; mkdir -p "$FX"
python3 "$HERE/make_fixtures.py" all --out "$FX" > "$OUT/gen.log" 2>&1
echo "generator exit $?"
grep -v -i -E "warn|^\s*$|it/s\]" "$OUT/gen.log" | tail -c 6000
python3 - "$FX" "$PREV" "$OUT/files.json" /tmp/fx-pack.txt <<'EOF'
import hashlib, json, os, sys
fx, prev, listing, pack = sys.argv[1:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
def walk(d):
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            yield os.path.relpath(p, d), p
known = {}
for rel, p in sorted(walk(prev)):
    known.setdefault(sha(p), rel)
rows, todo = [], []
for rel, p in sorted(walk(fx)):
    h = sha(p)
    rows.append({"path": rel, "size": os.path.getsize(p), "sha256": h, "same_as_previous_run": known.get(h)})
    if h not in known:
        todo.append(rel)
json.dump(rows, open(listing, "w"), indent=1)
open(pack, "w").write("".join(r + "\n" for r in todo))
print(f"{len(rows)} files, {len(rows) - len(todo)} identical to a file of the previous run, {len(todo)} packed "
      f"({sum(os.path.getsize(os.path.join(fx, r)) for r in todo)} bytes)")
EOF
tar -C "$FX" -cf - -T /tmp/fx-pack.txt | xz -T16 -6 | split -b 15m - "$OUT/fx.tar.xz.part-"
ls -la "$OUT"
cat "$FX/ENV.json"

#!/usr/bin/env python3
"""Convert one FSDP checkpoint with ckptgate and with the Python tools, each in its own process, and record wall time
and peak RSS (ru_maxrss of that process, via wait4). Usage:
    python3 compare.py --ckpt DIR --base DIR --ckptgate BIN --work DIR --json OUT.json
Tools: ckptgate convert; the llama-cookbook procedure (model from config in the default dtype, float32, as
load_llama_from_config does; load_sharded_model_single_gpu = dist_cp.load_state_dict(no_dist=True) into
{"model": model.state_dict()}; save_pretrained); torch's dcp_to_torch_save; accelerate's merge_fsdp_weights.
A plain copy of the checkpoint is the baseline.
"""
import argparse, json, os, shutil, subprocess, sys, time

COOKBOOK = r"""
import sys, torch
import torch.distributed.checkpoint as dist_cp
from transformers import AutoConfig, MllamaForConditionalGeneration
ckpt, base, out = sys.argv[1:4]
model = MllamaForConditionalGeneration(AutoConfig.from_pretrained(base))
state_dict = {"model": model.state_dict()}
dist_cp.load_state_dict(state_dict=state_dict, storage_reader=dist_cp.FileSystemReader(ckpt), no_dist=True)
model.load_state_dict(state_dict["model"])
model.save_pretrained(out)
"""
DCP_TO_TORCH = r"""
import sys
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_to_torch_save(sys.argv[1], sys.argv[2])
"""
ACCELERATE = r"""
import sys
from accelerate.utils import merge_fsdp_weights
merge_fsdp_weights(sys.argv[1], sys.argv[2], safe_serialization=True)
"""


def measure(name, argv, results):
    t = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.time() - t
    rc = os.waitstatus_to_exitcode(status)
    results.append({"tool": name, "wall_s": round(wall, 2), "peak_rss_gb": round(ru.ru_maxrss * 1024 / 1e9, 2), "rc": rc})
    print(f"{name:32s} rc={rc} wall={wall:8.2f}s peak_rss={ru.ru_maxrss * 1024 / 1e9:7.2f} GB", flush=True)
    if rc != 0:
        print(out.decode(errors="replace")[-3000:], flush=True)


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser()
    for k in ("ckpt", "base", "ckptgate", "work", "json"):
        ap.add_argument("--" + k, required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    res = []
    subprocess.run(["sh", "-c", f"cat {a.ckpt}/* > /dev/null"])  # every tool starts warm
    dropped = False
    try:
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
        dropped = True
    except OSError:
        pass
    subprocess.run(["sh", "-c", f"cat {a.ckpt}/* > /dev/null"])
    w = lambda n: os.path.join(a.work, n)
    # ckptgate syncs what it writes before publishing it; a fair copy does too.
    measure("plain copy (cp -r; sync)", ["sh", "-c", f"cp -r {a.ckpt} {w('copy')} && sync"], res)
    measure("plain copy (cp -r, no sync)", ["cp", "-r", a.ckpt, w("copy2")], res)
    measure("ckptgate convert", [a.ckptgate, "convert", "--source", a.ckpt, "--base", a.base, "--out", w("ckptgate"), "--quiet"], res)
    measure("ckptgate convert --jobs 16", [a.ckptgate, "convert", "--source", a.ckpt, "--base", a.base, "--out", w("ckptgate16"), "--quiet", "--jobs", "16"], res)
    measure("ckptgate convert --dtype fp32", [a.ckptgate, "convert", "--source", a.ckpt, "--base", a.base, "--out", w("ckptgate32"), "--quiet", "--dtype", "fp32"], res)
    measure("ckptgate verify --source", [a.ckptgate, "verify", "--model", w("ckptgate"), "--base", a.base, "--source", a.ckpt], res)
    measure("llama-cookbook procedure", [sys.executable, "-c", COOKBOOK, a.ckpt, a.base, w("cookbook")], res)
    measure("dcp_to_torch_save", [sys.executable, "-c", DCP_TO_TORCH, a.ckpt, w("dcp.pt")], res)
    measure("accelerate merge_fsdp_weights", [sys.executable, "-c", ACCELERATE, a.ckpt, w("accelerate")], res)
    sizes = {n: du(w(n)) for n in ("copy", "ckptgate", "ckptgate32", "cookbook", "dcp.pt", "accelerate") if os.path.exists(w(n))}
    info = {"checkpoint_bytes": du(a.ckpt), "output_bytes": sizes, "cpus": os.cpu_count(), "page_cache_dropped_before": dropped,
            "results": res}
    try:
        import torch, transformers, accelerate
        info["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    except Exception as e:  # noqa: BLE001
        info["versions"] = str(e)
    json.dump(info, open(a.json, "w"), indent=2)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()

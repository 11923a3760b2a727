#!/usr/bin/env python3
"""Derive the plot inputs of the renderer tests from the real mllama-tiny-dev fixtures.

Usage: python3 make_details.py ../../goldens/mllama-tiny-dev > details.json

Standard library only (no numpy, no torch), so that it runs anywhere; a few
seconds. It reads torch's files without torch: safetensors, and the DCP
directory of runs/fsdp2 (pickles read by a stub unpickler that runs nothing).
Every tensor it reads, and its own bf16 rounding, is first checked against
ref-manifests.json's sha256 (made by torch), so the numbers below are
torch's numbers.

What it computes:
  drift           runs/fsdp2 (fp32) converted to bf16 (round-to-nearest-even, torch's cast) against base/
  drift_swapped   the same with layer 0's self_attn.q_proj and o_proj swapped, as a broken converter would
  source          that conversion against the fp32 source: exact (hashes as manifests["fsdp2-bf16"])
  source_truncated the same cast done by truncation, a classic converter bug
  logits_bf16     golden-text_user last_logits (HF, fp32) against themselves rounded to bf16
  logits_wrong    golden-text_user last_logits against golden-image_user's (a swapped prompt or model)
"""
import collections
import hashlib
import io
import json
import math
import pickle
import re
import struct
import sys
import zipfile
from array import array


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "F32":
            v = array("f")
            v.frombytes(raw)
            vals = list(v)
        elif info["dtype"] == "BF16":
            h = array("H")
            h.frombytes(raw)
            vals = list(array("f", struct.pack("<%dI" % len(h), *[x << 16 for x in h])))
        else:
            continue
        out[name] = (info["shape"], vals)
    return out


class _Stub:
    """Stands for any class a torch pickle names; records its arguments and state."""

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __hash__(self):
        return id(self)


class _Unpickler(pickle.Unpickler):
    """Reads torch's pickles without torch and without running their code."""

    def __init__(self, f, storages=None):
        super().__init__(f)
        self.storages = storages

    def find_class(self, mod, name):
        if (mod, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if mod == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: ("tensor", storage, offset, tuple(size), tuple(stride))
        return type(name, (_Stub,), {})

    def persistent_load(self, pid):
        return self.storages[pid[2]]  # ('storage', type, key, location, numel)


def _size(s):
    return tuple(s.args[0])


def read_dcp_fp32(run):
    """Assembles a DCP directory's float32 tensors (FSDP2, sharded on dim 0) by fqn."""
    md = _Unpickler(open(run + "/.metadata", "rb")).load().state
    files = {}
    out = {}
    for fqn, tmd in md["state_dict_metadata"].items():
        if not hasattr(tmd, "state") or "chunks" not in tmd.state:
            continue  # bytes items
        size = _size(tmd.state["size"])
        numel = math.prod(size)
        full = [0.0] * numel
        row = numel // size[0] if size and size[0] else 0
        for idx, info in md["storage_data"].items():
            if idx.state["fqn"] != fqn:
                continue
            off0 = _size(idx.state["offset"])[0] if _size(idx.state["offset"]) else 0
            path = info.state["relative_path"]
            if path not in files:
                files[path] = open(run + "/" + path, "rb").read()
            raw = files[path][info.state["offset"]:info.state["offset"] + info.state["length"]]
            z = zipfile.ZipFile(io.BytesIO(raw))
            names = z.namelist()
            pkl = [n for n in names if n.endswith("data.pkl")][0]
            prefix = pkl[: -len("data.pkl")]
            storages = {}
            for n in names:
                if n.startswith(prefix + "data/"):
                    v = array("f")
                    v.frombytes(z.read(n))
                    storages[n[len(prefix + "data/"):]] = v
            _, storage, offset, shape, stride = _Unpickler(io.BytesIO(z.read(pkl)), storages).load()
            n = math.prod(shape)
            if n == 0:
                continue
            if len(shape) > 1 and stride != tuple(math.prod(shape[i + 1:]) for i in range(len(shape))):
                raise SystemExit("%s: non-contiguous chunk %s %s" % (fqn, shape, stride))
            full[off0 * row: off0 * row + n] = storage[offset: offset + n]
        out[fqn] = (list(size), full)
    return out


def legacy_name(fqn):
    for old, new in (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.vision_model.", "vision_model."), ("model.multi_modal_projector.", "multi_modal_projector.")):
        if fqn.startswith(old):
            return new + fqn[len(old):]
    return fqn


def f32_bits(xs):
    return array("I", array("f", xs).tobytes())


def bits_f32(us):
    return list(array("f", array("I", us).tobytes()))


def bf16_rne_bits(u):
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x7FFFFF):
        return (u | 0x400000) & 0xFFFF0000  # quiet NaN
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFFFFFF) & 0xFFFF0000


def layer_of(name):
    m = re.search(r"\.layers\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def group_of(name):
    if name.startswith("vision_model."):
        return "vision"
    if name.startswith("multi_modal_projector."):
        return "projector"
    return "text"


def l2(xs):
    return math.sqrt(sum(x * x for x in xs))


def dist(xs, ys):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(xs, ys)))


def drift(model, base, swap_margin=0.5):
    tensors = []
    by_shape = {}
    for name, (shape, _) in base.items():
        by_shape.setdefault(tuple(shape), []).append(name)
    for name in sorted(base):
        shape, b = base[name]
        _, m = model[name]
        nb = l2(b)
        own = dist(m, b)
        t = {
            "name": name,
            "layer": layer_of(name),
            "group": group_of(name),
            # The base's biases are all zeros: JSON cannot carry +Inf, so a
            # zero-norm base is measured against the model's norm instead
            # (1 when anything changed) and its norm ratio is reported as 0.
            "rel_l2": own / nb if nb else (own / l2(m) if own else 0.0),
            "max_abs": max((abs(x - y) for x, y in zip(m, b)), default=0.0),
            "changed_frac": sum(1 for x, y in zip(m, b) if x != y) / len(b),
            "norm_ratio": l2(m) / nb if nb else 0.0,
        }
        # A one-element gate is often nearer another gate's base value than
        # its own after training (real in these fixtures): swap detection
        # only means something for tensors of some size.
        if own > 0 and len(b) >= 64:
            best, best_d = None, None
            for other in by_shape[tuple(shape)]:
                if other == name:
                    continue
                d = dist(m, base[other][1])
                if best_d is None or d < best_d:
                    best, best_d = other, d
            if best is not None and best_d < swap_margin * own:
                t["nearest_other"] = best
        tensors.append(t)
    return {"tensors": tensors}


def source(model, truncate):
    tensors = []
    for name in sorted(model):
        _, x = model[name]
        us = f32_bits(x)
        rne = [bf16_rne_bits(u) for u in us]
        got = [u & 0xFFFF0000 for u in us] if truncate else rne
        gotf = bits_f32(got)
        hist = [0] * 11
        max_rel = 0.0
        for xv, gv in zip(x, gotf):
            if xv == gv:
                hist[0] += 1
                continue
            rel = abs(gv - xv) / abs(xv)
            max_rel = max(max_rel, rel)
            k = 10 + math.floor(math.log10(rel)) + 1  # [1e-(10-k+1), 1e-(10-k)) -> k
            hist[min(max(k, 1), 10)] += 1
        differing = sum(1 for a, b in zip(got, rne) if a != b)
        max_ulp = max((abs((a >> 16) - (b >> 16)) for a, b in zip(got, rne)), default=0)
        tensors.append({"name": name, "differing": differing, "max_ulp": max_ulp,
                        "max_rel_err": max_rel, "rel_err_hist": hist})
    return {"cast": "F32->BF16", "tensors": tensors}


def softmax(xs):
    mx = max(xs)
    es = [math.exp(x - mx) for x in xs]
    s = sum(es)
    return [e / s for e in es]


def logits(prompt, a_label, b_label, a, b):
    pa, pb = softmax(a), softmax(b)
    kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pa, pb) if p > 0)
    rms_d = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))
    rms_a = math.sqrt(sum(x * x for x in a) / len(a))
    top_a = sorted(range(len(a)), key=lambda i: -a[i])[:10]
    top_b = sorted(range(len(b)), key=lambda i: -b[i])[:10]
    idx = sorted(set(sorted(range(len(a)), key=lambda i: -a[i])[:50]) | set(range(0, len(a), 64)))
    return {
        "prompt": prompt, "a_label": a_label, "b_label": b_label,
        "top_ids_a": top_a, "top_ids_b": top_b,
        "top_logits_a": [round(a[i], 6) for i in top_a], "top_logits_b": [round(b[i], 6) for i in top_b],
        "kl": kl, "rel_rms": rms_d / rms_a,
        "sample": [[round(a[i], 6), round(b[i], 6)] for i in idx],
    }


def check_against_manifest(tensors, manifests, key, to_bytes):
    """Stops unless every tensor hashes as in ref-manifests.json (made by torch)."""
    for name, (shape, vals) in tensors.items():
        want = manifests[key][name]
        got = hashlib.sha256(to_bytes(vals)).hexdigest()
        if got != want["sha256"] or shape != want["shape"]:
            raise SystemExit("%s %s: sha256 %s, manifest says %s" % (key, name, got, want["sha256"]))


def main():
    root = sys.argv[1]
    manifests = json.load(open(root + "/ref-manifests.json"))["manifests"]
    base = read_st(root + "/base/model.safetensors")
    check_against_manifest(base, manifests, "base",
                           lambda v: array("H", [u >> 16 for u in f32_bits(v)]).tobytes())

    # fsdp2 trained in fp32, so its bf16 conversion rounds: the interesting
    # case. Its assembly and our rounding are proven by the manifests.
    fsdp2 = {legacy_name(k): v for k, v in read_dcp_fp32(root + "/runs/fsdp2").items()}
    check_against_manifest(fsdp2, manifests, "fsdp2-fp32", lambda v: array("f", v).tobytes())
    check_against_manifest(fsdp2, manifests, "fsdp2-bf16",
                           lambda v: array("H", [bf16_rne_bits(u) >> 16 for u in f32_bits(v)]).tobytes())
    converted = {k: (shape, bits_f32([bf16_rne_bits(u) for u in f32_bits(v)])) for k, (shape, v) in fsdp2.items()}
    swapped = dict(converted)
    q, o = "language_model.model.layers.0.self_attn.q_proj.weight", "language_model.model.layers.0.self_attn.o_proj.weight"
    swapped[q], swapped[o] = converted[o], converted[q]

    text = read_st(root + "/golden-text_user.safetensors")["last_logits"][1]
    image = read_st(root + "/golden-image_user.safetensors")["last_logits"][1]
    text_bf16 = bits_f32([bf16_rne_bits(u) for u in f32_bits(text)])
    goldens = json.load(open(root + "/goldens.json"))
    prompt = goldens["forward"]["text_user"]["rendered"]
    out = {
        "about": "derived by make_details.py from the mllama-tiny-dev fixtures (torch 2.11 FSDP, transformers 5.17)",
        "drift": drift(converted, base),
        "drift_swapped": drift(swapped, base),
        "source": source(fsdp2, truncate=False),
        "source_truncated": source(fsdp2, truncate=True),
        "logits_bf16": logits(prompt, "HF golden (fp32)", "HF golden rounded to bf16", text, text_bf16),
        "logits_wrong": logits(prompt, "HF golden text_user", "HF golden image_user", text, image),
    }
    json.dump(out, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

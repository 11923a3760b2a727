#!/usr/bin/env python3
"""Make the mllama-tiny-dev fixtures with real torch FSDP and real transformers.

Run on a machine with torch, transformers and >= 4 CUDA GPUs (no network needed):
    python3 goldens/gen/make_fixtures.py all --out /tmp/fx
Phases: base, base-hub, train, ref, goldens (each can be run alone, in that order). Everything is seeded, so
a second run reproduces the first up to the GPU's non-determinism. ENV.json records the versions that ran.

The BPE vocabulary and merges are read from the tokenizer.json of an earlier run (FX_VOCAB, by default
goldens/mllama-tiny-dev/base/tokenizer.json), so every run has the same tokenizer.

Options (environment):
    FX_VARIANT   fixture set (only "dev")
    FX_VOCAB     tokenizer.json to take model.vocab and model.merges from
    FX_AC=1      also train "fsdp1-ac": fsdp1 with llama-recipes' activation checkpointing. Off by default: with
                 transformers 5.17 the recompute breaks Mllama layers (NOTES-ON-ISSUES item 7). The run's result,
                 whichever it is, is logged; a failure does not stop the other phases.
    FX_TRAIN_TIMEOUT  seconds one training run may take (default 240), so that a hung collective cannot eat the
                 whole GPU lease.
"""
import argparse, hashlib, io, json, os, pickletools, shutil, subprocess, sys, time, traceback, zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_FROM = os.environ.get("FX_VOCAB", os.path.join(HERE, "..", "mllama-tiny-dev", "base", "tokenizer.json"))
DATE = "27 Nov 2026"
TEMPLATE = os.path.join(HERE, "llama-3.2-vision-instruct.chat_template.jinja")
REAL_PRE = {
    "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_image_tiles": 4, "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 560, "width": 560},
}
VARIANT = os.environ.get("FX_VARIANT", "dev")
V = {
    "dev": dict(seed=1234, text=dict(hidden_size=8, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                                     intermediate_size=20, cross_attention_layers=[1, 3]),
                vision=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, num_attention_heads=2,
                            intermediate_size=40, vision_output_dim=96, image_size=56, max_num_tiles=4,
                            intermediate_layers_indices=[0, 1]),
                tile=56, tiles=4,
                runs=[("fsdp1", "fsdp1-sharded", 4, ["--threads", "2"], "meta-llama/Llama-3.2-11B-Vision-Instruct"),
                      ("fsdp2", "fsdp2", 3, ["--fp32"], "meta-llama/Llama-3.2-11B-Vision-Instruct"),
                      ("freeze", "fsdp1-sharded", 2, ["--freeze", "--save-optim"], "/models/mllama-tiny-base"),
                      ("legacy", "fsdp1-sharded", 2, ["--legacy"], "meta-llama/Llama-3.2-11B-Vision-Instruct"),
                      ("full", "fsdp1-full", 2, [], "meta-llama/Llama-3.2-11B-Vision-Instruct")]),
}[VARIANT]
if os.environ.get("FX_AC") == "1":
    V["runs"].append(("fsdp1-ac", "fsdp1-sharded", 4, ["--threads", "2", "--ac"], "meta-llama/Llama-3.2-11B-Vision-Instruct"))
TINY_PRE = dict(REAL_PRE, size={"height": V["tile"], "width": V["tile"]}, max_image_tiles=V["tiles"])

LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


# ----------------------------------------------------------------------------- tokenizer

def special_tokens():
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
             "<|eot_id|>", "<|python_tag|>"]
    names += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(names))]
    toks = [(128000 + i, n) for i, n in enumerate(names)]
    toks.append((128256, "<|image|>"))
    return toks


def load_vocab(path=None):
    """model.vocab and model.merges of an earlier run's tokenizer.json, merges as "a b" strings (the form the
    Hub's Llama 3.2 tokenizer.json uses; transformers 5.x re-serialises them as pairs)."""
    path = path or VOCAB_FROM
    with open(path, encoding="utf-8") as f:
        m = json.load(f)["model"]
    if m.get("type") != "BPE":
        raise ValueError(f"{path}: model.type is {m.get('type')!r}, want BPE")
    merges = []
    for i, mg in enumerate(m["merges"]):
        if isinstance(mg, str):
            merges.append(mg)
            continue
        if len(mg) != 2 or any(" " in t for t in mg):
            raise ValueError(f"{path}: model.merges[{i}] = {mg!r} cannot be written as one 'a b' string")
        merges.append(mg[0] + " " + mg[1])
    enc = dict(sorted(m["vocab"].items(), key=lambda kv: kv[1]))
    return enc, merges


def build_tokenizer_json(path):
    enc, merges = load_vocab()
    pat = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in special_tokens()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": enc, "merges": merges},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)


def make_tokenizer(tmp):
    from transformers import PreTrainedTokenizerFast
    p = os.path.join(tmp, "tokenizer.json")
    build_tokenizer_json(p)
    tok = PreTrainedTokenizerFast(tokenizer_file=p, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|finetune_right_pad_id|>", model_max_length=131072,
                                  clean_up_tokenization_spaces=True)
    ids = tok("Hello world!", add_special_tokens=True)["input_ids"]
    log("tokenizer check 'Hello world!' ->", ids)
    assert ids == [128000, 9906, 1917, 0], ids
    assert tok.convert_tokens_to_ids("<|image|>") == 128256
    return tok


# ----------------------------------------------------------------------------- model

def tiny_config():
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig
    vision = MllamaVisionConfig(patch_size=14, initializer_range=0.3, **V["vision"])
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    try:
        text = MllamaTextConfig(vocab_size=128256, **V["text"], rope_theta=500000.0, rope_scaling=rope, max_position_embeddings=131072,
                                initializer_range=0.3, bos_token_id=128000, eos_token_id=128001, pad_token_id=128004)
    except TypeError:
        text = MllamaTextConfig(vocab_size=128256, **V["text"], rope_parameters=dict(rope, rope_theta=500000.0), max_position_embeddings=131072,
                                initializer_range=0.3, bos_token_id=128000, eos_token_id=128001, pad_token_id=128004)
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)
    cfg.architectures = ["MllamaForConditionalGeneration"]
    return cfg


def image_processor(pre, fast=False):
    from transformers import MllamaImageProcessor
    if fast:
        from transformers import MllamaImageProcessorFast
        return MllamaImageProcessorFast(**pre)
    return MllamaImageProcessor(**pre)


def make_processor(tok):
    from transformers import MllamaProcessor
    return MllamaProcessor(image_processor=image_processor(TINY_PRE), tokenizer=tok,
                           chat_template=open(TEMPLATE).read())


def phase_base(out):
    import torch
    from transformers import MllamaForConditionalGeneration, GenerationConfig
    torch.manual_seed(V["seed"])
    tmp = os.path.join(out, "_tmp")
    os.makedirs(tmp, exist_ok=True)
    tok = make_tokenizer(tmp)
    proc = make_processor(tok)
    cfg = tiny_config()
    model = MllamaForConditionalGeneration(cfg)
    with torch.no_grad():
        g = torch.Generator().manual_seed(V["seed"] + 7)
        for n, p in model.named_parameters():
            if n.endswith("gate") or n.endswith("_gate"):
                p.copy_((torch.rand(p.shape, generator=g) * 1.6 - 0.8))
        for n, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in n or "layernorm" in n) and n.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    model.generation_config = GenerationConfig(bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
                                               pad_token_id=128004, do_sample=True, temperature=0.6, top_p=0.9)
    model = model.to(torch.bfloat16)
    base = os.path.join(out, "base")
    model.save_pretrained(base, safe_serialization=True)
    proc.save_pretrained(base)
    compact_tokenizer_json(base)
    log("base files:", sorted(os.listdir(base)))
    for n, p in list(model.state_dict().items())[:3]:
        log("  key", n, tuple(p.shape), p.dtype)
    log("base params:", sum(p.numel() for p in model.parameters()))
    shutil.rmtree(tmp)


def compact_tokenizer_json(d):
    """Rewrite d/tokenizer.json without indentation (same content): tokenizers writes it pretty-printed, 17 MB
    for the Llama 3.2 vocabulary, and the repository keeps the 7 MB form."""
    p = os.path.join(d, "tokenizer.json")
    with open(p, encoding="utf-8") as f:
        doc = json.load(f)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))


def phase_base_hub(out):
    """The same base as the Hugging Face Hub serves Llama-3.2-Vision repos: legacy key names (transformers < 4.52),
    two shards with an index, and the 4.45-era side files. Written by hand from the documented formats."""
    import torch
    from safetensors.torch import load_file, save_file
    base = os.path.join(out, "base")
    hub = os.path.join(out, "base-hub")
    os.makedirs(hub, exist_ok=True)
    sd = load_file(os.path.join(base, "model.safetensors"))
    back = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
            ("model.vision_model.", "vision_model."), ("model.multi_modal_projector.", "multi_modal_projector.")]
    legacy = {}
    for k, v in sd.items():  # save_pretrained already writes the hub (legacy) names; map only if it did not
        for new, old in back:
            if k.startswith(new):
                k = old + k[len(new):]
                break
        legacy[k] = v
    keys = sorted(legacy)
    half = [k for k in keys if k.startswith("language_model.model.layers") or k.startswith("vision_model")]
    rest = [k for k in keys if k not in half]
    shards = [half, rest]
    wm, total = {}, 0
    for i, ks in enumerate(shards):
        fn = f"model-{i+1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: legacy[k].contiguous() for k in ks}, os.path.join(hub, fn), metadata={"format": "pt"})
        for k in ks:
            wm[k] = fn
            total += legacy[k].numel() * legacy[k].element_size()
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))},
              open(os.path.join(hub, "model.safetensors.index.json"), "w"), indent=2)
    cfg = json.load(open(os.path.join(base, "config.json")))
    cfg["torch_dtype"] = cfg.pop("dtype")
    rp = cfg["text_config"].pop("rope_parameters")
    cfg["text_config"]["rope_theta"] = rp.pop("rope_theta")
    cfg["text_config"]["rope_scaling"] = rp
    cfg["transformers_version"] = "4.45.0.dev0"
    json.dump(cfg, open(os.path.join(hub, "config.json"), "w"), indent=2)
    gen = json.load(open(os.path.join(base, "generation_config.json"))); gen["transformers_version"] = "4.45.0.dev0"
    json.dump(gen, open(os.path.join(hub, "generation_config.json"), "w"), indent=2)
    pre = json.load(open(os.path.join(base, "processor_config.json")))["image_processor"]
    pre["processor_class"] = "MllamaProcessor"
    json.dump(pre, open(os.path.join(hub, "preprocessor_config.json"), "w"), indent=2)
    tpl = open(TEMPLATE).read()
    json.dump({"chat_template": tpl}, open(os.path.join(hub, "chat_template.json"), "w"), indent=2)
    build_tokenizer_json(os.path.join(hub, "tokenizer.json"))
    added = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, c in special_tokens()}
    tc = {"added_tokens_decoder": added, "bos_token": "<|begin_of_text|>", "chat_template": tpl,
          "clean_up_tokenization_spaces": True, "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
          "model_max_length": 131072, "pad_token": "<|finetune_right_pad_id|>", "padding_side": "left",
          "processor_class": "MllamaProcessor", "tokenizer_class": "PreTrainedTokenizerFast"}
    json.dump(tc, open(os.path.join(hub, "tokenizer_config.json"), "w"), indent=2)
    tokd = lambda c: {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    json.dump({"bos_token": tokd("<|begin_of_text|>"), "eos_token": tokd("<|eot_id|>"), "pad_token": tokd("<|finetune_right_pad_id|>")},
              open(os.path.join(hub, "special_tokens_map.json"), "w"), indent=2)
    # transformers must load it and see the same weights
    from transformers import MllamaForConditionalGeneration, AutoProcessor
    m = MllamaForConditionalGeneration.from_pretrained(hub, dtype=torch.bfloat16)
    b = MllamaForConditionalGeneration.from_pretrained(base, dtype=torch.bfloat16)
    same = all(torch.equal(m.state_dict()[k], v) for k, v in b.state_dict().items())
    p = AutoProcessor.from_pretrained(hub)
    log("base-hub files:", sorted(os.listdir(hub)), "loads with identical weights:", same,
        "processor:", type(p).__name__, type(p.image_processor).__name__, "template ok:", bool(p.chat_template))


# ----------------------------------------------------------------------------- training (torchrun worker)

def batch_for(proc, rank, step, device):
    import torch
    from PIL import Image
    g = torch.Generator().manual_seed(V["seed"] + 1000 * rank + step)
    words = ["red", "blue", "cat", "sky", "tree", "river", "stone", "light", "night", "cloud", "happy", "small"]
    texts, images = [], []
    for b in range(2):
        n = 4 + int(torch.randint(0, 6, (1,), generator=g))
        sent = " ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g))
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
                {"role": "assistant", "content": [{"type": "text", "text": sent}]}]
        texts.append(proc.apply_chat_template(msgs, date_string=DATE))
        w = 40 + int(torch.randint(0, 120, (1,), generator=g))
        h = 40 + int(torch.randint(0, 120, (1,), generator=g))
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        images.append([Image.fromarray(arr)])
    enc = proc(images=images, text=texts, padding=True, add_special_tokens=False, return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    labels[labels == 128256] = -100  # the <|image|> token is not a target (llama-recipes masks it too)
    enc["labels"] = labels
    return {k: v.to(device) for k, v in enc.items()}


def train_params_yaml(path, run, model_name, extra):
    import yaml
    d = {"model_name": model_name, "enable_fsdp": "True", "run_validation": "False", "batch_size_training": "2",
         "batching_strategy": "padding", "context_length": "4096", "gradient_accumulation_steps": "1",
         "gradient_clipping": "False", "num_epochs": "1", "lr": "0.02", "weight_decay": "0.0", "gamma": "0.85",
         "seed": "42", "use_fp16": "False", "mixed_precision": "True", "peft_method": "lora", "use_peft": "False",
         "output_dir": "PATH/to/save/PEFT/model", "freeze_layers": "False", "freeze_LLM_only": "False",
         "quantization": "None", "one_gpu": "False", "save_model": "True",
         "dist_checkpoint_root_folder": "runs", "dist_checkpoint_folder": run, "save_optimizer": "False",
         "use_fast_kernels": "False", "sharding_strategy": "ShardingStrategy.FULL_SHARD",
         "checkpoint_type": "StateDictType.SHARDED_STATE_DICT", "fsdp_activation_checkpointing": "False",
         "fsdp_cpu_offload": "False", "pure_bf16": "True", "optimizer": "AdamW"}
    d.update(extra)
    with open(path, "w") as f:
        f.write("# settings of the fine-tuning run that wrote this checkpoint (llama-recipes style)\n")
        yaml.dump(d, f, indent=4)


def worker(args):
    import torch, torch.distributed as dist, torch.nn as nn
    import torch.distributed.checkpoint as dcp
    from transformers import MllamaForConditionalGeneration, AutoProcessor
    from transformers.models.mllama import modeling_mllama as mm
    rank = int(os.environ["RANK"]); ws = int(os.environ["WORLD_SIZE"]); lr_ = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(lr_)
    dist.init_process_group("nccl")
    dev = torch.device("cuda", lr_)
    run, mode, out = args.run, args.mode, args.out
    base = os.path.join(out, "base")
    proc = AutoProcessor.from_pretrained(base)
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    model = MllamaForConditionalGeneration.from_pretrained(base, dtype=dtype)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    torch.manual_seed(42)
    layer_cls = {mm.MllamaSelfAttentionDecoderLayer, mm.MllamaCrossAttentionDecoderLayer, mm.MllamaVisionEncoderLayer}
    if args.freeze:
        for n, p in model.named_parameters():
            p.requires_grad = not (n.startswith("model.language_model.") or n.startswith("lm_head."))
        for i in model.config.text_config.cross_attention_layers:
            for p in model.model.language_model.layers[i].parameters():
                p.requires_grad = True
    root = model
    if args.legacy:
        class LM(nn.Module):
            def __init__(self, text, head):
                super().__init__()
                self.model = text
                self.lm_head = head

        class Legacy(nn.Module):
            def __init__(self, hf):
                super().__init__()
                self.vision_model = hf.model.vision_model
                self.language_model = LM(hf.model.language_model, hf.lm_head)
                self.multi_modal_projector = hf.model.multi_modal_projector
                self._hf = [hf]

            def forward(self, **kw):
                return self._hf[0](**kw)
        root = Legacy(model)
    save_dir = os.path.join(out, "runs", run)
    root = root.to(dev)
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard, MixedPrecisionPolicy
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for m in list(root.modules()):
            if type(m) in layer_cls:
                fully_shard(m, mp_policy=mp)
        fully_shard(root, mp_policy=mp)
        wrapped = root
    else:
        import functools
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, ShardingStrategy
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            apply_activation_checkpointing, checkpoint_wrapper, CheckpointImpl)
        wrapped = FSDP(root, auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_cls),
                       sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=dev, use_orig_params=args.freeze,
                       sync_module_states=True)
        # Activation checkpointing is off by default: with transformers 5.17 its recompute doubles the K/V of
        # Mllama layers. --ac turns it on as llama-recipes does (non-reentrant checkpoint_wrapper around every
        # decoder and vision layer); the saved state dict should be the same either way (checkpoint_wrapper
        # strips its prefix on save), which the fsdp1-ac run lets one check.
        if args.ac:
            apply_activation_checkpointing(
                wrapped, checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
                check_fn=lambda m: type(m) in layer_cls)
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
            n = sum(isinstance(m, CheckpointWrapper) for m in wrapped.modules())
            if rank == 0:
                log(f"[{run}] activation checkpointing wraps {n} modules")
            assert n > 0, "activation checkpointing wrapped nothing"
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=0.02, weight_decay=0.0)
    for step in range(args.steps):
        b = batch_for(proc, rank, step, dev)
        outp = wrapped(**b, use_cache=False)
        outp.loss.backward()
        opt.step(); opt.zero_grad()
        if rank == 0:
            log(f"[{run}] step {step} loss {outp.loss.item():.4f}")
    os.makedirs(save_dir, exist_ok=True)
    dist.barrier()
    if mode == "fsdp1-sharded":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, StateDictType
        with FSDP.state_dict_type(wrapped, StateDictType.SHARDED_STATE_DICT):
            sd = {"model": wrapped.state_dict()}
            if args.save_optim:
                sd["optim"] = FSDP.optim_state_dict(wrapped, opt)
            dcp.save(sd, storage_writer=dcp.FileSystemWriter(save_dir, thread_count=args.threads,
                                                             single_file_per_rank=not args.multi_file))
    elif mode == "fsdp1-full":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, StateDictType, FullStateDictConfig
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
            cpu_state = wrapped.state_dict()
        if rank == 0:
            torch.save(cpu_state, os.path.join(save_dir, "mllama-tiny-1.pt"))
    elif mode == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        sd = get_model_state_dict(wrapped)
        sd["train_state"] = {"step": args.steps, "epoch": 1}
        dcp.save(sd, storage_writer=dcp.FileSystemWriter(save_dir, thread_count=args.threads,
                                                         single_file_per_rank=not args.multi_file))
    if rank == 0:
        extra = {"freeze_LLM_only": str(bool(args.freeze)), "save_optimizer": str(bool(args.save_optim)),
                 "pure_bf16": str(not args.fp32), "fsdp_activation_checkpointing": str(bool(args.ac))}
        if mode == "fsdp1-full":
            extra["checkpoint_type"] = "StateDictType.FULL_STATE_DICT"
        if mode == "fsdp2":
            extra["checkpoint_type"] = "fully_shard (FSDP2) get_model_state_dict"
        train_params_yaml(os.path.join(save_dir, "train_params.yaml"), run, args.model_name, extra)
        log(f"[{run}] saved:", sorted(os.listdir(save_dir)))
    dist.barrier()
    dist.destroy_process_group()


def phase_train(out, only=None):
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    import torch
    ngpu = torch.cuda.device_count()
    for i, (name, mode, nproc, flags, mname) in enumerate(V["runs"]):
        if only and name not in only:
            continue
        nproc = min(nproc, ngpu)
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={29511 + i}",
               os.path.abspath(__file__), "worker", "--out", out, "--fx-run", name, "--mode", mode,
               "--model-name", mname, "--steps", "12"] + flags
        t = time.time()
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                               timeout=float(os.environ.get("FX_TRAIN_TIMEOUT", "240")))
        except subprocess.TimeoutExpired as e:
            log(f"train {name} ws={nproc} TIMED OUT after {time.time()-t:.1f}s")
            log(str(e.stdout)[-3000:]); log(str(e.stderr)[-3000:])
            continue
        log(f"train {name} ws={nproc} rc={r.returncode} {time.time()-t:.1f}s")
        if r.returncode != 0:
            log(r.stdout[-3000:]); log(r.stderr[-6000:])
        else:
            for l in r.stdout.splitlines():
                if "saved:" in l or "step 11" in l or "step 0 " in l or "activation checkpointing" in l:
                    log("   ", l)


# ----------------------------------------------------------------------------- reference conversions

NEW_PREFIXES = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                ("vision_model.", "model.vision_model."), ("multi_modal_projector.", "model.multi_modal_projector.")]


def legacy_name(k):
    """The hub (legacy) name of an in-memory 4.52+/5.x name."""
    for old, new in NEW_PREFIXES:
        if k.startswith(new):
            return old + k[len(new):]
    return k


def load_source(path):
    """Full state dict of a run, keys as saved, tensors only."""
    import torch
    if path.endswith(".pt"):
        return torch.load(path, map_location="cpu", weights_only=True)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    tmp = path.rstrip("/") + ".tmp.pt"
    dcp_to_torch_save(path, tmp)
    sd = torch.load(tmp, map_location="cpu", weights_only=False)
    os.remove(tmp)
    flat = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}{k}.", x)
        elif isinstance(v, torch.Tensor):
            flat[prefix[:-1]] = v
    walk("", sd)
    return flat


def to_hf_keys(sd, hf_keys):
    import torch
    out = {}
    for k, v in sd.items():
        if k.startswith("optim.") or not isinstance(v, torch.Tensor):
            continue
        cand = [k]
        if k.startswith("model."):
            cand.append(k[len("model."):])
        res = None
        for c in cand:
            if c in hf_keys:
                res = c
                break
            for old, new in NEW_PREFIXES:
                if c.startswith(old) and new + c[len(old):] in hf_keys:
                    res = new + c[len(old):]
                    break
            if res:
                break
        if res is None:
            continue
        assert res not in out, res
        out[res] = v
    missing = set(hf_keys) - set(out)
    assert not missing, sorted(missing)[:10]
    return out


def tensor_sha(t):
    import torch
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        b = t.view(torch.int16).numpy().tobytes()
    else:
        b = t.numpy().tobytes()
    return hashlib.sha256(b).hexdigest()


def dtname(dt):
    import torch
    return {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}[dt]


def manifest_of_dir(d):
    from safetensors import safe_open
    import glob
    m = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                t = s.get_tensor(k)
                m[k] = {"dtype": dtname(t.dtype), "shape": list(t.shape), "sha256": tensor_sha(t)}
    return dict(sorted(m.items()))


def phase_ref(out):
    import torch
    from transformers import MllamaForConditionalGeneration
    base = os.path.join(out, "base")
    manifests = {"base": manifest_of_dir(base)}
    frozen = {}
    srcs = {r[0]: ("runs/full/mllama-tiny-1.pt" if r[1] == "fsdp1-full" else "runs/" + r[0]) for r in V["runs"]}
    base_model = MllamaForConditionalGeneration.from_pretrained(base, dtype=torch.bfloat16)
    base_sd = base_model.state_dict()
    for run, rel in srcs.items():
        p = os.path.join(out, rel)
        if not os.path.exists(p):
            log("ref: missing", p); continue
        try:
            raw = load_source(p)
            log(f"ref {run}: {len(raw)} tensors in source; first keys:", sorted(raw)[:2], "dtypes:",
                sorted({str(v.dtype) for v in raw.values()}))
            for dtn, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                m = MllamaForConditionalGeneration.from_pretrained(base, dtype=dt)
                hf = to_hf_keys(raw, set(m.state_dict().keys()))
                missing, unexpected = m.load_state_dict(hf, strict=True)
                d = os.path.join(out, "_ref", f"{run}-{dtn}")
                m.save_pretrained(d, safe_serialization=True)
                manifests[f"{run}-{dtn}"] = manifest_of_dir(d)
                if run == "fsdp1" and dtn == "fp32":
                    from transformers import AutoProcessor
                    AutoProcessor.from_pretrained(base).save_pretrained(d)
                    compact_tokenizer_json(d)
                    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
                    shutil.copytree(d, os.path.join(out, "ref", "fsdp1-fp32"))
                    log("ref/fsdp1-fp32 files:", sorted(os.listdir(d)))
            hf = to_hf_keys(raw, set(base_sd.keys()))
            # Named as save_pretrained writes them (the hub layout), like the manifests.
            frozen[run] = sorted(legacy_name(k) for k, v in hf.items() if v.dtype == base_sd[k].dtype and torch.equal(v, base_sd[k]))
            log(f"ref {run}: {len(frozen[run])} of {len(hf)} tensors identical to base")
        except Exception:
            log(f"ref {run} FAILED:\n" + traceback.format_exc())
    doc = {
        "about": "Per-tensor sha256 of what the reference procedure writes: base loaded with from_pretrained(dtype), "
                 "the run's tensors loaded into it (keys mapped to the base's layout), save_pretrained(safe_serialization=True). "
                 "sha256 is over the tensor's raw little-endian bytes in row-major order (no header). "
                 "'base' is the base model as shipped. 'identical_to_base' lists, per run, the tensors bit-identical to the base (bf16). "
                 "Tensor names are as save_pretrained writes them: transformers 5.17 writes Mllama weights in the hub (legacy) layout, "
                 "language_model.model.*, language_model.lm_head.weight, vision_model.*, multi_modal_projector.*.",
        "manifests": manifests, "identical_to_base": frozen}
    json.dump(doc, open(os.path.join(out, "ref-manifests.json"), "w"), indent=1, sort_keys=False)
    shutil.rmtree(os.path.join(out, "_ref"), ignore_errors=True)


# ----------------------------------------------------------------------------- pickle globals (for the docs)

def pickle_globals(data):
    g, proto = set(), None
    stack = []
    for op, arg, pos in pickletools.genops(data):
        if op.name == "PROTO":
            proto = arg
        if op.name in ("GLOBAL",):
            g.add(arg.replace(" ", "."))
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            stack.append(arg)
        if op.name == "STACK_GLOBAL" and len(stack) >= 2:
            g.add(stack[-2] + "." + stack[-1])
    return proto, sorted(g)


def phase_pickles(out):
    import glob
    res = {}
    for md in sorted(glob.glob(os.path.join(out, "runs", "*", ".metadata"))):
        proto, g = pickle_globals(open(md, "rb").read())
        res[os.path.relpath(md, out)] = {"protocol": proto, "globals": g}
    for f in sorted(glob.glob(os.path.join(out, "runs", "*", "*.distcp")))[:3] + sorted(glob.glob(os.path.join(out, "runs", "*", "*.pt"))):
        data = open(f, "rb").read()
        # items are embedded zips; scan for data.pkl of the first item
        i = data.find(b"PK\x03\x04")
        try:
            z = zipfile.ZipFile(io.BytesIO(data[i:]))
            names = z.namelist()
            pk = [n for n in names if n.endswith("data.pkl")][0]
            proto, g = pickle_globals(z.read(pk))
            res[os.path.relpath(f, out)] = {"first_item_zip_names": names[:8], "protocol": proto, "globals": g}
        except Exception as e:
            res[os.path.relpath(f, out)] = {"error": repr(e)}
    json.dump(res, open(os.path.join(out, "pickle-globals.json"), "w"), indent=1)
    log("pickle globals:", json.dumps(res)[:1500])


# ----------------------------------------------------------------------------- goldens

def make_images(d):
    import numpy as np
    from PIL import Image, ImageDraw
    os.makedirs(d, exist_ok=True)
    specs = [
             ("landscape_800x600.png", 800, 600, "RGB"), ("portrait_300x1200.png", 300, 1200, "RGB"),
             ("square_560x560.png", 560, 560, "RGB"), ("square_1120x1120.png", 1120, 1120, "RGB"),
             ("tiny_50x30.png", 50, 30, "RGB"), ("wide_1000x200.png", 1000, 200, "RGB"),
             ("alpha_640x480.png", 640, 480, "RGBA"), ("gray_400x300.png", 400, 300, "L"),
             ("photo_720x540.jpg", 720, 540, "RGB")]
    out = []
    for name, w, h, mode in specs:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r = 127 + 120 * np.sin(x / (w / 6.0)) * np.cos(y / (h / 4.0))
        gch = 255 * x / max(w - 1, 1)
        b = 255 * y / max(h - 1, 1)
        arr = np.stack([r, gch, b], -1).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        dr = ImageDraw.Draw(im)
        dr.rectangle([w // 5, h // 5, w // 2, h // 2], fill=(250, 20, 30))
        dr.ellipse([w // 2, h // 2, w - 2, h - 2], fill=(10, 200, 60))
        dr.line([0, h - 1, w - 1, 0], fill=(0, 0, 0), width=max(1, w // 100))
        if mode == "RGBA":
            a = (255 * x / max(w - 1, 1)).clip(0, 255).astype(np.uint8)
            im = im.convert("RGBA"); im.putalpha(Image.fromarray(a))
        elif mode == "L":
            im = im.convert("L")
        p = os.path.join(d, name)
        if name.endswith(".jpg"):
            im.save(p, quality=95)
        else:
            im.save(p, optimize=True)
        out.append(name)
    return out


CONVERSATIONS = {
    "text_user": ([{"role": "user", "content": [{"type": "text", "text": "Describe a sunset over the sea in one sentence."}]}], {}),
    "text_user_string": ([{"role": "user", "content": "What is 12 times 7?"}], {}),
    "system_text": ([{"role": "system", "content": "  You answer in French.  "},
                     {"role": "user", "content": [{"type": "text", "text": "Where is Lyon?"}]}], {}),
    "multi_turn": ([{"role": "user", "content": [{"type": "text", "text": "Hi!"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello. How can I help?"}]},
                    {"role": "user", "content": [{"type": "text", "text": "Name three rivers in Europe, with ünïcödé: Dnipro."}]}], {}),
    "image_user": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}], {}),
    "image_two": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"},
                                                 {"type": "image"}, {"type": "text", "text": " these two."}]}], {}),
    "image_multi_turn": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "A red box and a green disc."}]},
                          {"role": "user", "content": [{"type": "text", "text": "Which is larger?"}]}], {}),
    "image_with_system_raises": ([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}], {}),
    "tools": ([{"role": "user", "content": "What is the weather in Paris?"}],
              {"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
                          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                         "required": ["city"]}}}]}),
    "tool_call_and_result": ([{"role": "user", "content": "Weather in Paris?"},
                              {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
                              {"role": "tool", "content": {"temperature": 21, "sky": "clear"}}], {}),
    "no_generation_prompt": ([{"role": "user", "content": [{"type": "text", "text": "Done."}]},
                              {"role": "assistant", "content": [{"type": "text", "text": "Bye."}]}], {"add_generation_prompt": False}),
}

TOKENIZER_STRINGS = ["Hello world!", "hello world", " leading space", "trailing space ", "multiple   spaces\tand\ttabs",
                     "line1\nline2\r\n\nline4", "12345678901", "3.14159 and -42", "ünïcödé Grüße, 你好世界, こんにちは, Привет",
                     "emoji 😀👍🏽 and 🇫🇷", "can't won't I'm you'll they'd", "<|image|>What is this?",
                     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "code: def f(x):\n    return x**2",
                     "", "   ", "a" * 40, "URL https://example.com/a?b=c&d=e#f"]


def phase_goldens(out):
    import numpy as np, torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoProcessor, MllamaForConditionalGeneration
    import transformers
    base = os.path.join(out, "base")
    proc = AutoProcessor.from_pretrained(base)
    tok = proc.tokenizer
    imgs = make_images(os.path.join(out, "images"))
    gold = {"date_string": DATE, "templates": {}, "tokenizer": [], "forward": {}}
    for name, (msgs, kw) in CONVERSATIONS.items():
        kwargs = {"add_generation_prompt": True, "date_string": DATE}
        kwargs.update(kw)
        entry = {"messages": msgs, "kwargs": kwargs}
        try:
            render = tok.apply_chat_template if tok.chat_template else proc.apply_chat_template
            text = render(msgs, tokenize=False, **kwargs)
            entry["rendered"] = text
            entry["input_ids"] = tok(text, add_special_tokens=False)["input_ids"]
        except Exception as e:
            entry["error"] = str(e)
            entry["error_type"] = type(e).__name__
        try:
            text2 = proc.apply_chat_template(msgs, tokenize=False, **kwargs)
            if "rendered" in entry and text2 != entry["rendered"]:
                entry["processor_rendered_differs"] = text2
        except Exception:
            pass
        gold["templates"][name] = entry
    for s in TOKENIZER_STRINGS:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        gold["tokenizer"].append({"text": s, "ids": ids, "ids_with_bos": tok(s)["input_ids"], "decoded": tok.decode(ids),
                                  "tokens": tok.convert_ids_to_tokens(ids)})
    # preprocessing goldens
    pre = []
    g = torch.Generator().manual_seed(5)
    fast_ok = True
    for cfgname, cfg in (("llama-3.2-11b-vision", REAL_PRE), ("mllama-tiny", TINY_PRE)):
        for kind in ("default",):
            ip = image_processor(cfg)
            log("image processor:", [c.__module__ + "." + c.__name__ for c in type(ip).__mro__][:4],
                {k: getattr(ip, k) for k in ("resample", "backend", "do_convert_rgb") if hasattr(ip, k)})
            for name in imgs:
                im = Image.open(os.path.join(out, "images", name))
                r = ip(images=[[im]], return_tensors="pt")
                pv = r["pixel_values"][0, 0].float()  # [tiles, 3, H, W]
                nt = int(r["num_tiles"][0][0]) if "num_tiles" in r else None
                ar = int(r["aspect_ratio_ids"][0, 0]); mask = r["aspect_ratio_mask"][0, 0].tolist()
                T, C, H, W = pv.shape
                samples = []
                for _ in range(256):
                    t = int(torch.randint(0, max(nt or T, 1), (1,), generator=g)); c = int(torch.randint(0, 3, (1,), generator=g))
                    y = int(torch.randint(0, H, (1,), generator=g)); x = int(torch.randint(0, W, (1,), generator=g))
                    samples.append([t, c, y, x, round(float(pv[t, c, y, x]), 6)])
                means = [[round(float(pv[t, c].mean()), 6) for c in range(3)] for t in range(T)]
                pre.append({"image": "images/" + name, "size": list(im.size), "mode": im.mode, "config": cfgname,
                            "processor": kind, "processor_class": type(ip).__name__, "aspect_ratio_id": ar,
                            "aspect_ratio_mask": mask, "num_tiles": nt, "pixel_values_shape": list(pv.shape),
                            "samples": samples, "tile_channel_means": means})
    default_ip = type(AutoProcessor.from_pretrained(base).image_processor).__name__
    # slow vs fast differences
    diffs = {}
    by = {}
    for e in pre:
        by.setdefault((e["config"], e["image"]), {})[e["processor"]] = e
    for k, v in by.items():
        if "slow" in v and "fast" in v:
            a = {tuple(s[:4]): s[4] for s in v["slow"]["samples"]}
            dm = [abs(s[4] - a[tuple(s[:4])]) for s in v["fast"]["samples"] if tuple(s[:4]) in a]
            diffs["|".join(k)] = {"same_geometry": v["slow"]["aspect_ratio_id"] == v["fast"]["aspect_ratio_id"] and v["slow"]["num_tiles"] == v["fast"]["num_tiles"],
                                  "max_mean_diff": max(abs(x - y) for ra, rb in zip(v["slow"]["tile_channel_means"], v["fast"]["tile_channel_means"]) for x, y in zip(ra, rb))}
    json.dump({"about": "Mllama image preprocessing by transformers, per image, config and processor (slow=PIL, fast=torchvision). "
                        "samples: [tile, channel, y, x, value] of pixel_values[0][0]; tile_channel_means[tile][channel].",
               "default_processor_class": default_ip, "configs": {"llama-3.2-11b-vision": REAL_PRE, "mllama-tiny": TINY_PRE},
               "slow_vs_fast": diffs, "goldens": pre},
              open(os.path.join(out, "preprocess-goldens.json"), "w"), indent=1)
    log("preprocess goldens:", len(pre), "default processor:", default_ip, "slow/fast:", json.dumps(diffs)[:800])
    # forward goldens on ref/fsdp1-fp32, CPU fp32 eager
    torch.set_num_threads(8)
    ref = os.path.join(out, "ref", "fsdp1-fp32")
    try:
        forward_goldens(out, ref, gold)
    except Exception:
        log("forward goldens FAILED:\n" + traceback.format_exc())
    json.dump(gold, open(os.path.join(out, "goldens.json"), "w"), indent=1, ensure_ascii=False)
    json.dump(REAL_PRE, open(os.path.join(out, "llama-3.2-11b-vision.preprocessor_config.json"), "w"), indent=2)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def write_env(out):
    """ENV.json: the versions and hardware that made the fixtures, so that a later run under another toolchain
    can say what changed."""
    env = {}
    try:
        import torch, transformers
        env = {"torch": torch.__version__, "transformers": transformers.__version__}
    except Exception as e:
        env["import_error"] = repr(e)
    env["python"] = sys.version.split()[0]
    for m in ("safetensors", "tokenizers", "accelerate", "numpy", "PIL", "torchvision"):
        try:
            env[m] = __import__(m).__version__
        except Exception:
            pass
    try:
        import torch
        env["cuda_devices"] = torch.cuda.device_count()
        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cudnn"] = torch.backends.cudnn.version()
            env["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    except Exception as e:
        env["cuda_error"] = repr(e)
    env["made"] = time.strftime("%Y-%m-%d")
    env["generator_sha256"] = sha256_file(os.path.abspath(__file__))
    env["vocab_from_sha256"] = sha256_file(VOCAB_FROM) if os.path.exists(VOCAB_FROM) else None
    env["activation_checkpointing_run"] = os.environ.get("FX_AC") == "1"
    json.dump(env, open(os.path.join(out, "ENV.json"), "w"), indent=1)


def logits_summary(last, k=256):
    """The top k ids and logits and summary statistics of a logit vector: what a lean golden keeps instead of
    all 128256 floats."""
    import torch
    top = torch.topk(last, k)
    lp = torch.log_softmax(last.double(), -1)
    return {"top_ids": top.indices.tolist(), "top_logits": [float(x) for x in top.values],
            "stats": {"mean": float(last.double().mean()), "std": float(last.double().std(unbiased=False)),
                      "min": float(last.min()), "max": float(last.max()),
                      "logsumexp": float(torch.logsumexp(last.double(), -1)),
                      "entropy_nats": float(-(lp.exp() * lp).sum())}}


def forward_goldens(out, ref, gold):
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoProcessor, MllamaForConditionalGeneration
    if os.path.isdir(ref):
        model = MllamaForConditionalGeneration.from_pretrained(ref, dtype=torch.float32, attn_implementation="eager").eval()
        rproc = AutoProcessor.from_pretrained(ref)
        for name, image in (("text_user", None), ("image_user", "landscape_800x600.png")):
            msgs = CONVERSATIONS[name][0]
            text = rproc.apply_chat_template(msgs, add_generation_prompt=True, date_string=DATE)
            kw = {}
            if image:
                kw["images"] = [[Image.open(os.path.join(out, "images", image))]]
            enc = rproc(text=[text], add_special_tokens=False, return_tensors="pt", **kw)
            enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids",
                                                          "aspect_ratio_mask", "cross_attention_mask")}
            with torch.no_grad():
                o = model(**enc)
                last = o.logits[0, -1].float()
                try:
                    gen = model.generate(**enc, do_sample=False, max_new_tokens=12, temperature=None, top_p=None)
                except Exception:
                    log("generate FAILED:\n" + traceback.format_exc())
                    gen = enc["input_ids"]
            top = torch.topk(last, 10)
            tensors = {"last_logits": last.contiguous()}
            for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask", "input_ids"):
                if k in enc:
                    v = enc[k]
                    tensors[k] = (v.float() if v.is_floating_point() else v.to(torch.int64)).contiguous()
            save_file(tensors, os.path.join(out, f"golden-{name}.safetensors"), metadata={"format": "pt"})
            p = torch.softmax(last.double(), -1)
            gold["forward"][name] = {"model": "ref/fsdp1-fp32", "image": ("images/" + image) if image else None,
                                     "rendered": text, "input_ids": enc["input_ids"][0].tolist(),
                                     "top_ids": top.indices.tolist(), "top_logits": [round(float(x), 6) for x in top.values],
                                     "entropy_nats": float(-(p * torch.log(p)).sum()),
                                     "generated": gen[0, enc["input_ids"].shape[1]:].tolist(),
                                     "settings": "fp32 on CPU, attn_implementation=eager, greedy, max_new_tokens=12",
                                     "last_logits_top256": logits_summary(last)}
            log("forward", name, gold["forward"][name]["top_ids"][:5], gold["forward"][name]["generated"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fx-run", dest="run"); ap.add_argument("--mode"); ap.add_argument("--model-name", dest="model_name")
    ap.add_argument("--steps", type=int, default=12); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fp32", action="store_true"); ap.add_argument("--freeze", action="store_true")
    ap.add_argument("--legacy", action="store_true"); ap.add_argument("--save-optim", dest="save_optim", action="store_true")
    ap.add_argument("--multi-file", dest="multi_file", action="store_true")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing (fsdp1 modes)")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    if a.phase == "worker":
        return worker(a)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    phases = ["base", "base-hub", "train", "ref", "goldens"] if a.phase == "all" else [a.phase]
    for ph in phases:
        t = time.time()
        try:
            {"base": lambda: phase_base(a.out), "base-hub": lambda: phase_base_hub(a.out), "train": lambda: phase_train(a.out, a.only), "ref": lambda: phase_ref(a.out),
             "pickles": lambda: phase_pickles(a.out), "goldens": lambda: phase_goldens(a.out)}[ph]()
        except Exception:
            log(f"phase {ph} FAILED:\n" + traceback.format_exc())
        log(f"phase {ph} {time.time()-t:.1f}s")
    if a.phase in ("all", "goldens"):
        write_env(a.out)
    log(f"total {time.time()-t0:.1f}s")
    open(os.path.join(a.out, "make_fixtures.log"), "w").write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()

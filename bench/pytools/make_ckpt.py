#!/usr/bin/env python3
"""Write a real FSDP1 SHARDED_STATE_DICT checkpoint of an 11B-wide Mllama (fewer layers) the way llama-recipes does.

Run with torchrun on a GPU machine:
    python3 -m torch.distributed.run --nproc_per_node=2 make_ckpt.py --out /tmp/pyb [--text-layers 2 --vision-layers 4]
Writes OUT/base (save_pretrained, bf16, plus the processor's side files from SIDE) and OUT/ckpt (dcp.save of
{"model": sharded state dict}, like llama-recipes' save_model_and_optimizer_sharded) after one AdamW step.
"""
import argparse, json, os, shutil, time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dist_cp
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, StateDictType
from torch.distributed.fsdp.wrap import ModuleWrapPolicy


def config(text_layers, vision_layers):
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig
    cross = [i for i in range(text_layers) if i % 4 == 3] or [text_layers - 1]
    vision = MllamaVisionConfig(hidden_size=1280, num_hidden_layers=vision_layers, num_global_layers=max(1, vision_layers // 4),
                                attention_heads=16, intermediate_size=5120, vision_output_dim=7680, image_size=560,
                                patch_size=14, max_num_tiles=4, intermediate_layers_indices=[i for i in (3, 7, 15, 23, 30) if i < vision_layers])
    vision.vision_output_dim = 1280 * (len(vision.intermediate_layers_indices) + 1)
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    text = MllamaTextConfig(vocab_size=128256, hidden_size=4096, num_hidden_layers=text_layers, num_attention_heads=32,
                            num_key_value_heads=8, intermediate_size=14336, cross_attention_layers=cross,
                            rope_parameters=rope, max_position_embeddings=131072, bos_token_id=128000,
                            eos_token_id=128001, pad_token_id=128004)
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)
    cfg.architectures = ["MllamaForConditionalGeneration"]
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--side", required=True, help="directory with tokenizer/template/generation side files")
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--vision-layers", type=int, default=4)
    a = ap.parse_args()
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    from transformers import MllamaForConditionalGeneration
    from transformers.models.mllama import modeling_mllama as mm
    torch.manual_seed(0)
    t0 = time.time()
    model = MllamaForConditionalGeneration(config(a.text_layers, a.vision_layers)).to(torch.bfloat16)
    base = os.path.join(a.out, "base")
    if rank == 0:
        model.save_pretrained(base)
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
            shutil.copy(os.path.join(a.side, f), base)
        pre = json.load(open(os.path.join(a.side, "processor_config.json")))
        pre["image_processor"]["size"] = {"height": 560, "width": 560}
        json.dump(pre, open(os.path.join(base, "processor_config.json"), "w"), indent=2)
        print(f"base written in {time.time() - t0:.1f}s", flush=True)
    policy = ModuleWrapPolicy({mm.MllamaSelfAttentionDecoderLayer, mm.MllamaCrossAttentionDecoderLayer, mm.MllamaVisionEncoderLayer})
    model = FSDP(model, auto_wrap_policy=policy, device_id=local, use_orig_params=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 128000, (1, 64), device="cuda")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    ckpt = os.path.join(a.out, "ckpt")
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        dist_cp.save(state_dict={"model": model.state_dict()}, storage_writer=dist_cp.FileSystemWriter(ckpt))
    if rank == 0:
        with open(os.path.join(ckpt, "train_params.yaml"), "w") as f:
            f.write(f"model_name: {base}\nenable_fsdp: 'True'\ncheckpoint_type: StateDictType.SHARDED_STATE_DICT\n")
        size = sum(os.path.getsize(os.path.join(ckpt, x)) for x in os.listdir(ckpt))
        print(f"checkpoint {size / 1e9:.2f} GB, loss {loss.item():.3f}, {time.time() - t0:.1f}s", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

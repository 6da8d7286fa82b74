#!/usr/bin/env python3
"""Train kiln's bundled default model `kjv-tiny` (Llama architecture) on the KJV Bible.

Steps (all in this one script, seeded):
  1. train a byte-level BPE tokenizer (vocab 4096) with HF `tokenizers` on the
     corpus made by prepare_corpus.py (one chapter a document);
  2. split chapters: every 20th chapter (index % 20 == 19, 0-based, canonical
     order) is held out for validation, the rest is training data; every chapter
     is followed by <|endoftext|> (id 0);
  3. train a LlamaForCausalLM (PyTorch, AdamW, warmup + cosine, bf16 autocast,
     context 256, <|bos|> prepended to every training window, residual dropout
     through forward hooks) with early stopping on validation loss; keep the
     best-validation weights;
  4. save them with transformers' save_pretrained in BF16 (config.json,
     generation_config.json, model.safetensors) plus tokenizer.json and
     tokenizer_config.json;
  5. reload the saved folder in float32 on the CPU (eager attention) and write
     ref.json + logits.bin (same format as tests/fixtures/hf), sample
     generations and train_summary.json; train_log.txt holds the loss log.

Usage (on a CUDA machine; see README.md):
  python3 models/kjv-tiny/prepare_corpus.py          # where `bible` is installed
  python3 models/kjv-tiny/train.py --corpus .devcarry/kjv_chapters.txt.gz --out DIR [--dropout P]
(the bundled weights now come from kiln-train: README.md, "Training"; this script is the PyTorch
baseline they are compared with, and the origin of the tokenizer)
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM

import make_refs  # beside this file

SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
EOS, BOS = "<|endoftext|>", "<|bos|>"
EOS_ID, BOS_ID = 0, 1

HP = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 768,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "context": 256,
    "batch_size": 64,
    "peak_lr": 1e-3,
    "min_lr_fraction": 0.1,
    "warmup_steps": 100,
    "max_steps": 2000,
    "weight_decay": 0.1,
    "adam_betas": [0.9, 0.95],
    "adam_eps": 1e-8,
    "grad_clip": 1.0,
    "residual_dropout": 0.2,
    "eval_every": 100,
    "patience_evals": 8,
    "time_limit_s": 270,
    "seed": 1234,
    "val_every_nth_chapter": 20,
    "tokenizer_min_frequency": 2,
}

SAMPLES = make_refs.SAMPLES

def load_chapters(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    chapters = text.strip("\n").split("\n\n")
    assert len(chapters) == 1189, len(chapters)
    return chapters


def build_tokenizer(chapters, vocab_size, prepend_bos):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=HP["tokenizer_min_frequency"], show_progress=False,
        special_tokens=[EOS, BOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(chapters, trainer=trainer, length=len(chapters))
    if prepend_bos:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                          special_tokens=[(BOS, BOS_ID)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.token_to_id(EOS) == EOS_ID and tok.token_to_id(BOS) == BOS_ID
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return normalize_bytelevel_flags(tok)


def normalize_bytelevel_flags(tok):
    """The Python constructors leave ByteLevel's add_prefix_space/trim_offsets/use_regex at their
    defaults in the post-processor and decoder (serialized as true). Set them all to false, the way
    Qwen2's tokenizer.json has them; they do not change ids (checked by the caller)."""
    j = json.loads(tok.to_str())

    def fix(node):
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                node.update(add_prefix_space=False, trim_offsets=False, use_regex=False)
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    for key in ("pre_tokenizer", "post_processor", "decoder"):
        fix(j[key])
    new = Tokenizer.from_str(json.dumps(j))
    for t in make_refs.TOKENIZER_CASES:
        assert new.encode(t).ids == tok.encode(t).ids, t
        assert new.decode(new.encode(t).ids) == tok.decode(tok.encode(t).ids), t
    return new


def tokenizer_config(add_bos, max_len):
    return {
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def add_dropout_hooks(model, p):
    """Residual dropout (GPT-2 style) on the embedding output and each sub-layer's output."""
    def on_tensor(mod, inp, out):
        return F.dropout(out, p, mod.training)

    def on_tuple(mod, inp, out):
        if isinstance(out, tuple):
            return (F.dropout(out[0], p, mod.training),) + tuple(out[1:])
        return F.dropout(out, p, mod.training)

    handles = [model.model.embed_tokens.register_forward_hook(on_tensor)]
    for layer in model.model.layers:
        handles.append(layer.self_attn.register_forward_hook(on_tuple))
        handles.append(layer.mlp.register_forward_hook(on_tensor))
    return handles


def lr_at(step):
    if step < HP["warmup_steps"]:
        return HP["peak_lr"] * (step + 1) / HP["warmup_steps"]
    p = min(1.0, (step - HP["warmup_steps"]) / max(1, HP["max_steps"] - HP["warmup_steps"]))
    f = HP["min_lr_fraction"]
    return HP["peak_lr"] * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=".devcarry/kjv_chapters.txt.gz")
    ap.add_argument("--out", required=True, help="output directory (not models/kjv-tiny: kiln-train made that)")
    ap.add_argument("--time-limit", type=float, default=None, help="override HP time_limit_s")
    ap.add_argument("--max-steps", type=int, default=None, help="override HP max_steps")
    ap.add_argument("--dropout", type=float, default=None, help="override HP residual_dropout")
    args = ap.parse_args()
    if args.dropout is not None:
        HP["residual_dropout"] = args.dropout
    if args.time_limit is not None:
        HP["time_limit_s"] = args.time_limit
    if args.max_steps is not None:
        HP["max_steps"] = args.max_steps
    out = args.out
    os.makedirs(out, exist_ok=True)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dev = torch.device("cuda")
    t_start = time.time()
    logf = open(os.path.join(out, "train_log.txt"), "w")

    def say(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    say(f"# kjv-tiny training log; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, device {torch.cuda.get_device_name(0)}")
    say("# hyperparameters: " + json.dumps(HP))

    # ---- tokenizer + data
    chapters = load_chapters(args.corpus)
    tok = build_tokenizer(chapters, HP["vocab_size"], prepend_bos=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(True, HP["max_position_embeddings"]), f, indent=2)
        f.write("\n")
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    enc = tok.encode_batch(chapters, add_special_tokens=False)
    train_ids, val_ids = [], []
    n_val_ch = 0
    for i, e in enumerate(enc):
        if i % HP["val_every_nth_chapter"] == HP["val_every_nth_chapter"] - 1:
            val_ids.extend(e.ids + [EOS_ID])
            n_val_ch += 1
        else:
            train_ids.extend(e.ids + [EOS_ID])
    n_chars = sum(len(c) for c in chapters)
    n_tok = len(train_ids) + len(val_ids)
    say(f"# tokenizer: vocab {tok.get_vocab_size()}, {time.time() - t_start:.1f}s; corpus {n_chars} chars -> "
        f"{n_tok} tokens ({n_chars / n_tok:.2f} chars/token); train {len(train_ids)} tokens "
        f"({len(chapters) - n_val_ch} chapters), val {len(val_ids)} tokens ({n_val_ch} chapters)")

    T, B, V = HP["context"], HP["batch_size"], HP["vocab_size"]
    train = torch.tensor(train_ids, dtype=torch.long, device=dev)
    val = torch.tensor(val_ids, dtype=torch.long, device=dev)
    nv = val.numel() // T
    yv = val[: nv * T].view(nv, T)
    xv = torch.cat([torch.full((nv, 1), BOS_ID, device=dev, dtype=torch.long), yv[:, :-1]], dim=1)
    ar = torch.arange(T, device=dev)
    bos_col = torch.full((B, 1), BOS_ID, device=dev, dtype=torch.long)
    gen = torch.Generator(device=dev)
    gen.manual_seed(HP["seed"])

    def get_batch():
        starts = torch.randint(0, train.numel() - T, (B,), device=dev, generator=gen)
        y = train[starts[:, None] + ar[None, :]]
        x = torch.cat([bos_col, y[:, :-1]], dim=1)
        return x, y

    @torch.no_grad()
    def evaluate(m, autocast=True):
        was_training = m.training
        m.eval()
        total = torch.zeros((), device=dev, dtype=torch.float64)
        for i in range(0, nv, 64):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = m(input_ids=xv[i:i + 64], use_cache=False).logits
            total += F.cross_entropy(logits.float().reshape(-1, V), yv[i:i + 64].reshape(-1), reduction="sum").double()
        m.train(was_training)
        return float(total) / (nv * T)

    # ---- model
    torch.manual_seed(HP["seed"])
    np.random.seed(HP["seed"])
    config = LlamaConfig(
        vocab_size=V, hidden_size=HP["hidden_size"], intermediate_size=HP["intermediate_size"],
        num_hidden_layers=HP["num_hidden_layers"], num_attention_heads=HP["num_attention_heads"],
        num_key_value_heads=HP["num_key_value_heads"], max_position_embeddings=HP["max_position_embeddings"],
        rms_norm_eps=HP["rms_norm_eps"], tie_word_embeddings=HP["tie_word_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": HP["rope_theta"]},
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=None, hidden_act="silu",
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, initializer_range=0.02)
    model = LlamaForCausalLM(config).to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    say(f"# model: {n_params} parameters ({n_params * 2 / 1e6:.2f} MB in bf16)")
    hooks = add_dropout_hooks(model, HP["residual_dropout"])
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=HP["peak_lr"], betas=tuple(HP["adam_betas"]), eps=HP["adam_eps"], fused=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    best_val, best_step, best_state = float("inf"), -1, None
    evals_since_best = 0
    train_loss_acc = torch.zeros((), device=dev)
    acc_n = 0
    step = 0
    stop_reason = "max_steps"
    torch.cuda.synchronize()
    t_train = time.time()
    say("step | lr | train_loss (mean since last eval) | val_loss | best | elapsed_s | tokens_seen")
    while True:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = get_batch()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), HP["grad_clip"])
        opt.step()
        train_loss_acc += loss.detach()
        acc_n += 1
        step += 1
        elapsed = time.time() - t_train
        last = step >= HP["max_steps"] or elapsed > HP["time_limit_s"]
        if step % HP["eval_every"] == 0 or last:
            vl = evaluate(model)
            tl = float(train_loss_acc) / acc_n
            train_loss_acc.zero_()
            acc_n = 0
            if vl < best_val:
                best_val, best_step = vl, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                evals_since_best = 0
            else:
                evals_since_best += 1
            elapsed = time.time() - t_train
            say(f"{step} | {lr_at(step - 1):.2e} | {tl:.4f} | {vl:.4f} | {best_val:.4f}@{best_step} | "
                f"{elapsed:.1f} | {step * B * T}")
            if evals_since_best >= HP["patience_evals"]:
                stop_reason = f"early stop: no val improvement in {HP['patience_evals']} evals"
                break
        if step >= HP["max_steps"]:
            break
        if elapsed > HP["time_limit_s"]:
            stop_reason = "time limit"
            break
    torch.cuda.synchronize()
    train_time = time.time() - t_train
    say(f"# stopped after {step} steps ({stop_reason}), {train_time:.1f}s training wall time, "
        f"{step * B * T / train_time:.0f} tokens/s; best val {best_val:.4f} nats/token at step {best_step}")

    # ---- save best weights in BF16 with transformers
    for h in hooks:
        h.remove()
    model.load_state_dict(best_state)
    model.eval()
    model = model.cpu().to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                                               do_sample=True, temperature=0.8, top_p=0.95)
    model.save_pretrained(out)
    st = os.path.join(out, "model.safetensors")
    say(f"# saved {st}: {os.path.getsize(st)} bytes")
    del model, opt, best_state

    # ---- reload what was saved; val loss of the stored BF16 weights computed in fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gm = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(dev).eval()
    val_bf16_fp32 = evaluate(gm, autocast=False)
    say(f"# val loss of saved BF16 weights (fp32 compute, sdpa): {val_bf16_fp32:.4f} nats/token "
        f"({val_bf16_fp32 / math.log(2):.4f} bits/token, ppl {math.exp(val_bf16_fp32):.2f}, "
        f"{val_bf16_fp32 * n_tok / n_chars / math.log(2):.4f} bits/char)")

    # ---- references (CPU, fp32, eager) and sample generations: make_refs.py
    del gm
    refj = make_refs.write_references(out, say)
    samples = make_refs.sample_generations(out, say)

    summary = {
        "hyperparameters": HP, "parameters": n_params,
        "corpus": {"chapters": len(chapters), "chars": n_chars, "tokens": n_tok,
                   "train_tokens": len(train_ids), "val_tokens": len(val_ids),
                   "val_chapters": n_val_ch, "val_eval_tokens": nv * T},
        "steps": step, "stop_reason": stop_reason, "train_time_s": train_time,
        "tokens_seen": step * B * T, "best_step": best_step,
        "best_val_loss_training": best_val, "val_loss_saved_bf16_fp32": val_bf16_fp32,
        "device": torch.cuda.get_device_name(0), "total_script_time_s": time.time() - t_start,
        "safetensors_bytes": os.path.getsize(st), "samples": samples,
        "tokenizer_sha256": make_refs.sha256_file(os.path.join(out, "tokenizer.json")),
        "versions": refj["versions"],
    }
    with open(os.path.join(out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    say(f"# done in {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()

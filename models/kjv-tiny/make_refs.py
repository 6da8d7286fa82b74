#!/usr/bin/env python3
"""Reference outputs of the bundled model for kiln's parity tests, from HF transformers.

Given a model directory (config.json, model.safetensors, tokenizer.json), writes into it:
  - logits.bin: float32 [24 × vocab] logits of one forward of ref.json's ids, on the CPU in float32
    with eager attention, from the stored BF16 weights upcast;
  - ref.json: the ids, logits statistics and sha256, the 16-token greedy continuation (argmax
    loop, cross-checked with generate), its top-1/top-2 margins, the same forward on the GPU with
    TF32 off (a cross-check), tokenizer cases and the AutoTokenizer check;
and returns / prints the sample generations listed in train.py's SAMPLES. train.py calls
write_references after training; run it alone for a model trained elsewhere (kiln-train):

  python3 models/kjv-tiny/make_refs.py MODEL_DIR [--samples-json FILE]
"""
import argparse
import hashlib
import json
import os
import platform
import sys

import torch
import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, GenerationConfig

EOS_ID, BOS_ID = 0, 1
REF_PROMPT = "And God said, Let there be light: and there was light. And"
# the prompt alone is 16 ids with BOS; the reference uses the first 24 ids of the prompt continued by Gen 1:4
REF_TEXT = REF_PROMPT + " God saw the light, that it was good: and God divided the light from the darkness."
N_IDS, N_NEW = 24, 16

SAMPLES = [
    {"prompt": "In the beginning", "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 0, "max_new_tokens": 64},
    {"prompt": "And Jesus said unto them,", "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 0, "max_new_tokens": 64},
    {"prompt": "The LORD is my shepherd;", "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 0, "max_new_tokens": 64},
    {"prompt": "In the beginning", "do_sample": False, "max_new_tokens": 48},
]

TOKENIZER_CASES = [
    "Hello world",
    "In the beginning God created the heaven and the earth.",
    "  leading spaces and  double  spaces",
    "line one\nline two\r\n\n  indented\n",
    "numbers 1234567 and 3.14159",
    "contractions: don't, I'm, we'll, they've, it's, YOU'D",
    "unicode: caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600",
    "NFC: e\u0301 vs \u00e9",
    "<|endoftext|>special<|bos|> tokens in text",
    "",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "python": platform.python_version()}


@torch.no_grad()
def greedy_loop(model, ids, n):
    seq = list(ids)
    out, margins = [], []
    for _ in range(n):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1].double()
        top = torch.topk(logits, 2)
        margins.append(float(top.values[0] - top.values[1]))
        out.append(int(top.indices[0]))
        seq.append(out[-1])
    return out, margins


def write_references(out, say=print):
    """ref.json + logits.bin for the model in `out`; returns the ref.json dict."""
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    vocab = ref.config.vocab_size
    full = tok.encode(REF_TEXT).ids
    assert full[0] == BOS_ID and full.count(BOS_ID) == 1, full[:4]
    ids = full[:N_IDS]
    assert len(ids) == N_IDS
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor([ids])).logits[0].float().contiguous()
    assert logits.shape == (N_IDS, vocab) and torch.isfinite(logits).all()
    logits.numpy().astype("<f4").tofile(os.path.join(out, "logits.bin"))
    greedy, margins = greedy_loop(ref, ids, N_NEW)
    gc = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                          eos_token_id=EOS_ID, pad_token_id=EOS_ID, bos_token_id=BOS_ID)
    inp = torch.tensor([ids])
    with torch.no_grad():
        g_out = ref.generate(input_ids=inp, attention_mask=torch.ones_like(inp), generation_config=gc)[0, N_IDS:].tolist()

    cuda = None
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        cuda = {"device": torch.cuda.get_device_name(0), "tf32": False}
        for attn in ("eager", "sdpa"):
            m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation=attn).to(dev).eval()
            with torch.no_grad():
                lg = m(input_ids=torch.tensor([ids], device=dev)).logits[0].float().cpu()
            d = lg.double() - logits.double()
            cuda[attn] = {"max_abs": float(d.abs().max()), "rel_l2": float(d.norm() / logits.double().norm())}
            del m

    cases = []
    for t in TOKENIZER_CASES:
        e = tok.encode(t)
        cases.append({"text": t, "ids": e.ids, "decoded_skip_special": tok.decode(e.ids, skip_special_tokens=True)})
    try:
        from transformers import AutoTokenizer
        hft = AutoTokenizer.from_pretrained(out)
        hf_ids = hft(REF_TEXT)["input_ids"]
        at_check = {"class": type(hft).__name__, "matches_tokenizers": hf_ids == full,
                    "autotokenizer_first_ids": hf_ids[:6], "bos_count": hf_ids.count(BOS_ID)}
    except Exception as e:  # reported in ref.json, not fatal
        at_check = {"error": f"{type(e).__name__}: {e}"}

    with open(os.path.join(out, "config.json")) as f:
        cfg_json = json.load(f)
    l = logits.double()
    top = torch.topk(l[-1], 5)
    refj = {
        "name": "kjv-tiny",
        "architecture": "LlamaForCausalLM",
        "model_type": cfg_json.get("model_type"),
        "stored_dtype": "bfloat16",
        "reference_compute": "CPU, float32 (stored BF16 weights upcast), attn_implementation=eager, one forward, no cache",
        "prompt": REF_PROMPT,
        "text": REF_TEXT,
        "ids": ids,
        "ids_note": f"tokenizer.encode(text) with the BOS the tokenizer's post-processor prepends; first {N_IDS} ids "
                    f"(the prompt alone is {len(tok.encode(REF_PROMPT).ids)} ids)",
        "ids_decoded": tok.decode(ids, skip_special_tokens=False),
        "logits_file": "logits.bin",
        "logits_shape": [N_IDS, vocab],
        "logits_format": "float32 little-endian, row-major [position][vocab]",
        "logits_sha256": sha256_file(os.path.join(out, "logits.bin")),
        "logits_stats": {"mean": float(l.mean()), "std": float(l.std()), "min": float(l.min()), "max": float(l.max()),
                         "abs_sum": float(l.abs().sum()),
                         "argmax_per_position": [int(v) for v in l.argmax(-1)],
                         "last_position_top5": {"ids": [int(v) for v in top.indices],
                                                "values": [float(v) for v in top.values]}},
        "greedy_ids": greedy,
        "greedy_decoded": tok.decode(greedy, skip_special_tokens=False),
        "greedy_method": "argmax loop, full forward per step, CPU float32 eager; cross-checked with "
                         f"model.generate(do_sample=False, max_new_tokens={N_NEW}, min_new_tokens={N_NEW})",
        "greedy_generate_ids": g_out,
        "greedy_generate_matches": g_out == greedy,
        "greedy_margins": margins,
        "greedy_min_margin": min(margins),
        "cuda_check": cuda,
        "tokenizer_cases": cases,
        "autotokenizer_check": at_check,
        "versions": versions(),
    }
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(refj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    say(f"# ref: ids {ids}\n# greedy {greedy} {tok.decode(greedy)!r}\n# min margin {min(margins):.4g}, "
        f"generate matches: {g_out == greedy}; cuda check {cuda}; autotokenizer {at_check}")
    return refj


def sample_generations(out, say=print):
    """train.py's SAMPLES, generated by HF on the CPU in float32 from the stored weights."""
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    samples = []
    for s in SAMPLES:
        p_ids = tok.encode(s["prompt"]).ids
        inp = torch.tensor([p_ids])
        try:
            if s["do_sample"]:
                gcs = GenerationConfig(do_sample=True, temperature=s["temperature"], top_p=s["top_p"], top_k=0,
                                       max_new_tokens=s["max_new_tokens"], eos_token_id=EOS_ID, pad_token_id=EOS_ID)
                torch.manual_seed(s["seed"])
            else:
                gcs = GenerationConfig(do_sample=False, max_new_tokens=s["max_new_tokens"],
                                       eos_token_id=EOS_ID, pad_token_id=EOS_ID)
            with torch.no_grad():
                o = ref.generate(input_ids=inp, attention_mask=torch.ones_like(inp), generation_config=gcs)[0].tolist()
        except Exception as e:  # reported, the other samples still run
            say(f"# sample {s['prompt']!r} failed: {type(e).__name__}: {e}")
            continue
        text = tok.decode(o, skip_special_tokens=True)
        samples.append(dict(s, output=text, output_ids=o))
        say(f"# sample {json.dumps(s)}: {text!r}")
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--samples-json", help="also write the sample generations to this file")
    a = ap.parse_args()
    write_references(a.model_dir)
    samples = sample_generations(a.model_dir)
    if a.samples_json:
        with open(a.samples_json, "w") as f:
            json.dump(samples, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The data and the yardstick for retraining the bundled model (models/kjv-tiny) with kiln-train.

  eval_kjv.py split --corpus kjv_chapters.txt.gz --tokenizer models/kjv-tiny --out DIR
      writes DIR/train.u16 and DIR/val.u16 exactly as models/kjv-tiny/train.py builds its streams:
      every 20th chapter (index % 20 == 19) is validation, each chapter's ids followed by EOS.
  eval_kjv.py eval --val DIR/val.u16 MODEL_DIR [MODEL_DIR ...]
      the validation loss of each HF model directory computed as train.py's evaluate() does
      (non-overlapping windows of 256 targets, BOS + the window's first 255 tokens as inputs,
      float32, mean over every target), so the PyTorch-trained model and a kiln-trained export are
      measured by the same independent code (HF transformers on the GPU).
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

EOS_ID, BOS_ID, EVERY, T = 0, 1, 20, 256


def split(args):
    from tokenizers import Tokenizer

    opener = gzip.open if args.corpus.endswith(".gz") else open
    with opener(args.corpus, "rt", encoding="utf-8") as f:
        chapters = f.read().strip("\n").split("\n\n")
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    enc = tok.encode_batch(chapters, add_special_tokens=False)
    train, val = [], []
    for i, e in enumerate(enc):
        (val if i % EVERY == EVERY - 1 else train).extend(e.ids + [EOS_ID])
    os.makedirs(args.out, exist_ok=True)
    for name, ids in (("train", train), ("val", val)):
        np.asarray(ids, dtype="<u2").tofile(os.path.join(args.out, name + ".u16"))
    print(json.dumps({"chapters": len(chapters), "train_tokens": len(train), "val_tokens": len(val)}))


def evaluate(args):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    val = torch.from_numpy(np.fromfile(args.val, dtype="<u2").astype(np.int64)).cuda()
    nv = val.numel() // T
    yv = val[: nv * T].view(nv, T)
    xv = torch.cat([torch.full((nv, 1), BOS_ID, device="cuda", dtype=torch.long), yv[:, :-1]], 1)
    results = {}
    for d in args.models:
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).cuda().eval()
        if args.bf16_weights:  # as the bundled model ships: BF16 weights, float32 compute
            m = m.to(torch.bfloat16).to(torch.float32)
        total = torch.zeros((), device="cuda", dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, nv, 64):
                logits = m(input_ids=xv[i:i + 64], use_cache=False).logits.float()
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                         yv[i:i + 64].reshape(-1), reduction="sum").double()
        results[d] = float(total) / (nv * T)
        print(f"val_loss {results[d]:.6f}  {d}  ({nv} windows of {T})", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("--corpus", required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--val", required=True)
    e.add_argument("--bf16-weights", action="store_true", help="round the weights to BF16 first")
    e.add_argument("models", nargs="+")
    args = ap.parse_args()
    split(args) if args.cmd == "split" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Renders every chat template x conversation with HF transformers' apply_chat_template.

The output (tests/fixtures/chat/expected/hf_renders.json) is the reference that
tests/unit/chat_render_test.cpp compares kiln's Jinja engine against, byte for byte. Run it where
transformers is installed (the GPU machine; no GPU is used):

  python3 tools/gpu/make_chat_fixtures.py --fixtures tests/fixtures/chat --out OUT_DIR

strftime_now() is pinned to FIXED_NOW so that templates that print today's date (GPT-OSS) give
reproducible text; the tests pass the same instant to kiln (ChatRenderOptions::now_unix_seconds).
"""
import argparse
import datetime as dt
import json
import os
import sys

FIXED_NOW = 1736899200  # 2025-01-15T00:00:00Z


class _FixedDateTime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return dt.datetime.fromtimestamp(FIXED_NOW, tz or dt.timezone.utc).replace(tzinfo=tz)


def pin_clock():
    import transformers.utils.chat_template_utils as ctu
    if not hasattr(ctu, "datetime"):
        return False
    ctu.datetime = _FixedDateTime
    if hasattr(ctu, "_compile_jinja_template") and hasattr(ctu._compile_jinja_template, "cache_clear"):
        ctu._compile_jinja_template.cache_clear()
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import transformers
    import transformers.utils.chat_template_utils as ctu
    pinned = pin_clock()

    def render(template, conv, kwargs):
        if hasattr(ctu, "render_jinja_template"):
            rendered, _ = ctu.render_jinja_template(
                conversations=[conv["messages"]], tools=conv.get("tools"), chat_template=template,
                add_generation_prompt=conv["add_generation_prompt"], **kwargs)
            return rendered[0]
        compiled = ctu._compile_jinja_template(template)
        return compiled.render(messages=conv["messages"], tools=conv.get("tools"),
                               add_generation_prompt=conv["add_generation_prompt"], **kwargs)

    with open(os.path.join(args.fixtures, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    with open(os.path.join(args.fixtures, "special_tokens.json"), encoding="utf-8") as f:
        special = json.load(f)
    tdir = os.path.join(args.fixtures, "templates")
    result = {"transformers": transformers.__version__, "fixed_now": FIXED_NOW,
              "clock_pinned": pinned, "renders": {}}
    for fname in sorted(os.listdir(tdir)):
        if not fname.endswith(".jinja"):
            continue
        name = fname[: -len(".jinja")]
        with open(os.path.join(tdir, fname), encoding="utf-8") as f:
            template = f.read()
        tokens = special[name]
        per = {}
        for conv in conversations:
            kwargs = dict(conv.get("extra", {}))
            kwargs.update(bos_token=tokens["bos_token"], eos_token=tokens["eos_token"])
            try:
                per[conv["name"]] = {"text": render(template, conv, kwargs)}
            except Exception as e:  # the template's raise_exception, or a Jinja error
                per[conv["name"]] = {"error": str(e), "error_type": type(e).__name__}
        result["renders"][name] = per
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "hf_renders.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1, sort_keys=True)
    print(json.dumps({k: {c: ("text" if "text" in v else "error: " + v["error"][:60]) for c, v in per.items()}
                      for k, per in result["renders"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

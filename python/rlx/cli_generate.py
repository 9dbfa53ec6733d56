"""``python -m rlx generate --model-dir DIR "prompt"``: text generation with a Llama-family
decoder (``rlx.models.llama``), streamed as it is made, with the timings a user wants (load,
prefill, tokens/s) and the variants compiled. Without a ``tokenizer.json`` the prompt is token
ids ("1 2 3") and ids are printed."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List

import rlx


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate text with a Llama / Qwen2 / Mistral model directory")
    p.add_argument("--model-dir", required=True, help="directory with config.json, model.safetensors [, tokenizer.json]")
    p.add_argument("prompt", help="the prompt text (or space-separated token ids without a tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--aot-dir", default=None, help="persist compiled variants here; a later run reads them back")
    p.add_argument("--precision", choices=["f32", "bf16", "int8"], default="f32", help="the linears' number format")
    p.set_defaults(fn=cmd_generate)


def _tokenizer(model_dir: str) -> Any:
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception
        raise rlx.ModelFormatError(f"tokenizer {path!r}: cannot load: {e}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from rlx.models.llama import CausalLM

    t0 = time.perf_counter()
    lm = CausalLM(args.model_dir, aot_dir=args.aot_dir, precision=args.precision)
    tok = _tokenizer(args.model_dir)
    cfg = lm.config
    print(f"model: {args.model_dir} ({cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} kv heads, vocab {cfg.vocab_size}); "
          f"loaded + template compiled in {time.perf_counter() - t0:.2f} s, weights memory-mapped", file=sys.stderr)
    if tok is not None:
        ids: List[int] = tok.encode(args.prompt).ids
    else:
        try:
            ids = [int(x) for x in args.prompt.split()]
        except ValueError:
            raise rlx.ModelFormatError(f"{args.model_dir} has no tokenizer.json: give the prompt as token ids") from None
    out: List[int] = []
    shown = [""]
    stamps: List[float] = []

    def show(row: int, t: int) -> None:
        stamps.append(time.perf_counter())
        out.append(t)
        if tok is None:
            print(t, end=" ", flush=True)
            return
        text = tok.decode(out)  # decoded whole, printed as it grows (multi-token characters)
        print(text[len(shown[0]):], end="", flush=True)
        shown[0] = text

    if tok is not None:
        print(args.prompt, end="", flush=True)
    start = time.perf_counter()
    lm.generate(ids, args.max_new_tokens, do_sample=args.sample, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, callback=show)
    print()
    if stamps:
        first = stamps[0] - start
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
        print(f"{len(ids)} prompt tokens, {len(stamps)} new: first token after {first * 1e3:.0f} ms (prefill, "
              f"compile included on a cold start), then {rate:.1f} tokens/s; "
              f"{lm.stats['variants_compiled']} variants compiled, isa {lm.stats['isa']}", file=sys.stderr)
    return 0

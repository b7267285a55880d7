#!/usr/bin/env python3
"""llama.cpp's greedy tokens for a GGUF file, as the reference of surge's parity tests.

    PY="$(scripts/peers/llama-cpp.sh)"
    "$PY" scripts/peers/llama_cpp_greedy.py --model "$(surge models path gemma-3-270m)" \
        --prompts testdata/llm/parity-prompts.json --steps 32 > testdata/llm/gemma3-llama-cpp.json

For every prompt (raw text, tokenized by llama.cpp with BOS as the file asks and special
tokens parsed, as llama-server does), it records the prompt's token ids, the first
`--steps` greedy tokens and, per step, the top five (token, logit) pairs, so a test can
tell a real divergence from a logit tie. Runs on 2 threads with llama.cpp's own CPU
kernels (llama-cpp-python builds llama.cpp with GGML_NATIVE).
"""

import argparse
import hashlib
import json
import sys

import llama_cpp
import numpy as np


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON list of prompt strings")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    prompts = json.load(open(args.prompts))
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=4096,
        n_batch=512,
        n_threads=args.threads,
        verbose=False,
    )
    out = {
        "generator": "scripts/peers/llama_cpp_greedy.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model_sha256": sha256(args.model),
        "steps": args.steps,
        "prompts": [],
    }
    for text in prompts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        tokens, top = [], []
        for _ in range(args.steps):
            # Only the last evaluated token has logits (no logits_all), and
            # llama-cpp-python no longer copies them into `scores`.
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
            order = np.argsort(-logits)[:5]
            top.append([[int(t), float(logits[t])] for t in order])
            t = int(order[0])
            tokens.append(t)
            llm.eval([t])
        out["prompts"].append(
            {"text": text, "prompt_ids": [int(i) for i in ids], "tokens": tokens, "top5": top}
        )
        print(f"{len(ids)} prompt tokens -> {llm.detokenize(tokens)!r}", file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""Prefill speed on long prompts, and decode speed once the context is long, for one or
more OpenAI-compatible servers measured alternately in one run:

    target/release/surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9300 &
    llama-server -m "$(surge models path smollm2-135m-instruct)" -c 8192 -t 2 --port 9301 &
    python3 loadtest/scripts/long_prompt.py --url surge=http://127.0.0.1:9300 \\
        --url llama=http://127.0.0.1:9301 --tokens 1000,4000,7600 --rounds 2

Each request is a chat message of plain words about `--tokens` long (the size is read back
from `usage.prompt_tokens`), opened by a random line so no server can reuse a cached prefix
of another request. Prefill: `max_tokens` 1, tok/s = prompt tokens / request time.
Decode at long context (`--decode N`, 0 to skip): the same kind of prompt, N greedy tokens
streamed (`ignore_eos`, which both servers honour), tok/s over the tokens after the first.
Prints the median of `--rounds` per server and size. Standard library only.
"""

import argparse
import json
import random
import statistics
import time
import urllib.request

from chat_stream import stream_chat

WORDS = (
    "the river city north south bridge market winter summer harbour mountain forest road "
    "village station garden castle island valley lake tower museum school library church "
    "square street field farm mill wall gate coast cliff bay port ship train morning evening"
).split()


def prompt_text(words, rng):
    head = f"Note {rng.randrange(10**9)}: read the following and reply with one word."
    return head + " " + " ".join(rng.choice(WORDS) for _ in range(words))


def post(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=900)


def prefill(url, text):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 1, "temperature": 0}
    start = time.perf_counter()
    with post(url, body) as r:
        usage = json.loads(r.read())["usage"]
    return usage["prompt_tokens"], time.perf_counter() - start


def decode(url, text, n):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": n, "temperature": 0,
            "ignore_eos": True}
    first, last, _, usage = stream_chat(url, body)
    tokens = usage.get("completion_tokens", 0)
    return usage.get("prompt_tokens", 0), (tokens - 1) / (last - first) if tokens > 1 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True, help="name=http://host:port")
    ap.add_argument("--tokens", default="1000,4000,7600")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--decode", type=int, default=0, help="tokens to generate after the prompt")
    ap.add_argument("--words-per-token", type=float, default=0.95)
    a = ap.parse_args()
    servers = [u.split("=", 1) for u in a.url]
    rng = random.Random(7)
    sizes = [int(t) for t in a.tokens.split(",")]
    for size in sizes:
        words = int(size * a.words_per_token)
        pre = {name: [] for name, _ in servers}
        dec = {name: [] for name, _ in servers}
        seen = {}
        for _ in range(a.rounds):
            for name, url in servers:
                n, secs = prefill(url, prompt_text(words, rng))
                seen[name] = n
                pre[name].append(n / secs)
                if a.decode:
                    dec[name].append(decode(url, prompt_text(words, rng), a.decode)[1])
        for name, _ in servers:
            line = f"{size:>6} tokens  {name:<10} prompt {seen[name]:>5}  prefill {statistics.median(pre[name]):8.1f} tok/s"
            if a.decode:
                line += f"  decode {statistics.median(dec[name]):7.1f} tok/s"
            print(line, flush=True)
        if len(servers) == 2:
            (x, _), (y, _) = servers
            ratio = statistics.median(pre[x]) / statistics.median(pre[y])
            line = f"{size:>6} tokens  {x}/{y} prefill {ratio:.2f}x"
            if a.decode:
                line += f"  decode {statistics.median(dec[x]) / statistics.median(dec[y]):.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()

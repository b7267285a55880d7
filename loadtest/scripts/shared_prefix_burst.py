"""Time to first token of a burst of requests that share a long system prompt and differ
in their question, sent at once: what sharing the prefix of sequences still running saves
(the first request computes the system prompt, the others copy it). Any OpenAI-compatible
server:

    target/release/surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9300 &
    python3 loadtest/scripts/shared_prefix_burst.py --url http://127.0.0.1:9300 --requests 8

Each run uses a system prompt opened by a fresh random line, so nothing is cached before
the burst. Greedy, 16 tokens per answer, streamed. Prints the TTFT p50 / max of the burst
(median over runs) and the prompt tokens served from a cache. Standard library only.
"""

import argparse
import random
import statistics
import threading

from chat_stream import stream_chat

SYSTEM = (
    "You are the archivist of a small mountain village. You keep the records of every "
    "harvest, every winter storm and every traveller who crossed the pass, and you answer "
    "questions about them in one short, precise sentence, naming the year. "
) * 3


def ask(url, system, question, out, i):
    body = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "temperature": 0, "max_tokens": 16,
    }
    ttft, _, _, usage = stream_chat(url, body)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    out[i] = (ttft, usage.get("prompt_tokens", 0), cached)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(11)
    p50s, maxes, cached_all = [], [], []
    for _ in range(a.runs):
        system = f"Record book {rng.randrange(10**9)}. " + SYSTEM
        out = [None] * a.requests
        threads = [threading.Thread(target=ask, args=(a.url, system, f"Question {i}: what happened in year {1900 + i}?", out, i))
                   for i in range(a.requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ttfts = [o[0] for o in out]
        p50s.append(statistics.median(ttfts))
        maxes.append(max(ttfts))
        cached_all.append(sum(o[2] for o in out))
    prompt = out[0][1]
    print(f"{a.requests} requests, ~{prompt} prompt tokens each: TTFT p50 {statistics.median(p50s):.3f} s, "
          f"max {statistics.median(maxes):.3f} s, cached tokens per burst {statistics.median(cached_all):.0f}")


if __name__ == "__main__":
    main()

"""What a JSON-schema constraint costs the decode: the same worker, the same number of
generated tokens, with and without `response_format`, one stream and N concurrent.

    target/release/surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9300 &
    python3 loadtest/scripts/structured_cost.py --url http://127.0.0.1:9300 --rounds 5

Each constrained request (greedy, a nested schema) is paired with a free one that
generates exactly as many tokens (`max_tokens` = its count, `ignore_eos`). Decode
tok/s = (completion tokens - 1) / (wall time - time to first token), summed over the
requests of a batch. Standard library only.
"""

import argparse
import json
import statistics
import threading
import time
import urllib.request

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string", "maxLength": 40}, "city": {"type": "string", "maxLength": 30}},
            "required": ["street", "city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "tags", "address"],
    "additionalProperties": False,
}


def post(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        v = json.load(r)
    wall = time.perf_counter() - start
    return v, wall


def body(i, constrained, max_tokens):
    b = {
        "messages": [{"role": "user", "content": f"Describe fictional person number {i} as JSON."}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if constrained:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    else:
        b["ignore_eos"] = True
    return b


def batch(url, bodies):
    out = [None] * len(bodies)

    def run(k):
        out[k] = post(url, bodies[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(bodies))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    tokens = sum(v["usage"]["completion_tokens"] for v, _ in out)
    return out, tokens / elapsed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    post(a.url, body(0, True, 300))  # warm up (the grammar engine's vocabulary index)
    single = {True: [], False: []}
    for r in range(a.rounds):
        v, wall = post(a.url, body(r, True, 300))
        n = v["usage"]["completion_tokens"]
        json.loads(v["choices"][0]["message"]["content"])
        ttft = v["surge_execution"]["time_to_first_token_seconds"]
        single[True].append((n - 1) / (wall - ttft))
        v, wall = post(a.url, body(r, False, n))
        ttft = v["surge_execution"]["time_to_first_token_seconds"]
        single[False].append((v["usage"]["completion_tokens"] - 1) / (wall - ttft))
    agg = {True: [], False: []}
    for r in range(a.rounds):
        cons, tps = batch(a.url, [body(r * 100 + k, True, 300) for k in range(a.concurrency)])
        agg[True].append(tps)
        counts = [v["usage"]["completion_tokens"] for v, _ in cons]
        _, tps = batch(a.url, [body(r * 100 + k, False, counts[k]) for k in range(a.concurrency)])
        agg[False].append(tps)
    for name, d in [("1 stream decode tok/s", single), (f"{a.concurrency} streams aggregate tok/s", agg)]:
        c, f = statistics.median(d[True]), statistics.median(d[False])
        print(f"{name}: schema {c:.1f}, free {f:.1f}, ratio {c / f:.3f}")


if __name__ == "__main__":
    main()

"""Time to first token of each turn of a chat that re-sends its history every turn, as
chat clients do: what a prefix cache saves. Any OpenAI-compatible server:

    target/release/surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9300 &
    python3 loadtest/scripts/multi_turn.py --url http://127.0.0.1:9300 --turns 5

Greedy, `max_tokens` 64 per answer, streamed; TTFT is the time to the first content
chunk. Each run starts its chat with a different opening line (the run number), so
runs do not reuse each other's turns. Prints the median TTFT per turn over the runs and
the prompt size of the last turn. Standard library only.
"""

import argparse
import json
import statistics

from chat_stream import stream_chat

SYSTEM = (
    "You are a patient geography teacher. You answer in two or three short sentences, "
    "you name the country and the continent of every place you mention, and you never "
    "use lists. When a question is unclear you say so and ask one question back. "
) * 4
QUESTIONS = [
    "Where is the river Danube?",
    "And the river Rhine?",
    "Which of the two is longer?",
    "Name a city on the longer one.",
    "What is that city known for?",
    "Is it a capital?",
    "Which sea does that river flow into?",
    "Thank you. Summarise what we said.",
]


def turn(url, model, messages):
    body = {"messages": messages, "temperature": 0, "max_tokens": 64}
    if model:
        body["model"] = model
    ttft, _, text, usage = stream_chat(url, body)
    return ttft, text, usage


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", default=None, help="model name to send (default: none, the server's only model)")
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    ttfts = [[] for _ in range(a.turns)]
    last = {}
    for run in range(a.runs):
        messages = [{"role": "system", "content": f"Lesson {run + 1}. " + SYSTEM}]
        for t in range(a.turns):
            messages.append({"role": "user", "content": QUESTIONS[t]})
            ttft, answer, usage = turn(a.url, a.model, messages)
            ttfts[t].append(ttft)
            last = usage
            messages.append({"role": "assistant", "content": answer})
    for t, xs in enumerate(ttfts):
        print(f"turn {t + 1}: TTFT p50 {statistics.median(xs):.3f} s")
    print(f"last turn: {json.dumps(last)}")


if __name__ == "__main__":
    main()

"""One streamed OpenAI chat completion, timed: what the benchmark scripts next to this file
share. Standard library only; the scripts import it from their own folder."""

import json
import time
import urllib.request


def stream_chat(url, body, timeout=900):
    """POSTs `body` (stream and usage forced on) to URL/v1/chat/completions. Returns
    (seconds to the first content piece, seconds to the last one, the text, the usage)."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    start = time.perf_counter()
    first, last, text, usage = None, None, [], {}
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices", []):
                piece = c.get("delta", {}).get("content")
                if piece:
                    last = time.perf_counter() - start
                    first = last if first is None else first
                    text.append(piece)
    return first, last, "".join(text), usage

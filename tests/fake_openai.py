"""A real HTTP server on 127.0.0.1 speaking OpenAI chat completions, with behaviours scripted by markers.

The judge's rubric embeds the response, so a response containing ``[[prose]]`` gets a prose reply, and so on:
json (default), score-N, prose, garbage, 500, 400, 429-then-ok, slow, echo-key (401 quoting the key); a marker in
the model name applies to every request. ``latency`` delays every reply.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 3.0, encode=None):
        self.latency, self.slow_seconds = latency, slow_seconds
        self.encode = encode  # texts -> [n, dim] tensor: /v1/embeddings answers with it
        self.batches: list[int] = []  # the size of each embeddings request
        self.counts: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0  # requests being answered at once, and the most seen
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two small writes; with Nagle on, the body waits ~40 ms for the
            # client's delayed ACK on every keep-alive request.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                with server.lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    self.answer()
                finally:
                    with server.lock:
                        server.inflight -= 1

            def answer(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path.endswith("/embeddings"):
                    return self.embeddings(body)
                content = body["messages"][-1]["content"]
                m = re.search(r"\[\[([\w-]+)\]\]", body.get("model", "") + content)
                marker = m.group(1) if m else "json"
                with server.lock:
                    server.counts[marker] += 1
                    server.seen[content] += 1
                    first = server.seen[content] == 1
                if server.latency:
                    time.sleep(server.latency)
                if marker == "500":
                    return self.reply(500, {"error": {"message": "boom"}})
                if marker == "echo-key":  # a careless endpoint that quotes the key it was sent
                    return self.reply(401, {"error": {"message": f"Incorrect API key: {self.headers['Authorization']}"}})
                if marker == "400":
                    return self.reply(400, {"error": {"message": "bad request"}})
                if marker == "429-then-ok" and first:
                    return self.reply(429, {"error": {"message": "slow down"}})
                if marker == "slow":
                    time.sleep(server.slow_seconds)
                text = {"prose": "I would rate this 8/10 because it is specific.", "garbage": "banana"}.get(
                    marker, json.dumps({"score": int(marker[6:]) if marker.startswith("score-") else 7,
                                        "reason": "fine"}))
                if marker == "json" and "ANSWERS (each a quoted string):" in content:
                    # A partition request: answers whose first word is the same express the same idea here.
                    answers = [json.loads(a) for a in re.findall(r'^\d+\. (".*")$', content, re.M)]
                    first: dict = {}
                    text = json.dumps({"classes": [first.setdefault(a.split()[0].lower() if a.split() else "",
                                                                    len(first) + 1) for a in answers]})
                self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def embeddings(self, body):
                """Vectors from ``encode``; a text with [[refuse]] gets its whole request a 400 (a text over
                the context), [[500]] a 500 ([[500-once]]: the first time that text is sent), [[short]] one
                vector too few."""
                texts = body["input"]
                joined = " ".join(texts)
                with server.lock:
                    server.counts["embeddings"] += 1
                    server.batches.append(len(texts))
                    server.seen[joined] += 1
                    if "[[500-once]]" in joined and server.seen[joined] == 1:
                        joined += " [[500]]"
                if server.latency:
                    time.sleep(server.latency)
                if "[[refuse]]" in joined:
                    return self.reply(400, {"error": {"message": "input is longer than the model's context"}})
                if "[[500]]" in joined:
                    return self.reply(500, {"error": {"message": "boom"}})
                vectors = server.encode(texts).tolist()
                if "[[short]]" in joined:
                    vectors = vectors[:-1]
                data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
                self.reply(200, {"object": "list", "data": data[::-1], "model": body["model"]})  # any order

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"

"""``openrlhf-novelty serve``: OpenRLHF's remote reward protocol over HTTP, one shared state for every vLLM engine.

POST (any path) ``{"query": [...], "prompts": [...], "labels": [...]}`` -> ``{"rewards", "scores", "extra_logs"}``,
as ``--reward.remote_url http://host:port/reward`` sends it. GET /health reports counters. Binds 127.0.0.1 unless
told otherwise; with a token configured, requests need ``Authorization: Bearer <token>`` or ``?token=<token>``
(OpenRLHF's client sends no headers, so put the token in the URL). Malformed requests get a 4xx with a JSON error.
State is saved on a schedule and at shutdown, and restored at start.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from openrlhf_novelty.remote import RemoteReward
from openrlhf_novelty.state import load_state, save_atomic

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> tuple[list[str], list[str], list]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body must be a JSON object with 'query', 'prompts' and optional 'labels'")
    queries, prompts = data.get("query"), data.get("prompts")
    labels = data.get("labels")
    for name, value in (("query", queries), ("prompts", prompts)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RequestError(400, f"'{name}' must be a list of strings")
    if labels is None:
        labels = [""] * len(queries)
    if not isinstance(labels, list):
        raise RequestError(400, "'labels' must be a list")
    if not (len(queries) == len(prompts) == len(labels)):
        raise RequestError(400, f"'query', 'prompts' and 'labels' differ in length ({len(queries)}, "
                                f"{len(prompts)}, {len(labels)})")
    return queries, prompts, labels


class RewardServer:
    def __init__(self, remote: RemoteReward, host: str = "127.0.0.1", port: int = 5000, token: str | None = None,
                 state_path: str | None = None, save_every: float = 300.0, max_body: int = 8 << 20):
        self.remote, self.token, self.state_path = remote, token or None, state_path
        self.save_every, self.max_body = save_every, max_body
        self._saved_calls = -1
        self._stop = threading.Event()
        if state_path and os.path.exists(state_path):
            remote.load_state_dict(load_state(state_path))
            logger.warning("restored novelty state from %s (step %d)", state_path, remote.model.step)
        self.httpd = _Server((host, port), _handler(self))
        self.host, self.port = self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if not self.token:
            return True
        given = handler.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else ""
        if not given:
            given = (parse_qs(urlparse(handler.path).query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())  # constant time

    def save(self) -> None:
        if self.state_path and self.remote.calls != self._saved_calls:
            calls = self.remote.calls
            save_atomic(self.remote.state_dict(), self.state_path)
            self._saved_calls = calls

    def _saver(self) -> None:
        while not self._stop.wait(self.save_every):
            try:
                self.save()
            except Exception:  # a full disk must not stop the rewards; the next save tries again
                logger.exception("saving novelty state to %s failed", self.state_path)

    def serve_forever(self) -> None:
        saver = threading.Thread(target=self._saver, name="novelty-state-saver", daemon=True)
        saver.start()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()
            self.httpd.server_close()
            try:
                self.save()
            except Exception:  # the last periodic save (if any) is still intact on disk
                logger.exception("saving novelty state to %s at shutdown failed", self.state_path)

    def shutdown(self) -> None:
        self.httpd.shutdown()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 16 engines x dozens of requests in flight connect at once


def _handler(server: RewardServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two small writes; with Nagle on, the body waits ~40 ms for the
        # client's delayed ACK on every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            logger.debug("%s " + fmt, self.address_string(), *args)

        def send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if not server.authorized(self):
                return self.send_json(401, {"error": "missing or wrong token"})
            if urlparse(self.path).path.rstrip("/") in ("/health", ""):
                return self.send_json(200, {"status": "ok", **server.remote.stats()})
            self.send_json(404, {"error": "GET /health, or POST a reward request"})

        def do_POST(self):
            try:
                length = self.headers.get("Content-Length")
                if length is None:
                    self.close_connection = True
                    raise RequestError(411, "Content-Length is required")
                try:
                    length = int(length)
                except ValueError:
                    self.close_connection = True
                    raise RequestError(400, "Content-Length is not a number") from None
                if length > server.max_body:
                    self.close_connection = True  # the unread body must not be parsed as the next request
                    raise RequestError(413, f"body of {length} bytes exceeds the limit of {server.max_body}")
                body = self.rfile.read(length)
                if not server.authorized(self):
                    raise RequestError(401, "missing or wrong token")
                queries, prompts, labels = parse_request(body)
            except RequestError as e:
                return self.send_json(e.status, {"error": str(e)})
            if not queries:  # OpenRLHF 0.11.0 sends empty lists to every server after the first
                return self.send_json(200, {"rewards": [], "scores": [], "extra_logs": {}})
            self.send_json(200, server.remote(queries, prompts, labels))

    return Handler


def run(remote: RemoteReward, host: str, port: int, token: str | None, state_path: str | None, save_every: float,
        max_body: int) -> None:
    remote.model.health_check()  # a dead judge or embedding server is reported now, not at sample 10,000
    srv = RewardServer(remote, host, port, token, state_path, save_every, max_body)

    def stop(signum, frame):
        logger.warning("signal %d: saving state and stopping", signum)
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"openrlhf-novelty reward server on {srv.url} (POST /reward, GET /health)"
          f"{', token required' if token else ''}{f', state {state_path}' if state_path else ''}", flush=True)
    if remote.streaming:
        print("openrlhf-novelty: warning: rewards include the novelty bonus (stream.update_every > 0), and OpenRLHF's "
              "own launcher averages rewards for eval_*_pass1 and the best checkpoint: those then move with the "
              "bonus as RND learns. Compare runs on train/novelty/quality, or launch with python -m "
              "openrlhf_novelty.train_ppo_ray (evaluation on quality alone)", file=sys.stderr, flush=True)
    start = time.time()
    srv.serve_forever()
    print(f"stopped after {time.time() - start:.0f} s, {remote.calls} samples scored", flush=True)

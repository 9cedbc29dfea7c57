"""The judge's transport: OpenAI-compatible chat endpoints asked from one asyncio loop per process, each request
bounded by a timeout and a hard deadline, retried with backoff and jitter, behind one circuit breaker per endpoint.

Two transports post the same plain body: bare aiohttp (the default: the least CPU per request) and the openai
client. Errors worth another try (timeouts, connection errors, 429, 5xx) are retried; the rest are not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass

from openrlhf_novelty.config import NoveltyConfig

logger = logging.getLogger("openrlhf_novelty.judge")  # one logger name for everything the judge says


class Breaker:
    """Opens after ``threshold`` consecutive failures; while open the endpoint is skipped for ``cooldown`` s."""

    def __init__(self, threshold: int, cooldown: float):
        self.threshold, self.cooldown = threshold, cooldown
        self.consecutive, self.open_until = 0, 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def record(self, ok: bool) -> bool:
        """Returns True when this failure opened the breaker."""
        if ok:
            self.consecutive = 0
            return False
        self.consecutive += 1
        if self.consecutive >= self.threshold and self.allows():
            self.open_until = time.monotonic() + self.cooldown
            self.consecutive = 0
            return True
        return False


class LoopThread:
    """One asyncio loop per process, on a daemon thread: every caller thread shares its clients and semaphore."""

    _instance: LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="novelty-judge-loop", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_ASYNCIO_TIMEOUT = hasattr(asyncio, "timeout")  # Python 3.11+


def _deadline(seconds: float):
    """A hard per-request deadline as well as the client's timeout: a server dripping bytes keeps resetting a read
    timeout. asyncio.timeout (3.11+) costs no extra task per request, unlike wait_for."""
    if _ASYNCIO_TIMEOUT:
        return asyncio.timeout(seconds)
    import contextlib

    @contextlib.asynccontextmanager
    async def fallback():  # Python 3.10: cancel the request from a timer
        task, fired = asyncio.current_task(), []

        def expire():
            fired.append(True)
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:  # our timer: a timeout, retried like any other
                raise asyncio.TimeoutError() from None
            raise  # someone else's cancellation (judge.deadline): it must end the request, not be retried
        finally:
            handle.cancel()

    return fallback()


class EndpointError(RuntimeError):
    """A non-2xx answer on the aiohttp transport (the openai transport raises openai.APIStatusError)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


def _retryable(exc: BaseException) -> bool:
    """Timeouts, connection errors, 429 and 5xx (and 408 / 409) are worth another try; other 4xx are not."""
    if isinstance(exc, asyncio.TimeoutError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(exc, EndpointError) or (status is not None and type(exc).__module__.startswith("openai")):
        return status >= 500 or status in (408, 409, 429)
    if type(exc).__module__.startswith("aiohttp"):  # connection refused / reset, payload errors
        return True
    import openai

    return isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError))


def time_left(deadline: float) -> float:
    """Seconds until ``deadline`` on the running loop's clock (0 once it has passed)."""
    return max(0.0, deadline - asyncio.get_running_loop().time())


class JudgeUnavailable(RuntimeError):
    """The health check could not reach a configured endpoint (the judge's, or the embedding server's)."""


class EndpointSkipped(RuntimeError):
    """The endpoint's circuit breaker is open: the request was not sent."""


@dataclass(frozen=True)
class Settings:
    """What one family of endpoints is asked with: the judge's (judge.*) or the embedding server's (embed.*)."""

    name: str  # "judge" or "embedding": it names the endpoint in messages
    base_url: str  # comma-separated
    model: str
    api_key_env: str
    transport: str = "aiohttp"
    concurrency: int = 64
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    breaker_failures: int = 8
    breaker_cooldown: float = 30.0
    temperature: float = 0.0  # chat requests only

    @classmethod
    def judge(cls, cfg: NoveltyConfig) -> Settings:
        return cls("judge", cfg.judge_base_url, cfg.judge_model, cfg.judge_api_key_env, cfg.judge_transport,
                   cfg.judge_concurrency, cfg.judge_timeout, cfg.judge_retries, cfg.judge_backoff,
                   cfg.judge_breaker_failures, cfg.judge_breaker_cooldown, cfg.judge_temperature)

    @classmethod
    def embed(cls, cfg: NoveltyConfig) -> Settings:
        return cls("embedding", cfg.embed_base_url, cfg.embed_model, cfg.embed_api_key_env, "aiohttp",
                   cfg.embed_concurrency, cfg.embed_timeout, cfg.embed_retries, cfg.judge_backoff,
                   cfg.judge_breaker_failures, cfg.judge_breaker_cooldown)


class Endpoints:
    """Every endpoint of a comma-separated base URL, asked with ``concurrency`` requests in flight per process.
    ``stats`` (an object with requests, retries, breaker_skips, breaker_opens and parse_failures) and ``lock`` are
    the caller's: its requests, retries and breaker events count there."""

    def __init__(self, settings: Settings, stats, lock: threading.Lock):
        self.settings, self.stats, self._lock = settings, stats, lock
        self.urls = [u.strip().rstrip("/") for u in settings.base_url.split(",") if u.strip()]
        self.breakers = {u: Breaker(settings.breaker_failures, settings.breaker_cooldown) for u in self.urls}
        self._clients: dict[str, object] = {}
        self._semaphore: asyncio.Semaphore | None = None

    def ask(self, text: str, max_tokens: int) -> str:
        """One reply of the first endpoint, synchronously (no retries; errors raise): for tools, not for training."""
        return LoopThread.get().run(self.request(self.urls[0], text, max_tokens))

    def health_check(self, probe=None) -> None:
        """Ask every endpoint once, at start-up (``probe(url)``: a coroutine; a short chat request by default);
        raise a one-line JudgeUnavailable naming the endpoint that does not answer."""
        probe = probe or (lambda url: self.request(url, "Reply with the JSON {\"score\": 10}.", max_tokens=8))
        for url in self.urls:
            try:
                LoopThread.get().run(probe(url))
            except Exception as e:
                first_line = self.redact(str(e).splitlines()[0]) if str(e) else ""
                raise JudgeUnavailable(f"{self.settings.name} endpoint {url} (model {self.settings.model!r}) does "
                                       f"not answer: {type(e).__name__}: {first_line}") from None

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced: an endpoint may echo the key it was sent in its error message."""
        key = os.environ.get(self.settings.api_key_env) or ""
        return text.replace(key, "<redacted>") if len(key) >= 4 else text

    def close(self) -> None:
        """Close the HTTP clients (their connection pools belong to the shared event loop)."""
        clients, self._clients = list(self._clients.values()), {}
        if clients:
            async def close_all():
                for c in clients:
                    await c.close()

            try:
                LoopThread.get().run(close_all())
            except Exception:  # closing is best effort; the process may be exiting
                pass

    async def ask_everyone(self, text: str, parse, deadline: float, max_tokens: int,
                           samples: int) -> tuple[list, int, int]:
        """Every endpoint x ``samples`` chat requests at once, not one after another (in sequence the worst case,
        each retrying to its timeout, multiplied past OpenRLHF's 180 s limit), until ``deadline``: (the readable
        answers, how many requests were still unanswered then, how many were asked)."""
        tasks = [asyncio.ensure_future(self._ask_with_retries(source, text, parse, max_tokens))
                 for source in self.urls for _ in range(samples)]
        done, pending = await asyncio.wait(tasks, timeout=time_left(deadline))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)  # let them release the semaphore
        done = [t for t in done if not t.cancelled()]
        bugs = [t.exception() for t in done if t.exception() is not None]  # _ask_with_retries catches the rest
        if bugs:
            logger.error("%s: %d requests crashed: %r", self.settings.name, len(bugs), bugs[0])
        return [t.result() for t in done if t.exception() is None and t.result() is not None], len(pending), len(tasks)

    async def _ask_with_retries(self, source: str, text: str, parse, max_tokens: int):
        """One judgment from ``source``: the reply read by ``parse`` (None when unreadable or failed)."""
        try:
            reply = await self.with_retries(source, lambda: self.request(source, text, max_tokens))
        except Exception:  # counted and logged by with_retries
            return None
        value = parse(reply)
        if value is None:
            with self._lock:
                self.stats.parse_failures += 1
        return value

    async def with_retries(self, source: str, call):
        """``await call()`` against ``source``, retried with exponential backoff and full jitter on errors worth
        another try, behind the endpoint's breaker; the last error raises (EndpointSkipped while it is open)."""
        s = self.settings
        breaker = self.breakers.get(source)
        for attempt in range(s.retries + 1):
            if breaker is not None and not breaker.allows():
                with self._lock:
                    self.stats.breaker_skips += 1
                raise EndpointSkipped(f"{s.name} endpoint {source} is skipped: its circuit breaker is open")
            try:
                with self._lock:
                    self.stats.requests += 1
                reply = await call()
            except Exception as e:
                self._record(source, ok=False, error=e)
                if not (_retryable(e) and attempt < s.retries):
                    raise
                with self._lock:
                    self.stats.retries += 1
                # Engines retrying in lockstep would re-create the overload: jitter.
                await asyncio.sleep(s.backoff * (2**attempt) * random.uniform(0.5, 1.5))
                continue
            self._record(source, ok=True)
            return reply
        raise AssertionError("unreachable")

    def _record(self, source: str, ok: bool, error: BaseException | None = None) -> None:
        breaker = self.breakers.get(source)
        if breaker is None:
            return
        with self._lock:
            opened = breaker.record(ok)
            if opened:
                self.stats.breaker_opens += 1
        if opened:
            logger.error("%s endpoint %s failed %d times in a row (last: %s); skipping it for %.0f s",
                         self.settings.name, source, self.settings.breaker_failures, type(error).__name__,
                         self.settings.breaker_cooldown)

    async def request(self, source: str, text: str, max_tokens: int) -> str:
        """One chat completion: the reply's text ("" when the body is malformed)."""
        body = {"model": self.settings.model, "messages": [{"role": "user", "content": text}],
                "temperature": self.settings.temperature, "max_tokens": max_tokens}
        reply = await self.post(source, "/chat/completions", body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return ""  # a malformed body is an unparsable reply: the caller counts it as a failure

    async def post(self, source: str, path: str, body: dict):
        """One POST of ``body`` to ``source + path``, bounded by the concurrency limit and the timeout: the reply's
        JSON (None when it is not JSON). A plain dict on both transports: the openai client's typed methods spend
        ~2 ms of CPU per call walking params and ~1 ms building a response model we read one field of, which
        capped a 2-core node near 350 judgments/s at 64 in flight; its low-level post does not."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        async with self._semaphore:
            async with _deadline(self.settings.timeout):
                if self.settings.transport == "aiohttp":
                    return await self._post_aiohttp(source + path, source, body)
                return await self._client(source).post(path, body=body, cast_to=object)

    async def _post_aiohttp(self, target: str, source: str, body: dict):
        """The POST on a bare aiohttp session per endpoint: ~0.5 ms of CPU per request against the openai client's
        ~1.7 ms (measured at 64 in flight), which is what lets one process keep 64 requests busy."""
        session = self._clients.get(source)
        if session is None:
            import aiohttp

            key = os.environ.get(self.settings.api_key_env)
            session = self._clients[source] = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {key}"} if key else None,
                connector=aiohttp.TCPConnector(limit=0),  # the semaphore is the limit
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        async with session.post(target, json=body) as response:
            if response.status >= 400:
                text = await response.text(errors="replace")
                try:
                    message = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = text[:200]
                raise EndpointError(response.status, self.redact(str(message)))
            try:
                return await response.json(content_type=None)
            except ValueError:
                return None  # not JSON: an unparsable reply

    def _client(self, url: str):
        if url not in self._clients:
            import openai

            # Our own timeout and retries: the client's defaults (600 s, 2 retries) would outlast OpenRLHF's 180 s.
            kwargs = {"base_url": url, "api_key": os.environ.get(self.settings.api_key_env) or "EMPTY",
                      "timeout": self.settings.timeout, "max_retries": 0}
            # aiohttp as the transport when present (every OpenRLHF install has it): httpx's connection pool costs
            # ~4 ms of CPU per request at 64 in flight, which caps a 2-core trainer node near 230 judgments/s.
            aiohttp_client = getattr(openai, "DefaultAioHttpClient", None)
            if aiohttp_client is not None and importlib.util.find_spec("aiohttp") is not None:
                kwargs["http_client"] = aiohttp_client(timeout=self.settings.timeout)
            self._clients[url] = openai.AsyncOpenAI(**kwargs)
        return self._clients[url]

"""The encoder behind an OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM's pooling runner, Hugging Face TEI,
OpenAI): for long-context encoders no PyPI package ships (gte-modernbert-base, Qwen3-Embedding), served by the
tools a GPU cluster already runs.

Texts go out in batches of embed.batch_size, several batches in flight (embed.concurrency), each request bounded by
embed.timeout, retried on errors worth another try, behind a circuit breaker per endpoint (the judge's transport,
``endpoint.py``). A batch the server refuses (a text over its context, say) is retried text by text, so one bad
answer does not cost its batch. What cannot be embedded comes back as a zero vector, which the reward reads as
unembedded: no novelty, a counted flag (novelty/unembedded), never an exception. The server reads the whole text
(up to embed.max_chars, beginning and end kept): embed.pooling applies to the in-process encoder only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import torch

from openrlhf_novelty.bounded import worth_logging
from openrlhf_novelty.endpoint import EndpointError, Endpoints, LoopThread, Settings
from openrlhf_novelty.text import clip_middle

logger = logging.getLogger(__name__)


@dataclass
class EmbedStats:
    texts: int = 0  # texts sent
    failures: int = 0  # texts that came back unembedded
    requests: int = 0  # retries included
    retries: int = 0
    breaker_skips: int = 0
    breaker_opens: int = 0
    parse_failures: int = 0  # replies without one vector per text


class RemoteEmbedder:
    """``encode`` as the in-process Embedder has it: [n, dim] float32 unit rows on embed.device; zero rows for
    texts that could not be embedded. Safe from any number of threads (one event loop per process)."""

    def __init__(self, config):
        self.config = config
        self.device, self.batch_size, self.max_chars = config.embed_device, config.embed_batch_size, \
            config.embed_max_chars
        self.stats = EmbedStats()
        self._lock = threading.Lock()
        self.transport = Endpoints(Settings.embed(config), self.stats, self._lock)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:  # the first answer tells (retried, any endpoint); none answering raises here
            vector = LoopThread.get().run(self._batch(0, ["dimension probe"]))[0]
            if vector is None:
                raise RuntimeError(f"no embedding server at {self.config.embed_base_url} answers")
            self._dim = len(vector)
        return self._dim

    def health_check(self) -> None:
        """Embed one text on every endpoint at start-up; a one-line JudgeUnavailable names one that does not."""
        async def probe(url):
            self._dim = len((await self._ask(url, ["health check"]))[0])

        self.transport.health_check(probe)

    def close(self) -> None:
        self.transport.close()

    def encode(self, texts: list[str]) -> torch.Tensor:
        dim = self.dim
        if not texts:
            return torch.zeros(0, dim, device=self.device)
        clipped = [clip_middle(t, self.max_chars) for t in texts]
        batches = [clipped[i:i + self.batch_size] for i in range(0, len(clipped), self.batch_size)]
        found = LoopThread.get().run(self._encode_all(batches))
        rows = [torch.tensor(v, dtype=torch.float32) if v is not None and len(v) == dim else torch.zeros(dim)
                for batch in found for v in batch]
        rows = [r if torch.isfinite(r).all() else torch.zeros(dim) for r in rows]  # NaN is no embedding
        emb = torch.stack(rows)
        failed = sum(1 for r in rows if not r.any())
        with self._lock:
            self.stats.texts += len(texts)
            self.stats.failures += failed
            failures = self.stats.failures
        if failed and worth_logging(failures):
            logger.warning("embedding server: %d of %d texts could not be embedded (%d so far); they earn no "
                           "novelty", failed, len(texts), failures)
        return torch.nn.functional.normalize(emb, dim=-1).to(self.device)

    async def _encode_all(self, batches: list[list[str]]) -> list[list[list[float] | None]]:
        return list(await asyncio.gather(*(self._batch(i, b) for i, b in enumerate(batches))))

    async def _batch(self, i: int, texts: list[str]) -> list[list[float] | None]:
        """One batch's vectors (None where a text failed): from the endpoints in turn (batch i starts at endpoint
        i, so several spread the load); a batch refused with a 4xx is retried one text at a time."""
        urls = self.transport.urls
        for k in range(len(urls)):
            url = urls[(i + k) % len(urls)]
            try:
                return await self.transport.with_retries(url, lambda url=url: self._ask(url, texts))
            except EndpointError as e:
                if e.status_code in (400, 413, 422) and len(texts) > 1:  # one text over the limit refuses its batch
                    alone = await asyncio.gather(*(self._batch(i, [t]) for t in texts))
                    return [v for one in alone for v in one]
            except Exception:
                pass  # counted by the transport; the next endpoint, if any
        return [None] * len(texts)

    async def _ask(self, url: str, texts: list[str]) -> list[list[float]]:
        body = {"model": self.config.embed_model, "input": texts, "encoding_format": "float"}
        reply = await self.transport.post(url, "/embeddings", body)
        try:
            data = sorted(reply["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (KeyError, TypeError, ValueError) as e:
            with self._lock:
                self.stats.parse_failures += 1
            raise ValueError(f"embedding server {url}: not an embeddings reply ({type(e).__name__})") from None
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) != 1:
            with self._lock:
                self.stats.parse_failures += 1
            raise ValueError(f"embedding server {url}: {len(vectors)} vectors for {len(texts)} texts")
        return vectors

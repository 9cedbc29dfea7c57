"""The encoder behind an OpenAI-compatible /v1/embeddings endpoint, against a real HTTP server on loopback."""

import logging

import pytest
import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.embed import build_embedder
from openrlhf_novelty.embed_remote import RemoteEmbedder
from openrlhf_novelty.judge import JudgeUnavailable
from openrlhf_novelty.reward import NoveltyReward
from tests.conftest import TOY_TEXTS
from tests.fake_openai import FakeOpenAI, refused_url


@pytest.fixture(scope="module")
def served(embedder):
    with FakeOpenAI(encode=embedder.encode) as s:
        yield s


def remote(url, **embed) -> RemoteEmbedder:
    cfg = NoveltyConfig.from_dict({"embed": {"base_url": url, "retries": 1, "timeout": 5.0, **embed},
                                   "judge": {"backoff": 0.01}})
    emb = build_embedder(cfg)
    assert isinstance(emb, RemoteEmbedder)
    return emb


def test_vectors_equal_the_in_process_encoders_in_order_and_batches(served, embedder):
    texts = [f"Idea number {i}: turn an old phone into a {w}." for i, w in enumerate(["camera", "clock", "remote"] * 5)]
    e = remote(served.url, batch_size=4)
    assert e.dim == embedder.dim  # asked of the server once: one probe text
    before = len(served.batches)
    got = e.encode(texts)
    torch.testing.assert_close(got, embedder.encode(texts), atol=1e-6, rtol=0)  # the fake replies out of order
    assert sorted(served.batches[before:]) == [3, 4, 4, 4]  # four requests at once: they arrive in any order
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(texts)))


def test_a_refused_text_costs_only_itself_and_the_reward_flags_it(served, embedder, caplog):
    e = remote(served.url)
    texts = ["Plant a tree.", "This answer is far too long [[refuse]]", "Write a song."]
    got = e.encode(texts)
    assert got[1].abs().sum() == 0 and got[0].abs().sum() > 0 and got[2].abs().sum() > 0
    assert e.stats.failures == 1 and "1 of 3 texts could not be embedded" in caplog.text
    # embed.text whole: the fake server reads its markers as written ("[[refuse]]" has no words to remove).
    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "archive": {"weight": 0}, "embed": {"text": "whole"}})
    s = NoveltyReward(cfg, embedder=e).score(["Ideas?"] * 3, texts, 3)
    assert s.components["unembedded"] == [0.0, 1.0, 0.0] and s.components["bonus"][1] == 0.0
    assert s.components["quality"] == [1.0, 1.0, 1.0]  # its quality stands


def test_a_server_error_is_retried_then_falls_back_and_a_malformed_reply_is_a_failure(served, caplog):
    e = remote(served.url)
    caplog.set_level(logging.WARNING)
    assert e.encode(["[[500]] boom"]).abs().sum() == 0 and e.stats.retries == 1  # retries: 1
    assert e.encode(["one", "two [[short]]"]).abs().sum() == 0  # one vector too few: neither is trusted
    assert e.stats.parse_failures >= 1


def test_a_dead_server_is_named_at_start_up_and_the_key_is_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-embed-key")
    url = refused_url()
    e = remote(url)
    with pytest.raises(JudgeUnavailable, match=f"embedding endpoint {url}"):
        e.health_check()
    cfg = NoveltyConfig.from_dict({"embed": {"base_url": url, "retries": 0}})
    with pytest.raises(JudgeUnavailable):
        NoveltyReward(cfg).health_check()
    assert "sk-secret" not in caplog.text


def test_a_second_endpoint_takes_over_when_the_first_is_down(served, embedder):
    e = remote(f"{refused_url()},{served.url}", batch_size=2)
    e._dim = embedder.dim  # the probe would ask the dead first endpoint
    got = e.encode(["a cat", "a dog", "a bird", "a fish"])
    torch.testing.assert_close(got, embedder.encode(["a cat", "a dog", "a bird", "a fish"]), atol=1e-6, rtol=0)


def test_a_text_the_server_failed_on_is_asked_again_next_time(served, embedder):
    """A failure is not remembered as the text's embedding: the reward's cache keeps only real vectors."""
    e = remote(served.url, retries=0)
    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "archive": {"weight": 0}, "embed": {"text": "whole"}})
    m = NoveltyReward(cfg, embedder=e)
    texts = ["Plant a tree.", "Fix the roof first [[500-once]]"]
    assert m.score(["Ideas?"] * 2, texts, 2).components["unembedded"] == [1.0, 1.0]  # a 500 fails its batch
    assert m.score(["Ideas?"] * 2, texts, 2).components["unembedded"] == [0.0, 0.0]


def test_a_non_finite_vector_is_no_embedding(served, embedder, monkeypatch):
    e = remote(served.url)
    assert e.dim == embedder.dim
    monkeypatch.setattr(served, "encode", lambda texts: embedder.encode(texts) * float("nan"))
    assert e.encode(["a cat"]).abs().sum() == 0 and e.stats.failures == 1


def test_when_the_prompts_cannot_be_encoded_the_batch_earns_no_novelty_and_goes_on(embedder):
    """Found by review: relevance encodes the prompts through the encoder directly; a failure there raised."""

    class FailsOnPrompts:
        dim = embedder.dim

        def encode(self, texts):
            if any(t.startswith("Ideas") for t in texts):
                raise RuntimeError("CUDA out of memory")
            return embedder.encode(texts)

    m = NoveltyReward(NoveltyConfig.from_dict({"archive": {"weight": 0}}), embedder=FailsOnPrompts())
    s = m.score(["Ideas for an old phone?"] * 2, ["Make it a baby monitor.", "Use it as a music player."], 2)
    assert s.components["relevance"] == [0.0, 0.0] and s.components["bonus"] == [0.0, 0.0]
    assert s.components["quality"] == [1.0, 1.0] and m.encode_failures == 1

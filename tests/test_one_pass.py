"""embed.text prompt_free: the novelty vector reads the answer without its prompt's words, the text relevance reads,
so the encoder reads each answer once; and what that reading changes (echoes, states, copies across prompts)."""

import pytest
import torch

from openrlhf_novelty.checks import prompt_free
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward
from tests.test_checks import ON_TOPIC, PROMPTS

ONE_PASS = {"embed": {"text": "prompt_free"}, "diversity": {"duplicate_threshold": 0.55}}


class Counting:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, embedder):
        self.inner, self.texts = embedder, []
        self.dim = embedder.dim

    def encode(self, texts):
        self.texts += list(texts)
        return self.inner.encode(texts)


def config(**settings):
    base = {"rnd": {"weight": 0.0}, "archive": {"weight": 0.0}, "quality": {"relevance_min_prompts": 4}}
    return NoveltyConfig.from_dict({**base, **settings})


def batch():
    prompts = [p for p in PROMPTS for _ in range(2)]
    return prompts, [a for answers in ON_TOPIC for a in answers]


def test_prompt_free_removes_the_prompts_words_in_either_number():
    prompt = "Tweet pair 0: propose one hypothesis about retweets."
    assert prompt_free("Tweets with numbers get more retweets.", prompt) == "with numbers get more"
    assert prompt_free("Two stories: a glass is full.", "Write one story about a glass.") == "two is full"
    assert prompt_free("Tweet pair 0: propose one hypothesis about retweets.", prompt) == ""


def test_one_pass_encodes_each_answer_once_and_relevance_is_unchanged(embedder):
    prompts, responses = batch()
    whole, one = Counting(embedder), Counting(embedder)
    a = NoveltyReward(config(), embedder=whole).score(prompts, responses, 2)
    b = NoveltyReward(config(**ONE_PASS), embedder=one).score(prompts, responses, 2)
    answers = len(responses)
    assert len(whole.texts) == 2 * answers + len(PROMPTS)  # the answers, their prompt-free forms, the prompts
    assert len(one.texts) == answers + len(PROMPTS)  # the prompt-free forms, the prompts
    # Relevance read the same prompt-free text both ways; here it reads the vector the novelty terms read.
    torch.testing.assert_close(torch.tensor(b.components["relevance"]), torch.tensor(a.components["relevance"]),
                               atol=1e-5, rtol=0)
    expected = embedder.encode([prompt_free(r, p) for r, p in zip(responses, prompts)])
    torch.testing.assert_close(b.embeddings, expected, atol=1e-5, rtol=0)


def test_an_answer_that_is_all_prompt_has_nothing_to_embed(embedder):
    echo = PROMPTS[0].upper()  # restated, shouted
    m = NoveltyReward(config(**ONE_PASS, quality={"relevance_weight": 0.0, "degenerate_weight": 0.0}),
                      embedder=embedder)
    s = m.score([PROMPTS[0]] * 3, [echo, *ON_TOPIC[0]], 3, soundness=[1.0] * 3)
    assert s.components["unembedded"] == [1.0, 0.0, 0.0] and s.components["bonus"][0] == 0.0
    assert min(s.components["bonus"][1:]) > 0
    read_whole = NoveltyReward(config(quality={"relevance_weight": 0.0, "degenerate_weight": 0.0}),
                               embedder=embedder).score([PROMPTS[0]] * 3, [echo, *ON_TOPIC[0]], 3, soundness=[1.0] * 3)
    assert read_whole.components["bonus"][0] > 0  # read whole, only relevance (off here) withholds it


def test_a_state_of_one_reading_is_refused_by_the_other(embedder, tmp_path):
    m = NoveltyReward(config(), embedder=embedder)
    m.update(m.score(*batch(), 2))
    m.save(tmp_path / "whole.pt")
    one = NoveltyReward(config(**ONE_PASS), embedder=embedder)
    with pytest.raises(ValueError, match="embed.text is prompt_free here but whole in the state"):
        one.load(tmp_path / "whole.pt")
    old = m.state_dict()
    del old["shape"]["embed_text"]  # a state saved before embed.text existed read whole
    with pytest.raises(ValueError, match="embed.text is prompt_free here but whole in the state"):
        one.load_state_dict(old)
    NoveltyReward(config(), embedder=embedder).load_state_dict(old)


def test_another_prompts_answer_copied_is_shared_whatever_the_reading(embedder):
    # Read without prompt 0's words, then without prompt 1's, the same answer is two texts (the embedding check
    # at cosine 0.95 misses it); its word shingles as written are the same, so the template memory catches it.
    for settings in ({}, ONE_PASS):
        m = NoveltyReward(config(**settings, quality={"relevance_weight": 0.0}), embedder=embedder)
        m.update(m.score([PROMPTS[0]], [ON_TOPIC[0][0]], 1))
        s = m.score([PROMPTS[1]] * 2, [ON_TOPIC[0][0], ON_TOPIC[1][0]], 2)
        assert s.components["shared"] == [1.0, 0.0], settings
        off = NoveltyReward(config(**settings, quality={"relevance_weight": 0.0, "template_threshold": 1.5}),
                            embedder=embedder)
        off.update(off.score([PROMPTS[0]], [ON_TOPIC[0][0]], 1))
        missed = off.score([PROMPTS[1]] * 2, [ON_TOPIC[0][0], ON_TOPIC[1][0]], 2).components["shared"]
        assert missed == ([1.0, 0.0] if not settings else [0.0, 0.0])  # the embeddings alone: whole only


def test_split_reasoning_in_one_pass_reads_each_part_once(embedder):
    prompt = "Propose one new use for an old smartphone."
    reasoning = "The camera and the screen still work, so the phone can watch a room and show it elsewhere."
    responses = [f"<think>{reasoning}</think>{a}" for a in ON_TOPIC[0]]
    counting = Counting(embedder)
    cfg = config(**ONE_PASS, extract={"reasoning": "split"})
    s = NoveltyReward(cfg, embedder=counting).score([prompt] * 2, responses, 2)
    free_a = [prompt_free(a, prompt) for a in ON_TOPIC[0]]
    free_r = prompt_free(reasoning, prompt)
    assert sorted(set(counting.texts)) == sorted({*free_a, free_r, prompt})  # each part once, nothing whole
    a, r = embedder.encode(free_a), embedder.encode([free_r] * 2)
    torch.testing.assert_close(s.embeddings, torch.nn.functional.normalize(0.75 * a + 0.25 * r, dim=-1),
                               atol=1e-5, rtol=0)

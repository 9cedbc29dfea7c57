"""embed.text prompt_free: the novelty vector reads the answer without its prompt's words, the text relevance reads,
so the encoder reads each answer once; and what that reading changes (echoes, states, copies across prompts)."""

from pathlib import Path

import pytest
import torch

from openrlhf_novelty.checks import prompt_free
from openrlhf_novelty.config import NoveltyConfig, read_config_file
from openrlhf_novelty.reward import NoveltyReward
from tests.test_checks import ON_TOPIC, PROMPTS

# The shipped preset, so the file a user copies is the one tested.
ONE_PASS = read_config_file(Path(__file__).resolve().parents[1] / "examples" / "configs" / "one_pass.yaml")
assert ONE_PASS["embed"] == {"text": "prompt_free"} and ONE_PASS["diversity"]["duplicate_threshold"] == 0.55


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


def test_prompt_free_removes_the_prompts_words():
    prompt = "Tweet pair 0: propose one hypothesis about retweets."
    assert prompt_free("Tweets with numbers get more retweets!", prompt) == "tweets with numbers get more"
    assert prompt_free("TWEET pair 0: Propose one hypothesis about retweets.", prompt) == ""


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
    # at cosine 0.95 misses it); its word shingles as written are the same, so the template memory catches it
    # (read whole, the embedding check does).
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


def third(trick: str):
    """5 prompts x 3 samples, the first prompt's third answer ``trick`` (tests/test_checks.py's layout)."""
    prompts, responses = [], []
    for i, (p, answers) in enumerate(zip(PROMPTS, ON_TOPIC)):
        prompts += [p] * 3
        responses += [*answers, trick if i == 0 else answers[0] + " It is cheap."]
    return prompts, responses


HONEST = "Mount the old smartphone on the fridge as a family calendar and shopping list."


def test_the_prompt_restated_with_one_topical_word_earns_less_than_an_honest_answer(embedder):
    # Found by an adversary's review: the vector read only "tripod" (far from every sentence: diversity, RND),
    # and the prompt's words passed the checks that read the whole text: +0.2 over an honest answer.
    trick = PROMPTS[0].rstrip(".") + ": tripod."
    m = NoveltyReward(config(**ONE_PASS), embedder=embedder)
    tricked = m.score(*third(trick), 3, soundness=[1.0] * 15)
    honest = m.score(*third(HONEST), 3, soundness=[1.0] * 15)
    assert tricked.components["unembedded"][2] == 1.0 and tricked.components["bonus"][2] == 0.0
    assert tricked.rewards[2] < honest.rewards[2]


def test_word_salad_behind_the_prompt_fails_fluency_in_one_pass(embedder):
    salad = "optimised energetic lantern reveal science earning zero direct microphone chance pattern household named"
    echo_salad = PROMPTS[0] + " " + salad
    settings = {"rnd": {"weight": 0.0}, "archive": {"weight": 0.0}, "quality": {"relevance_weight": 0.0}}
    fluency = {}
    for name, extra in (("whole", {}), ("one pass", ONE_PASS)):
        m = NoveltyReward(NoveltyConfig.from_dict({**settings, **extra}), embedder=embedder)
        while m.common.total < m.common.MIN_WORDS:  # fluency knows a language's common words after 2,000
            m.common.add([a for answers in ON_TOPIC for a in answers] + [p for p in PROMPTS])
        s = m.score([PROMPTS[0]] * 3, [*ON_TOPIC[0], echo_salad], 3, soundness=[1.0] * 3)
        fluency[name] = s.components["fluency"][2]
    assert fluency["one pass"] == 0.0 < fluency["whole"]  # read whole, the prompt's words carry it


def split_words(text: str, sep: str) -> str:
    return " ".join(w[:2] + sep + w[2:] if len(w) > 3 else w for w in text.split())


@pytest.mark.parametrize("sep", ["-", " ", "\u2013", "/", "\u00ad"], ids=["hyphen", "space", "en dash", "slash", "soft hyphen"])
@pytest.mark.parametrize("settings", [{}, ONE_PASS], ids=["whole", "one pass"])
def test_a_copy_with_its_words_split_apart_is_its_sources_idea(embedder, settings, sep):
    # Found by two adversary's reviews (+0.17, then with any other separator +0.5 over an exact copy, read whole):
    # the split words broke both the embedding and the word shingles; the letters are the source's. Fluency off,
    # as math.yaml has it, so that only the copy link decides.
    cfg = NoveltyConfig.from_dict({**settings, "quality": {"fluency_weight": 0.0, "relevance_weight": 0.0}})
    source = "Use the old smartphone as a security camera that streams the living room to your laptop."
    siblings = ["Turn the old smartphone into a bedside music player and alarm clock.",
                "Give the old smartphone to a grandparent as a simple video-call screen."]
    copy = split_words(source, sep)
    assert copy != source and f"se{sep}curity" in copy
    m = NoveltyReward(cfg, embedder=embedder)
    split = m.score([PROMPTS[0]] * 4, [source, *siblings, copy], 4, soundness=[1.0] * 4)
    exact = m.score([PROMPTS[0]] * 4, [source, *siblings, source], 4, soundness=[1.0] * 4)
    assert split.rewards[3] <= exact.rewards[3] + 1e-6 and split.rewards[0] <= exact.rewards[0] + 1e-6
    assert min(split.components["diversity"][1:3]) > 0.2  # the two distinct siblings are still new ideas

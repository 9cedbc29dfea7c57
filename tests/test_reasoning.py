"""extract.reasoning split: a reasoning model's '<think>R</think>A'. The judge reads the final answer, the checks read
R and A together, the novelty vector mixes the two; each cheap trick a reasoning model has is tried here."""

import pytest
import torch

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.diversity import prompt_key
from openrlhf_novelty.reward import NoveltyReward
from openrlhf_novelty.stream import StreamingNovelty
from openrlhf_novelty.text import split_reasoning
from tests.conftest import TOY_TEXTS

PROMPT = "Propose one testable hypothesis about why some houseplants die."
HONEST = [
    "<think>Overwatering is the most common cause I know of: roots sit in wet soil, run out of air and rot, and "
    "the plant wilts although the pot is wet. A daily schedule keeps the soil wet.</think>"
    "HYP: Houseplants watered every day die sooner than the same plants watered once a week.",
    "<think>Light is the other usual suspect. People put plants in dark corners as decoration, far from any "
    "window, and a plant that cannot photosynthesize enough slowly starves.</think>"
    "HYP: Houseplants kept more than three metres from a window die sooner than those kept beside one.",
    "<think>Pests spread between plants bought from the same shop: spider mites and fungus gnats travel on "
    "new plants, and an infested newcomer can infect the plants around it.</think>"
    "HYP: Plants placed next to a newly bought plant die more often than plants kept in quarantine.",
    "<think>Cheap pots often have no drainage hole, so water collects at the bottom, where the roots are, even "
    "when the surface looks dry to the owner.</think>"
    "HYP: Plants in pots without a drainage hole die sooner than identical plants in pots with one.",
]


def answer(response: str) -> str:
    return response.split("</think>")[1]


def reasoning(response: str) -> str:
    return response.split("</think>")[0].removeprefix("<think>")


def model(embedder, judge=None, **sections) -> NoveltyReward:
    cfg = {"extract": {"reasoning": "split"}, "archive": {"weight": 0}, **sections}
    return NoveltyReward(NoveltyConfig.from_dict(cfg), embedder=embedder, judge=judge)


def test_split_reasoning_literal_values():
    tags = ["<think>", "</think>"]
    assert split_reasoning("<think> R </think> A ", tags) == ("R", "A", True)
    assert split_reasoning("R</think>A", tags) == ("R", "A", True)  # templates that put <think> in the prompt
    assert split_reasoning("<think>R1</think>A1</think>A2", tags) == ("R1</think>A1", "A2", True)  # the last ends it
    assert split_reasoning("<think>still thinking", tags) == ("", "still thinking", False)  # truncated
    assert split_reasoning("<think>R</think>", tags) == ("R", "", True)


@pytest.mark.parametrize("tags, message", [(["</think>"], "two different"), (["<t>", "<t>"], "two different"),
                                           (["<think>", " "], "non-empty")])
def test_bad_reasoning_tags_are_refused(tags, message):
    with pytest.raises(ConfigError, match=r"extract\.reasoning_tags: .*" + message):
        NoveltyConfig.from_dict({"extract": {"reasoning": "split", "reasoning_tags": tags}})
    with pytest.raises(ConfigError, match="embed.reasoning_weight"):
        NoveltyConfig.from_dict({"embed": {"reasoning_weight": 1.5}})


def test_the_judge_reads_the_final_answer_and_the_vector_mixes_answer_and_reasoning(embedder):
    class Judge:
        seen: list[str] = []

        def judge_many(self, prompts, texts):
            self.seen += texts
            return [1.0] * len(texts), [False] * len(texts)

    judge = Judge()
    m = model(embedder, judge, quality=TOY_TEXTS, embed={"reasoning_weight": 0.3})  # the default is 0.25
    s = m.score([PROMPT] * 4, HONEST, 4)
    assert judge.seen == [answer(r).lower() for r in HONEST]  # the surface form: case folded
    a, r = embedder.encode([answer(h).lower() for h in HONEST]), embedder.encode([reasoning(h).lower() for h in HONEST])
    expected = torch.nn.functional.normalize(0.7 * a + 0.3 * r, dim=-1)
    assert torch.allclose(s.embeddings, expected, atol=1e-5)
    assert s.components["format"] == [1.0] * 4 and s.components["unembedded"] == [0.0] * 4
    w0 = model(embedder, quality=TOY_TEXTS, embed={"reasoning_weight": 0.0}).score([PROMPT] * 4, HONEST, 4)
    assert torch.allclose(w0.embeddings, a, atol=1e-5)  # EVOL-RL: the final answer alone


def test_a_shared_stock_reasoning_no_longer_drowns_different_answers(embedder):
    """The issue's case for reasoning models: the same long reasoning (here 3 x 120 words, one word changed) ahead
    of different final answers. Read as one text they are one idea; split, their answers tell them apart."""
    stock = ("First I list what can kill a plant: water, light, pests, pots, temperature and soil, and for each I "
             "ask whether an owner could test it at home in a few weeks with two groups of plants. ") * 12
    responses = [f"<think>{stock} Variant {k}.</think>{answer(h)}" for k, h in enumerate(HONEST)]
    keep = NoveltyReward(NoveltyConfig.from_dict({"quality": TOY_TEXTS, "archive": {"weight": 0}}),
                         embedder=embedder).score([PROMPT] * 4, responses, 4)
    split = model(embedder, quality=TOY_TEXTS).score([PROMPT] * 4, responses, 4)
    assert max(keep.components["diversity"]) == 0.0  # one idea: the stock reasoning is all the encoder sees
    assert min(split.components["diversity"]) > 0.01


@pytest.mark.parametrize("trick", ["no reasoning", "no final answer", "unclosed"])
def test_dropping_the_reasoning_or_the_answer_earns_no_novelty(embedder, trick):
    """Alone, an answer's vector lies far from every sibling's mix: it would be paid for dropping its reasoning."""
    cheap = {"no reasoning": answer(HONEST[0]), "no final answer": HONEST[0].split("</think>")[0] + "</think>",
             "unclosed": HONEST[0].split("</think>")[0]}[trick]
    s = model(embedder, quality=TOY_TEXTS).score([PROMPT] * 4, [cheap, *HONEST[1:]], 4)
    c = s.components
    assert c["unembedded"][0] == 1.0 and c["novelty"][0] == 0.0 and c["diversity"][1] > 0
    assert c["format"][0] == 0.0 and c["reward"][0] < min(c["reward"][1:])


@pytest.mark.parametrize("weight", [0.25, 0.9])
def test_a_sibling_answer_behind_a_new_reasoning_is_that_siblings_idea(embedder, weight):
    """A copied final answer after a different reasoning adds no idea: at the default weight its vector stays within
    the near-duplicate cosine of its source whatever the reasoning; at a high weight it embeds apart, and the
    answer's wording (its shingles) links it. Either way it is paid no more than an exact copy of the sibling."""
    copied = "<think>Roots need air as much as water, and wet soil pushes the air out of it.</think>" + answer(HONEST[0])
    m = model(embedder, quality=TOY_TEXTS, embed={"reasoning_weight": weight})
    s = m.score([PROMPT] * 4, [HONEST[0], copied, *HONEST[2:]], 4)
    exact = m.score([PROMPT] * 4, [HONEST[0], HONEST[0], *HONEST[2:]], 4)
    close = float(s.embeddings[0] @ s.embeddings[1]) >= m.config.diversity_duplicate_threshold
    assert close == (weight <= 1 - m.config.diversity_duplicate_threshold)
    assert s.components["bonus"][1] <= exact.components["bonus"][1] + 1e-9
    assert s.components["diversity"][1] == pytest.approx(s.components["diversity"][0])


def test_a_looping_or_junk_reasoning_does_not_pay(embedder):
    """The checks read the reasoning with the answer: a loop zeroes quality, salad loses the novelty."""
    m = model(embedder, quality={"relevance_weight": 0.0})
    m.common.add([reasoning(h) + " " + answer(h) for h in HONEST] * 60)  # fluency needs 2,000 known words
    loop = "<think>" + "I think about plants. " * 40 + "</think>" + answer(HONEST[0])
    salad = ("<think>window rot gnats the of quarantine drainage sit shop three decoration corners photosynthesize "
             "starves newcomer metres wilts pot cheap owner infested spider fungus travel</think>" + answer(HONEST[0]))
    honest = m.score([PROMPT] * 4, HONEST, 4).components["reward"][0]
    for cheap in (loop, salad):
        assert m.score([PROMPT] * 4, [cheap, *HONEST[1:]], 4).components["reward"][0] < honest


def test_the_streaming_reward_counts_final_answers_and_keeps_them_in_its_state(embedder):
    """The outcome term counts final answers, not reasoning + answer: the streaming reward's pending samples carry
    them, and so does its saved state."""
    cfg = NoveltyConfig.from_dict({"extract": {"reasoning": "split"}, "quality": TOY_TEXTS,
                                   "outcome": {"weight": 1.0, "answer": "text"}, "stream": {"update_every": 100}})
    stream = StreamingNovelty(cfg, NoveltyReward(cfg, embedder=embedder))
    stream._score([PROMPT] * 4, HONEST, [1.0] * 4, group_size=4)
    state = stream.state_dict()
    assert state["pending_answers"] == [answer(h).lower() for h in HONEST]
    again = StreamingNovelty(cfg, NoveltyReward(cfg, embedder=embedder))
    again.load_state_dict(state)
    again._update(4)
    seen = again.model.final_answers([answer(HONEST[0]).lower()])[0]
    assert again.model.outcomes.count(prompt_key(PROMPT), seen) == 1


@pytest.mark.parametrize("final", ["yes", "HYP: water kills. HYP: water kills. HYP: water kills. HYP: water kills.",
                                   "HYP: Les plantes arrosées chaque jour meurent plus tôt que celles arrosées une "
                                   "fois par semaine."])
def test_an_honest_reasoning_does_not_carry_a_junk_answer(embedder, final):
    """Found by the adversary: read only with the reasoning, a two-word, looping or foreign final answer passed
    every check (+0.34 for "yes": far from its siblings, it took the diversity). Each check reads the answer
    alone as well."""
    m = model(embedder)
    honest = m.score([PROMPT] * 4, HONEST, 4).components["reward"][0]
    cheap = f"<think>{reasoning(HONEST[0])}</think>{final}"
    assert m.score([PROMPT] * 4, [cheap, *HONEST[1:]], 4).components["reward"][0] < honest


def test_a_token_reasoning_is_no_reasoning(embedder):
    """Found by the adversary: '<think>ok</think>' counted as a reasoning, and its vector's far-off reasoning half
    paid (+0.03). Under quality.min_words words it is none: no novelty."""
    s = model(embedder).score([PROMPT] * 4, ["<think>ok</think>" + answer(HONEST[0]), *HONEST[1:]], 4)
    assert s.components["unembedded"][0] == 1.0 and s.components["bonus"][0] == 0.0

"""The outcome term (novelty of the final answer) and pooling over the whole answer."""

import math

import pytest
import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.outcome import OutcomeMemory, final_answer, outcome_term
from openrlhf_novelty.reward import NoveltyReward
from tests.conftest import TOY_TEXTS


@pytest.mark.parametrize("text, expected", [
    (r"So the answer is \boxed{\dfrac{1}{2}}.", "0.5"),
    (r"\boxed{0.50}", "0.5"),
    (r"\boxed{1/2}", "0.5"),
    (r"\boxed{x = 3}", "3"),
    (r"\boxed{3\text{ apples}}", "3"),  # a unit word is not another answer
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{-\frac{3}{4}}", "-0.75"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", "sqrt3/2"),
    (r"\boxed{\sqrt{3}/2}", "sqrt3/2"),
    (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
    (r"first \boxed{4}, then \boxed{5}", None),  # two answers are none
    (r"\boxed{4}, that is \boxed{4.0}", "4"),  # one answer, boxed twice
    (r"\boxed{}", None), ("no box at all", None), (r"\boxed{4", None),  # no answer is not a guess
])
def test_a_boxed_answer_is_read_in_one_form(text, expected):
    assert final_answer(text, "boxed") == expected


def test_text_and_regex_answers_fold_case_spacing_and_punctuation():
    assert final_answer("The  Eiffel Tower!", "text") == "eiffel tower"
    assert final_answer("answer: Paris. Later, answer: ROME.", r"answer:\s*(\w+)") == "rome"
    assert final_answer("answer: 4.0", r"answer:\s*(\S+)") == "4"
    assert final_answer("no marker", r"answer:\s*(\w+)") is None


def test_the_term_pays_rare_answers_and_answers_unlike_the_group():
    memory = OutcomeMemory(prompts=10, answers=4)
    memory.add([7, 7, 7], ["4", "4", "5"])  # seen: "4" twice, "5" once, "6" never
    got = outcome_term(["4", "4", "6", "5"], [7] * 4, torch.tensor([True] * 4), 4, memory, batch_weight=0.5)
    # history 1/sqrt(1 + N), batch 1 - (same - 1) / (k - 1)
    expected = [0.5 / math.sqrt(3) + 0.5 * (1 - 1 / 3)] * 2 + [0.5 + 0.5, 0.5 / math.sqrt(2) + 0.5]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)
    # Ineligible samples (failed the gate) earn nothing and are nobody's sibling; no answer earns nothing.
    got = outcome_term(["4", "4", None, "5"], [7] * 4, torch.tensor([True, False, True, True]), 4, memory, 1.0)
    assert got.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_counts_are_bounded_and_restored_exactly():
    memory = OutcomeMemory(prompts=2, answers=2)
    memory.add([1, 1, 1, 2, 3], ["a", "b", "c", "x", "y"])  # prompt 1 forgets "a"; prompt 1 itself is forgotten
    assert len(memory) == 2 and memory.count(1, "a") == 0 and memory.count(3, "y") == 1
    memory.add([2, 2], ["x", "x"])
    back = OutcomeMemory(prompts=2, answers=2)
    back.load_state_dict(memory.state_dict())
    assert [back.count(2, "x"), back.count(3, "y"), back.count(1, "c")] == [3, 1, 0]
    back.add([4], ["z"]), memory.add([4], ["z"])  # the same prompt is forgotten next in both: order restored too
    assert back.state_dict()["keys"].tolist() == memory.state_dict()["keys"].tolist() == [2, 4]


def reward(embedder, **outcome):
    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "rnd": {"weight": 0}, "diversity": {"weight": 0},
                                   "archive": {"weight": 0}, "outcome": {"weight": 1.0, **outcome}})
    return NoveltyReward(cfg, embedder=embedder)


def test_in_the_reward_a_wrong_rare_answer_earns_nothing_and_repeats_stop_paying(embedder):
    m = reward(embedder)
    answers = [r"We add them: \boxed{4}", r"Adding gives \boxed{4.0}", r"Count up: \boxed{5}", "I am not sure."]
    right = [1.0, 1.0, 0.0, 1.0]  # the verifier: 5 is wrong
    s = m.score(["2+2?"] * 4, answers, 4, task_rewards=right)
    out = s.components["outcome"]
    # 4 and 4.0 are one answer, given by both eligible siblings: history 1, batch 0 -> 0.5; the wrong 5 is gated
    # out (quality 0, so no novelty whatever its rarity) and the answer without a box has no outcome.
    assert out == pytest.approx([0.5, 0.5, 0.0, 0.0]) and s.components["bonus"][2] == 0.0
    m.update(s)
    again = m.score(["2+2?"] * 4, answers, 4, task_rewards=right).components["outcome"]
    assert again[0] == pytest.approx(0.5 / math.sqrt(3))  # seen twice now
    restored = reward(embedder)
    restored.load_state_dict(m.state_dict())
    assert restored.score(["2+2?"] * 4, answers, 4, task_rewards=right).components["outcome"] == again


def test_rewording_the_reasoning_does_not_buy_outcome_novelty(embedder):
    """A policy that dresses up the same final answer differently (spacing, \\dfrac, a unit) gets no batch credit."""
    m = reward(embedder, batch_weight=1.0)
    same = [r"\boxed{\dfrac{1}{2}}", r"Thus \boxed{0.5}", r"\boxed{ 1/2 }", r"\boxed{\frac{1}{2}\text{ cup}}"]
    assert m.score(["half?"] * 4, same, 4).components["outcome"] == [0.0] * 4


def test_two_long_answers_that_open_alike_differ_with_chunks(embedder):
    opening = " ".join(["We first collect data from every sensor and clean it carefully before we model it."] * 25)
    a = opening + " Finally the integral converges, so the answer is forty two."
    b = opening + " In the end we write a poem about autumn leaves falling in the rain."
    assert len(opening.split()) > 350
    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "rnd": {"weight": 0}, "archive": {"weight": 0},
                                   "diversity": {"duplicate_threshold": 1.5}})
    chunked = NoveltyReward(cfg, embedder=embedder).score(["Explain."] * 2, [a, b], 2).components["diversity"]
    from openrlhf_novelty.embed import Embedder

    first = Embedder(pooling="first")
    assert torch.equal(first.encode([a])[0], first.encode([b])[0])  # one window: the same vector
    assert NoveltyReward(cfg, embedder=first).score(["Explain."] * 2, [a, b], 2).components["diversity"] == [0, 0]
    assert min(chunked) > 0.02


def test_a_short_answer_gets_the_same_vector_either_way(embedder):
    from openrlhf_novelty.embed import Embedder

    text = ["Turn an old phone into a baby monitor."]
    torch.testing.assert_close(embedder.encode(text), Embedder(pooling="first").encode(text))
    pieces, owner, weight = embedder.windows(text + ["word " * 600])
    assert pieces[0] == text[0] and owner == [0, 1, 1, 1] and sum(weight[1:]) == 600


def test_solutions_that_read_alike_keep_their_own_answers_novelty(embedder):
    """Near-duplicates are one idea for the embedding terms, but the outcome term counts answers: a solution that
    reads like its siblings and reaches another valid answer keeps its credit."""
    m = reward(embedder, batch_weight=1.0)
    texts = [r"The smallest such prime is \boxed{7}", r"The smallest such prime is \boxed{7}.",
             r"The smallest such prime is \boxed{11}"]
    emb = embedder.encode(texts)
    assert float(emb[0] @ emb[2]) > m.config.diversity_duplicate_threshold  # one idea to the embedding terms
    assert m.score(["A prime?"] * 3, texts, 3).components["outcome"] == pytest.approx([0.5, 0.5, 1.0])


def test_an_answer_the_encoder_cannot_embed_earns_no_novelty_and_is_counted(embedder, caplog):
    """An encoder that fails (out of memory, a lost server) costs the batch its novelty, never the step."""

    class Failing:
        dim = embedder.dim

        def encode(self, texts):
            if any("boom" in t for t in texts):
                raise RuntimeError("CUDA out of memory")
            return embedder.encode(texts)

    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "archive": {"weight": 0}})
    m = NoveltyReward(cfg, embedder=Failing())
    fine = m.score(["Ideas?"] * 2, ["Plant a tree.", "Write a song."], 2)
    s = m.score(["Ideas?"] * 4, ["Plant a tree.", "boom boom", "", "Write a letter."], 4)
    # The cached answer keeps its vector; the batch's new ones could not be encoded; "" has nothing to embed.
    assert s.components["unembedded"] == [0.0, 1.0, 1.0, 1.0] and fine.components["unembedded"] == [0.0, 0.0]
    assert s.components["bonus"][1:] == [0.0, 0.0, 0.0] and s.components["quality"] == [1.0] * 4
    assert m.encode_failures == 1 and "the encoder failed on 3 texts" in caplog.text
    before = float(m.rnd.obs_rms.count)
    m.update(s)  # nothing unembedded is learned from: RND's normalizer sees the one embedded answer
    assert float(m.rnd.obs_rms.count) == pytest.approx(before + 1)


@pytest.mark.parametrize("text", [
    r"\boxed{4} \fbox{7}", r"\boxed{4}. Check: \boxed{\frac{3}{7}}", r"\boxed{4} \boxed 9{x}",  # a second answer
])
def test_a_second_box_is_no_second_answer(text):
    """Found by the adversary: the outcome term counted a junk second box the verifier never read (+0.13)."""
    assert final_answer(text, "boxed") is None


@pytest.mark.parametrize("text, label, right", [
    (r"\boxed{4}", "4", 1.0), (r"\boxed{\text{qzv} 4}", "4", 0.0), (r"\boxed{{4}}", "4", 1.0),
    (r"\boxed{1_5}", "15", 1.0), (r"so \boxed{\frac{1}{2}}", "0.5", 1.0), (r"\boxed{4} \fbox{7}", "4", 0.0),
    ("the answer is 4", "4", 0.0),  # no box: not the last number
])
def test_the_math_verifier_grades_the_answer_the_outcome_term_counts(text, label, right):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "math_reward.py"
    spec = importlib.util.spec_from_file_location("math_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.reward_func(["Q " + text], ["Q "], [label])["rewards"].tolist() == [right]
    if right:  # graded right on exactly the string the outcome term counts
        assert final_answer(text, "boxed") == final_answer(rf"\boxed{{{label}}}", "boxed")


def test_forms_python_or_latex_read_alike_are_one_answer():
    assert {final_answer(t, "boxed") for t in [r"\boxed{15}", r"\boxed{1_5}", r"\boxed{15.0}"]} == {"15"}
    assert {final_answer(t, "boxed") for t in [r"\boxed{0}", r"\boxed{-0}"]} == {"0"}
    assert {final_answer(t, "boxed") for t in [r"\boxed{2^3}", r"\boxed{2^{3}}"]} == {"2**3"}
    assert final_answer("\\boxed{\u22124}", "boxed") == "-4"


def test_with_text_answers_a_one_word_edit_of_a_copy_is_its_idea(embedder):
    m = reward(embedder, answer="text", batch_weight=1.0)
    a = "Turn the old phone into a home security camera with a free app."
    group = [a, a, a.replace("free", "cheap"), "Use the phone as a dedicated music player in the kitchen."]
    out = m.score(["Old phone?"] * 4, group, 4).components["outcome"]
    assert out[2] == pytest.approx(out[0]) and out[3] == 1.0  # the edit earns what the copies earn


STORY = ("The lighthouse keeper found a bottle on the rocks one grey morning. Inside was a letter written in his own "
         "hand, dated forty years in the future, asking him to leave the lamp dark on the night of the storm. He "
         "spent the day arguing with the sea about it, and at dusk he climbed the stairs, sat beside the lamp, and "
         "did not light it. Three ships turned back from the harbour and anchored safely in the bay.")
AFTERWORD = " ".join(["Afterword: stories about lighthouses often use the lamp as a symbol of duty, and the keeper's "
                      "choice between rules and conscience is a theme that readers recognise from many coastal "
                      "tales, legends and ballads passed down by sailors and their families."] * 6)


@pytest.mark.parametrize("where", ["appendix", "preface"])
def test_a_copy_with_a_long_appendix_or_preface_is_still_its_siblings_idea(embedder, where):
    """Found by the adversary: a sibling's copy padded with a long appendix (new with pooling chunks) or preface
    embeds far from it on average, and was paid as a new idea (+0.13). All of its wording is the sibling's."""
    padded = STORY + " " + AFTERWORD if where == "appendix" else AFTERWORD + " " + STORY
    cfg = NoveltyConfig.from_dict({"quality": TOY_TEXTS, "archive": {"weight": 0}})
    m = NoveltyReward(cfg, embedder=embedder)
    other = ["A robot learns to paint by copying the sunsets it sees from a factory roof.",
             "Two rival bakers swap recipes by mistake and both win the village fair."]
    s = m.score(["Write a short story."] * 4, [STORY, *other, padded], 4)
    emb = embedder.encode([STORY, padded])
    assert float(emb[0] @ emb[1]) < cfg.diversity_duplicate_threshold  # the embedding alone calls it a new idea
    c = s.components
    assert c["diversity"][3] == pytest.approx(c["diversity"][0]) and c["bonus"][3] <= c["bonus"][0] + 1e-9
    # Nor does the padding lend the source its distance: the pair earns what a source and its exact copy earn.
    exact = m.score(["Write a short story."] * 4, [STORY, *other, STORY], 4).components
    assert c["bonus"][3] <= exact["bonus"][3] + 1e-9 and c["bonus"][0] <= exact["bonus"][0] + 1e-9


def test_large_integers_are_compared_exactly():
    """Found by review: ten significant digits made 2**40 + 1 the same answer as 2**40 (graded right)."""
    assert final_answer(r"\boxed{1099511627777}", "boxed") != final_answer(r"\boxed{1099511627776}", "boxed")
    assert final_answer(r"\boxed{007}", "boxed") == "7" and final_answer(r"\boxed{1/3}", "boxed") == repr(1 / 3)


def test_a_batch_with_more_prompts_than_the_memory_holds_keeps_all_of_them(embedder):
    """Found by review: with more distinct prompts in one batch than quality.relevance_prompts, a prompt seen before
    was forgotten mid-batch and its topic lookup raised."""
    from openrlhf_novelty.checks import PromptMemory

    memory = PromptMemory(2)
    memory.lookup([1], ["old phones"], embedder.encode)
    memory.lookup([1, 2, 3], ["old phones", "tweets", "stories"], embedder.encode)
    assert memory.topics([1, 2, 3])[0].tolist() == [1, 2, 3]
    memory.lookup([4], ["rivers"], embedder.encode)  # now back to the two most recent
    assert sorted(memory.topics()[0].tolist()) == [3, 4]

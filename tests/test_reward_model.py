import math

import pytest
import torch

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.reward import NoveltyReward, novelty_coef, reward_formula
from tests.conftest import TOY_TEXTS

SEEN = [  # 4 prompts x 4 samples, on what drives retweets
    "Tweets with concrete numbers get more retweets.", "Questions in tweets drive more retweets.",
    "Morning tweets are retweeted more.", "Emotional words increase retweets.",
    "Tweets that tag a celebrity are retweeted more.", "Threads get more retweets than single tweets.",
    "Tweets with a call to action are shared more.", "Short tweets are retweeted more than long ones.",
    "Breaking news tweets spread faster.", "Tweets with images get more retweets.",
    "Humorous tweets are retweeted more often.", "Tweets with hashtags reach more people.",
    "Controversial opinions get more retweets.", "Tweets with statistics are shared more.",
    "Personal stories earn more retweets.", "Tweets with deadlines get more retweets.",
]
UNSEEN = ["Volcanic ash enriches soil with minerals over decades.", "Octopuses can taste with their arms.",
          "Sourdough rises because wild yeast ferments sugars.", "Jupiter's moon Europa may hide a salty ocean."]


def model(embedder, **settings) -> NoveltyReward:
    return NoveltyReward(NoveltyConfig.from_dict({"quality": TOY_TEXTS, **settings}), embedder=embedder)


# --- the formula, on literal numbers (defaults: w_rnd 0.25, w_div 1, beta 0.5, w_q 1)
Q = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
TERMS = {"rnd": torch.tensor([2.0, 2.0, 2.0]), "diversity": torch.tensor([0.4, 0.4, 0.4])}  # novelty = 0.9


@pytest.mark.parametrize(
    "settings, step, mask, expected",
    [
        ({}, 0, None, [1.45, 0.725, 0.0]),  # q + 0.5 * q * 0.9: novelty pays in proportion to quality
        ({"reward": {"gate": "threshold"}}, 0, None, [1.45, 0.95, 0.0]),  # q >= 0.5 gets the full 0.45
        ({"reward": {"gate": "none"}}, 0, None, [1.45, 0.95, 0.45]),  # even quality 0 is paid for novelty
        ({}, 0, [False, True, False], [1.45, 0.0, 0.0]),  # masked: no quality credit, no novelty credit
        ({"reward": {"decay": "inverse", "decay_steps": 100}}, 100, None, [1.225, 0.6125, 0.0]),  # beta 0.5 -> 0.25
        ({"reward": {"decay": "linear", "decay_steps": 100}}, 200, None, [1.0, 0.5, 0.0]),  # beta decayed to 0
        ({"rnd": {"weight": 0.0}, "diversity": {"weight": 2.0}}, 0, None, [1.4, 0.7, 0.0]),  # novelty = 0.8
    ],
)
def test_reward_formula(settings, step, mask, expected):
    cfg = NoveltyConfig.from_dict(settings)
    m = None if mask is None else torch.tensor(mask)
    out = reward_formula(cfg, step, Q.clone(), TERMS, m)
    assert out["reward"].tolist() == pytest.approx(expected)


def test_novelty_coef_schedules():
    inverse = NoveltyConfig.from_dict({"reward": {"decay": "inverse", "decay_steps": 40, "novelty_coef": 1.0}})
    assert [novelty_coef(inverse, t) for t in (0, 40, 120)] == [1.0, 0.5, 0.25]  # i-MENTOR's 40 / (40 + t)


# --- the model on the real all-MiniLM-L6-v2
def test_rnd_novelty_of_repeated_texts_falls_each_step_while_unseen_stays_high(embedder):
    m = model(embedder, rnd={"warmup_samples": 16}, archive={"weight": 0})
    m.update(m.score(["p"] * 16, SEEN, 4))  # warm-up: the normalizer sees the first batch
    seen_means = []
    for _ in range(6):
        s = m.score(["p"] * 16, SEEN, 4)
        u = m.score(["q"] * 4, UNSEEN, 4)
        seen_means.append(sum(s.components["rnd"]) / 16)
        m.update(s)
    assert all(a > b for a, b in zip(seen_means, seen_means[1:])), seen_means
    assert seen_means[-1] < 0.5 * seen_means[0]
    assert min(u.components["rnd"]) > 3 * seen_means[-1]


def test_identical_siblings_have_no_diversity_distinct_ones_do(embedder):
    m = model(embedder)
    s = m.score(["p"] * 8, [SEEN[0]] * 4 + UNSEEN, 4)
    assert max(s.components["diversity"][:4]) < 1e-4  # four copies of one answer
    assert min(s.components["diversity"][4:]) > 0.5  # four answers on four topics


def test_total_reward_varies_within_a_group_when_responses_differ(embedder):
    # The prototype's RND was one number per batch, constant in every group, so GRPO's (r - mean) / std erased it.
    m = model(embedder, rnd={"warmup_samples": 0}, diversity={"weight": 0}, archive={"weight": 0})
    variants = [f"{prefix}{t}" for prefix in ("", "I think ", "Hypothesis: ", "Maybe ") for t in SEEN]
    m.update(m.score(["p"] * 64, variants, 4))  # the normalizer sees 64 on-topic samples
    fresh = ["Tweets sent on weekends get more retweets.", "Tweets quoting a famous person are retweeted more.",
             "Tweets replying to trending topics get more retweets.", "Polls in tweets attract more retweets."]
    s = m.score(["p"] * 8, SEEN[:4] + fresh, 4)
    for g in range(2):
        group = s.rewards[4 * g: 4 * g + 4]
        assert len(set(group)) == 4 and torch.tensor(group).std().item() > 1e-2, group


def test_save_and_load_reproduce_scores_exactly(embedder, tmp_path):
    a = model(embedder, rnd={"warmup_samples": 8})
    for _ in range(3):
        a.update(a.score(["p"] * 16, SEEN, 4))
    a.save(tmp_path / "state.pt")
    b = model(embedder, rnd={"warmup_samples": 8, "seed": 123})  # another seed: everything must come from the file
    b.load(tmp_path / "state.pt")
    sa, sb = a.score(["q"] * 4, UNSEEN, 4), b.score(["q"] * 4, UNSEEN, 4)
    assert sa.rewards == sb.rewards and sa.components == sb.components and sa.step == sb.step == 3
    a.update(sa)
    b.update(sb)
    assert a.score(["p"] * 16, SEEN, 4).rewards == b.score(["p"] * 16, SEEN, 4).rewards


def test_every_memory_of_the_checks_is_saved_and_restored_exactly(embedder, tmp_path):
    """Prompt topics, the template memory and the common words are state: a resumed run must not start them
    fresh (the common words need 2,000 words before fluency is measured at all)."""
    from openrlhf_novelty.checks import CommonWords

    a = model(embedder, quality={"fluency_weight": 1.0, "relevance_weight": 1.0, "template_threshold": 0.5})
    prompts = [f"Propose idea number {i} for a city park." for i in range(4)]
    while a.common.total < CommonWords.MIN_WORDS:
        a.update(a.score([p for p in prompts for _ in range(4)], SEEN, 4))
    a.save(tmp_path / "state.pt")
    b = model(embedder, quality={"fluency_weight": 1.0, "relevance_weight": 1.0, "template_threshold": 0.5})
    b.load(tmp_path / "state.pt")
    for part in ("prompts", "templates", "common"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert (torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k]), (part, k)
    probe = ([prompts[0]] * 4, ["zq xv kkj wpp lmn ooq rrt", *SEEN[:3]], 4)
    ca, cb = a.score(*probe).components, b.score(*probe).components
    assert ca.keys() == cb.keys() and all(cb[k] == pytest.approx(ca[k], abs=1e-5) for k in ca)  # encoding order
    assert cb["fluency"][0] == 0.0  # warm after the resume


def test_state_from_another_shape_is_refused_with_a_clear_message(embedder, tmp_path):
    a = model(embedder)
    a.update(a.score(["p"] * 4, UNSEEN, 4))
    a.save(tmp_path / "s.pt")
    b = model(embedder, rnd={"hidden": 64})
    with pytest.raises(ValueError, match="rnd.hidden is 64 here but 256 in the state"):
        b.load(tmp_path / "s.pt")


def test_empty_and_unmatched_responses_earn_no_novelty(embedder):
    m = model(embedder, extract={"pattern": r"HYP:\s*(.+)", "fallback": "empty"})
    s = m.score(["p"] * 4, ["HYP: Tweets with numbers win.", "", "no tag at all", "HYP: Threads win.<|im_end|>"], 4)
    assert s.components["format"] == [1.0, 0.0, 0.0, 1.0]
    assert s.components["novelty"][1] == 0.0 and s.components["novelty"][2] == 0.0
    assert s.rewards[1] == 0.0 and s.rewards[2] == 0.0  # quality 0 (format) gates everything
    assert s.components["novelty"][0] > 0 and s.components["novelty"][3] > 0


def test_bank_answers_are_not_novel(embedder, tmp_path):
    bank = tmp_path / "bank.txt"
    bank.write_text("# known\nTweets with emojis get more retweets.\n\nTweets with numbers get more retweets.\n")
    m = model(embedder, bank={"path": str(bank)})
    s = m.score(["p"] * 2, ["Tweets with emojis get more retweets.", UNSEEN[1]], 2)
    assert s.components["bank"][0] < 1e-4 and s.components["bank"][1] > 0.5
    with pytest.raises(ConfigError, match="bank.path: .* has no entries"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        model(embedder, bank={"path": str(tmp_path / "empty.txt")})


def test_task_reward_mixes_into_quality_and_bad_values_count_as_zero(embedder):
    m = model(embedder, extract={"pattern": r"HYP:\s*(.+)"}, reward={"task_weight": 3.0})
    s = m.score(["p"] * 4, ["HYP: a", "HYP: b", "HYP: c", "none"], 4, task_rewards=[1.0, math.nan, 7.0, 1.0])
    assert s.components["task"] == [1.0, 0.0, 1.0, 1.0]  # nan -> 0; 7 clipped to the [0, 1] range
    assert s.components["quality"] == [1.0, 0.25, 1.0, 0.75]  # (1 * format + 3 * task) / 4


def test_bad_batch_shapes_raise_value_errors(embedder):
    m = model(embedder)
    with pytest.raises(ValueError, match="5 samples do not split into groups of 4"):
        m.score(["p"] * 5, SEEN[:5], 4)
    with pytest.raises(ValueError, match="got 3 prompts for 4 responses"):
        m.score(["p"] * 3, SEEN[:4], 4)


def test_precomputed_quality_replaces_format_and_judge(embedder):
    # The experience-maker hook passes the quality the reward file computed; format is not re-checked.
    m = model(embedder, extract={"pattern": r"HYP:\s*(.+)"}, rnd={"weight": 0}, archive={"weight": 0})
    s = m.score(["p"] * 4, ["HYP: a b", "no tag", "HYP: c d", "HYP: e f"], 4, quality=[1.0, 0.5, None, 2.0])
    assert s.components["quality"] == [1.0, 0.5, 0.0, 1.0]  # None -> masked, 2 -> clipped to 1
    assert "format" not in s.components and s.rewards[2] == 0.0 and s.components["gate"][2] == 0.0

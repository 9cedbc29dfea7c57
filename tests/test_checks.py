"""Checks novelty cannot buy (non-degeneracy on quality; relevance, language, fluency and answers or templates
shared across prompts on the gate), and the cheap tricks they exist to stop: each trick is shown paying without its
check and not paying with it."""

import logging

import pytest
import torch

from openrlhf_novelty.checks import (
    PromptMemory,
    nondegenerate,
    prompt_free,
    relevance,
    repeat_share,
    shared_across_prompts,
)
from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.diversity import prompt_key
from openrlhf_novelty.remote import quality_log_keys
from openrlhf_novelty.reward import NoveltyReward

PROMPTS = [
    "Propose one new use for an old smartphone.",
    "Propose one way a small library could attract more teenagers.",
    "Propose one product that would help people drink more water.",
    "Propose one way to reduce food waste in a school cafeteria.",
    "Propose one feature for a bicycle that nobody has built yet.",
]
ON_TOPIC = [
    ["Turn the old smartphone into a home security camera that streams to your new phone.",
     "Use the old smartphone as a dedicated music player and alarm clock by the bed."],
    ["The library could host weekly video game tournaments and comic drawing clubs for teenagers.",
     "Let teenagers run the library's social media and choose which new books it buys."],
    ["A water bottle that glows when you have not taken a sip for an hour.",
     "A smart cup that tracks how much water you drink and reminds you on your phone."],
    ["Let students choose smaller portions in the cafeteria and compost the leftover food.",
     "Give the cafeteria's unsold food to a local shelter at the end of each school day."],
    ["A bicycle with a built-in light that projects the lane onto the road at night.",
     "A bicycle saddle that warms up in winter using energy from pedalling."],
]
OFF_TOPIC = "Ocean tides rise and fall twice a day because the moon's gravity pulls on the water."


def config(**quality):
    return NoveltyConfig.from_dict({"rnd": {"weight": 0.0}, "archive": {"weight": 0.0},
                                    "quality": {"relevance_min_prompts": 4, **quality}})


def batch(third_of_first: str):
    """5 prompts x 3 samples: two on-topic answers each; the first prompt's third answer is ``third_of_first``."""
    prompts, responses = [], []
    for i, (p, answers) in enumerate(zip(PROMPTS, ON_TOPIC)):
        third = third_of_first if i == 0 else answers[0] + " It is cheap."
        prompts += [p] * 3
        responses += [*answers, third]
    return prompts, responses


def test_repeat_share_and_nondegenerate_literal_values():
    assert repeat_share("a b c a b c a b c") == pytest.approx(1 - 3 / 7)  # 7 trigrams, 3 distinct
    assert repeat_share("tweets with numbers get more retweets") == 0.0
    texts = ["HIP- HIP- HIP- HIP- HIP- HIP- HIP- HIP-", "tweets with numbers get more retweets", "ok sure",
             "a b c a b c a b c d e f"]  # 10 trigrams, 6 distinct: repeat share 0.4, between 0.25 and 0.5
    assert nondegenerate(texts, 3, 0.5).tolist() == pytest.approx([0.0, 1.0, 0.0, 0.4])
    assert nondegenerate(["ok sure"], 0, 1.0).tolist() == [1.0]  # checks off: only an empty text fails


def test_relevance_literal_values():
    # Prompt 0 is the answer's own; prompts 1-4 are the others, at cosines 0.1, 0.2, 0.3, 0.4 from every answer:
    # mean 0.25, sample std sqrt(0.05 / 3). z = 2 -> 1, z = 1.25 -> 0.5, z = 0 -> 0 (ramp 0.5 .. 2).
    std = (0.05 / 3) ** 0.5
    eye = torch.eye(6, dtype=torch.float64)
    rows = []
    for own in (0.25 + 2 * std, 0.25 + 1.25 * std, 0.25):
        v = own * eye[0] + 0.1 * eye[1] + 0.2 * eye[2] + 0.3 * eye[3] + 0.4 * eye[4]
        rows.append(v + (1 - float(v @ v)) ** 0.5 * eye[5])  # unit norm through a sixth, unrelated direction
    answers, prompts = torch.stack(rows), eye[:5]
    rel, measured = relevance(answers, prompts[[0, 0, 0]], torch.tensor([0, 0, 0]), torch.arange(5), prompts,
                              (0.5, 2.0), 4)
    assert rel.tolist() == pytest.approx([1.0, 0.5, 0.0], abs=1e-5) and measured.all()
    # Fewer other prompts than required: unknown, so neutral 1 rather than off-topic.
    assert relevance(answers[2:], prompts[:1], torch.tensor([0]), torch.arange(3), prompts[:3], (0.5, 2.0), 4)[0] \
        .tolist() == [1.0]
    # Prompts the encoder cannot tell apart (every other prompt equally close): not measurable, 1, not 0.
    same = torch.zeros(6, dtype=torch.float64)
    same[0] = 1.0
    flat = torch.stack([same] * 5)
    rel, measured = relevance(answers[2:], flat[:1], torch.tensor([0]), torch.arange(5), flat, (0.5, 2.0), 4)
    assert rel.tolist() == [1.0] and measured.tolist() == [False]


def test_shared_across_prompts_counts_other_prompts_only():
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [1.0, 0.0]]), dim=-1)
    keys = torch.tensor([1, 2, 3, 1])
    valid = torch.tensor([True, True, True, True])
    assert shared_across_prompts(e, keys, valid, 0.95).tolist() == [1.0, 1.0, 0.0, 1.0]
    # The same answer twice for the same prompt is not shared (group diversity prices that).
    assert shared_across_prompts(e[[0, 3]], keys[[0, 3]], valid[:2], 0.95).tolist() == [0.0, 0.0]
    # An answer given to another prompt in an earlier step (the archive) counts too.
    assert shared_across_prompts(e[2:3], keys[2:3], valid[:1], 0.95, e[2:3], torch.tensor([9])).tolist() == [1.0]


def test_off_topic_drift_pays_without_relevance_and_not_with_it(embedder):
    prompts, responses = batch(OFF_TOPIC)
    sound = [1.0] * len(responses)  # a judge the drift has fooled completely
    for weight, pays in ((0.0, True), (1.0, False)):
        m = NoveltyReward(config(relevance_weight=weight), embedder=embedder)
        s = m.score(prompts, responses, 3, soundness=sound)
        off, on = s.rewards[2], max(s.rewards[:2])
        assert (off > on) is pays, (weight, s.rewards[:3])
    c = s.components
    assert c["relevance"][2] < 0.3 and min(c["relevance"][:2]) > 0.9  # measured on real MiniLM embeddings
    assert c["quality"][2] == 1.0  # what the judge said stands: relevance withholds novelty only
    assert c["bonus"][2] < 0.5 * min(c["bonus"][:2])


def test_degenerate_answers_earn_neither_quality_nor_novelty(embedder):
    for trick in ("HIP- HIP- HIP- HIP- HIP- HIP- HIP- HIP- HIP- HIP-", "Smartphone."):
        prompts, responses = batch(trick)
        sound = [1.0] * len(responses)
        loose = NoveltyReward(config(degenerate_weight=0.0, relevance_weight=0.0, language_weight=0.0),
                              embedder=embedder)
        assert loose.score(prompts, responses, 3, soundness=sound).rewards[2] > 1.0  # it paid: quality 1 + bonus
        s = NoveltyReward(config(relevance_weight=0.0), embedder=embedder).score(prompts, responses, 3,
                                                                                soundness=sound)
        assert s.components["nondegenerate"][2] == 0.0 and s.rewards[2] == 0.0, trick


def test_one_answer_for_every_prompt_earns_no_novelty(embedder):
    prompts = PROMPTS[:4]
    generic = "Start a small club where people meet every week to share ideas."
    responses = [generic, generic, ON_TOPIC[2][0], ON_TOPIC[3][0]]
    cfg = NoveltyConfig.from_dict({"rnd": {"weight": 0.0}, "quality": {"relevance_weight": 0.0}})
    m = NoveltyReward(cfg, embedder=embedder)  # novelty from the (empty) archive: 1 for everything
    s = m.score(prompts, responses, 1, soundness=[1.0] * 4)
    assert s.components["shared"] == [1.0, 1.0, 0.0, 0.0]
    assert s.components["bonus"][:2] == [0.0, 0.0] and min(s.components["bonus"][2:]) > 0
    assert s.components["quality"][:2] == [1.0, 1.0]  # a shared answer can be right: only novelty is withheld
    off = NoveltyReward(cfg.replace(quality={"relevance_weight": 0.0, "shared_threshold": 1.5,
                                             "template_threshold": 1.5}), embedder=embedder)
    assert min(off.score(prompts, responses, 1, soundness=[1.0] * 4).components["bonus"][:2]) > 0


def test_shared_with_an_earlier_step_through_the_archive(embedder):
    # A per-prompt archive pays the answer full novelty for prompt 1 (it never answered prompt 1): only the
    # shared-answer check withholds it.
    cfg = NoveltyConfig.from_dict({"rnd": {"weight": 0.0}, "archive": {"per_prompt": True},
                                   "quality": {"relevance_weight": 0.0}})
    m = NoveltyReward(cfg, embedder=embedder)
    m.update(m.score([PROMPTS[0]], [ON_TOPIC[0][0]], 1))
    s = m.score([PROMPTS[1]], [ON_TOPIC[0][0]], 1)  # last step's answer to prompt 0, now for prompt 1
    assert s.components["shared"] == [1.0] and s.components["archive"] == [1.0] and s.components["bonus"] == [0.0]


def test_relevance_uses_the_prompt_memory_one_sample_at_a_time(embedder):
    # The streaming reward file scores one sample per call: the other prompts come from memory.
    m = NoveltyReward(config(), embedder=embedder)
    first = m.score([PROMPTS[0]], [OFF_TOPIC], 1).components["relevance"]
    assert first == [1.0]  # no other prompt known yet: relevance unknown, neutral
    for p, answers in zip(PROMPTS[1:], ON_TOPIC[1:]):
        m.score([p], [answers[0]], 1)
    assert m.score([PROMPTS[0]], [OFF_TOPIC], 1).components["relevance"][0] < 0.3
    assert m.score([PROMPTS[0]], [ON_TOPIC[0][1]], 1).components["relevance"][0] > 0.9
    assert len(m.prompts) == 5  # each prompt encoded once and remembered


def test_restating_the_prompt_buys_no_relevance(embedder):
    # Relevance reads the answer without its prompt's words: the prompt itself, or its key words in front of an
    # off-topic sentence, are about nothing (the old measure gave the echo relevance 1).
    m = NoveltyReward(config(), embedder=embedder)
    for p, answers in zip(PROMPTS, ON_TOPIC):
        m.score([p] * 2, answers, 2)
    echo = [PROMPTS[0], "Old smartphone: " + OFF_TOPIC]
    rel = m.score([PROMPTS[0]] * 2, echo, 2).components["relevance"]
    assert rel[0] == 0.0 and rel[1] < 0.3
    loose = NoveltyReward(config(relevance_ramp=[0.5, 2.0]), embedder=embedder)
    loose.load_state_dict(m.state_dict())
    assert prompt_free("Turn the OLD smartphone into a camera.", PROMPTS[0]) == "turn the into a camera"


def test_prompt_topics_learn_relevant_answers_and_are_saved_with_the_state(embedder, tmp_path):
    mem = PromptMemory(3)
    mem.lookup([], [], embedder.encode)  # an empty batch is no error
    for i in range(5):
        mem.lookup([i], [f"prompt {i}"], embedder.encode)
    assert mem.topics()[0].tolist() == [2, 3, 4]
    m = NoveltyReward(config(), embedder=embedder)
    for p, a in zip(PROMPTS, ON_TOPIC):
        m.update(m.score([p] * 2, a, 2))
    assert len(m.prompts._answers) == 5  # every prompt's topic took its relevant answers
    key = [prompt_key(PROMPTS[0])]
    before = m.prompts.topics(key)[1]
    off = m.score([PROMPTS[0]] * 2, [OFF_TOPIC, OFF_TOPIC + " Really."], 2)
    off.relevant = torch.tensor([False, False])  # as scored in a full batch (one group alone: z is noise)
    m.update(off)
    assert torch.equal(m.prompts.topics(key)[1], before)  # answers found off topic do not move the topic
    off.relevant = torch.tensor([True, False])
    m.update(off)
    assert not torch.equal(m.prompts.topics(key)[1], before)
    m.save(tmp_path / "s.pt")
    back = NoveltyReward(config(), embedder=embedder)
    back.load(tmp_path / "s.pt")
    (k1, e1), (k2, e2) = m.prompts.topics(), back.prompts.topics()
    assert torch.equal(k1, k2) and torch.equal(e1, e2)
    probe = ([PROMPTS[0]] * 2, [OFF_TOPIC, ON_TOPIC[0][1]], 2)
    again, there = back.score(*probe).components["relevance"], m.score(*probe).components["relevance"]
    assert again == pytest.approx(there, abs=1e-6)  # no warm-up after a resume


def test_checks_are_logged_and_a_failing_check_warns_once(embedder, caplog):
    from openrlhf_novelty.reward import gate_log_keys

    cfg = NoveltyConfig()
    assert quality_log_keys(cfg)[1] == "novelty/nondegenerate"
    assert gate_log_keys(cfg) == ["novelty", "gate", "relevance", "language", "fluency", "shared",
                                  "unembedded"]
    assert "relevance" not in gate_log_keys(cfg.replace(quality={"relevance_weight": 0.0}))
    m = NoveltyReward(config(), embedder=embedder)
    with caplog.at_level(logging.WARNING):
        for _ in range(60):  # 300 samples, every one of them too short
            m.quality(PROMPTS, ["ok"] * 5)
    assert caplog.text.count("mean nondegenerate is 0.00") == 1 and "quality.min_words" in caplog.text


def test_bad_ramp_is_refused():
    with pytest.raises(ConfigError, match="quality.relevance_ramp"):
        NoveltyConfig.from_dict({"quality": {"relevance_ramp": [2.0, 1.0]}})


def test_streaming_reward_withholds_novelty_from_a_shared_answer_and_logs_the_checks(embedder):
    # Without the hook the reward file / server pays novelty per sample: the same conditions apply there.
    from openrlhf_novelty.remote import RemoteReward, log_keys

    cfg = NoveltyConfig.from_dict({"rnd": {"weight": 0.0}, "stream": {"update_every": 64, "group_timeout": 0},
                                   "quality": {"relevance_min_prompts": 4}})  # one sample per prompt: on arrival
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    for p, answers in zip(PROMPTS[1:], ON_TOPIC[1:]):
        remote([p + answers[0]], [p], [""])
    generic = ON_TOPIC[1][0]  # prompt 1's answer, now also given to prompt 0
    shared = remote([PROMPTS[0] + generic], [PROMPTS[0]], [""])
    own = remote([PROMPTS[0] + ON_TOPIC[0][0]], [PROMPTS[0]], [""])
    assert set(shared["extra_logs"]) == set(log_keys(cfg)) >= {"novelty/relevance", "novelty/nondegenerate",
                                                                 "novelty/shared"}
    assert shared["extra_logs"]["novelty/shared"] == [1.0] and shared["extra_logs"]["novelty/gate"] == [0.0]
    assert shared["extra_logs"]["novelty/relevance"] == [0.0]  # it is about libraries, not smartphones
    assert own["extra_logs"]["novelty/shared"] == [0.0] and own["rewards"][0] > own["scores"][0] > 0.9


def test_prompts_the_encoder_cannot_tell_apart_are_said_not_scored_zero(embedder, caplog):
    # Ten distinct prompts that embed identically (they differ only in trailing spaces, stripped before encoding),
    # as a long shared template would make them: relevance is unmeasurable, so 1, and the log says so once.
    m = NoveltyReward(config(), embedder=embedder)
    prompts = ["Propose one new use for an old smartphone." + " " * i for i in range(10)]
    with caplog.at_level(logging.WARNING):
        for _ in range(30):
            c = m.score(prompts, [ON_TOPIC[0][0]] * 10, 1).components
    assert c["relevance"] == [1.0] * 10
    assert caplog.text.count("relevance could be measured for only 0% of the first") == 1


def test_short_chinese_passes_the_length_check_and_character_loops_fail():
    # Counted by spaces, a correct six-character Chinese answer was one word (degenerate), while
    # 'hahahahahaha hahahahahahaha hahahahahahahahaha' was three fine words.
    assert nondegenerate(["旧手机可以做成监控摄像头", "Turn it into a camera."], 3, 0.5).tolist() == [1.0, 1.0]
    assert nondegenerate(["hahahahahaha hahahahahahaha hahahahahahahahaha", "abcabcabcabc abcabcabcabcabc"],
                         3, 0.5).tolist() == [0.0, 0.0]
    story = ("Every keeper of Skerry Light receives the letter eventually. Jonah's arrived on a foggy Tuesday, "
             "addressed in faded ink to Miss Ada Colley, who had tended the lamp a century before him.")
    assert nondegenerate([story], 3, 0.5).tolist() == [1.0]  # prose reuses syllables: that is allowed


def test_an_answer_in_another_language_earns_no_novelty(embedder):
    from openrlhf_novelty.checks import LanguageCheck

    check = LanguageCheck([])
    prompt = PROMPTS[0]
    answers = [ON_TOPIC[0][0], "Transformer le vieux smartphone en caméra de sécurité qui diffuse vers le nouveau.",
               "把旧手机变成一个家庭监控摄像头，把画面传到新手机上。", "Ok."]
    assert check(answers, [prompt] * 4, [1] * 4).tolist() == [1.0, 0.0, 0.0, 1.0]  # "Ok." is too short to tell
    assert LanguageCheck(["en", "fr"])(answers[:2], [prompt] * 2, [1] * 2).tolist() == [1.0, 1.0]
    assert check(answers[1:2], ["P"], [2]).tolist() == [1.0]  # a prompt too short to have a language
    m = NoveltyReward(config().replace(archive={"weight": 0.5}), embedder=embedder)  # novelty 0.5 for each
    s = m.score([prompt] * 2, answers[:2], 2)
    assert s.components["language"] == [1.0, 0.0] and s.components["bonus"][1] == 0.0 < s.components["bonus"][0]


def test_word_salad_and_letter_junk_earn_no_novelty_once_common_words_are_known(embedder):
    from openrlhf_novelty.checks import CommonWords

    common = CommonWords()
    prose = [a for answers in ON_TOPIC for a in answers]
    salad = "optimised key energetic clock table reveal science earning zero direct microphone household offers"
    assert common.fluency([salad]).tolist() == [1.0]  # nothing learned yet: unknown is not junk
    while common.total < CommonWords.MIN_WORDS:
        common.add(prose)
    assert common.fluency([salad, "xq zvk kkjw pplo qrt mnbv", ON_TOPIC[2][1]]).tolist() == [0.0, 0.0, 1.0]
    back = CommonWords()
    back.load_state_dict(common.state_dict())
    assert back.fluency([salad, ON_TOPIC[2][1]]).tolist() == [0.0, 1.0] and back.total == common.total


def test_a_template_with_a_per_prompt_tail_is_shared(embedder):
    # Embeddings put these at cosine ~0.7 across prompts (under the 0.95 of the shared check); their word
    # shingles, prompt words removed, are the same.
    template = "This is a simple, proven approach that works well in practice and that most people would agree " \
               "makes a real difference, especially when it comes to {}."
    tails = ["old smartphones", "small libraries and teenagers", "drinking more water"]
    prompts, responses = [], []
    for p, tail, answers in zip(PROMPTS, tails, ON_TOPIC):
        prompts += [p] * 2
        responses += [template.format(tail), answers[0]]
    m = NoveltyReward(config(), embedder=embedder)
    s = m.score(prompts, responses, 2)
    assert s.components["shared"] == [1.0, 0.0] * 3
    off = NoveltyReward(config(template_threshold=1.5), embedder=embedder).score(prompts, responses, 2)
    assert off.components["shared"] == [0.0] * 6  # the embedding check alone lets it through
    m.update(s)  # and from memory, a later step: the template given to one more prompt
    later = m.score([PROMPTS[3]] * 2, [template.format("school cafeteria food waste"), ON_TOPIC[3][0]], 2)
    assert later.components["shared"] == [1.0, 0.0]


def test_shared_answers_are_checked_against_earlier_steps_with_archive_weight_0(embedder):
    # examples/configs/math.yaml turns the archive term off; the memory the shared check reads stays.
    cfg = config(relevance_weight=0.0).replace(archive={"weight": 0.0})
    m = NoveltyReward(cfg, embedder=embedder)
    m.update(m.score([PROMPTS[0]], [ON_TOPIC[0][0]], 1))
    s = m.score([PROMPTS[1]], [ON_TOPIC[0][0]], 1)
    assert s.components["shared"] == [1.0] and "archive" not in s.components

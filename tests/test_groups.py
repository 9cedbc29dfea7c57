"""Group completion without the hook (``stream.group_timeout``): the reward server and the reward file wait for a
prompt's whole group and score it exactly as the experience-maker hook scores it."""

import asyncio
import copy
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from openrlhf_novelty import stream as stream_module
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.remote import RemoteReward
from openrlhf_novelty.reward import NoveltyReward
from openrlhf_novelty.server import RewardServer
from tests.test_openrlhf import REWARD_FILE, SingleTurnAgentExecutor

PROMPTS = ["Propose one new use for an old smartphone.\n", "Suggest a way to waste less food at home.\n",
           "Name an unusual hobby and say why it is fun.\n", "Describe a new service a public library could offer.\n",
           "Invent a game children can play with one ball.\n"]
ANSWERS = [
    ["Mount it on the fridge as a kitchen recipe screen.", "Turn it into a baby monitor with a free camera app.",
     "Use it as a dashcam that records every drive.", "Make it a dedicated music player for the garage."],
    ["Plan the week's meals before you go shopping.", "Freeze bread and leftovers before they go stale.",
     "Keep a shelf for food that must be eaten first.", "Cook vegetable scraps into a weekly soup stock."],
    ["Birdwatching, because every walk becomes a treasure hunt.", "Knife making: you forge a tool you then use daily.",
     "Competitive sandcastle building rewards patience and humour.", "Urban foraging teaches the city's edible plants."],
    ["Lending tools like drills and ladders to members.", "Quiet pods where people can record podcasts.",
     "Seed libraries where gardeners borrow and return seeds.", "Evening classes on repairing your own clothes."],
    ["Players bounce the ball and name an animal before it lands.", "Kick the ball through a chalk goal drawn on a wall.",
     "Pass the ball in a circle while counting backwards.", "Roll the ball to knock over plastic bottles."],
]


def config(**stream) -> NoveltyConfig:
    return NoveltyConfig.from_dict({"rnd": {"warmup_samples": 0},
                                    "stream": {"update_every": 10000, "group_size": 4, "group_timeout": 30,
                                               **stream}})


def trained_state(cfg, embedder) -> dict:
    """A state past its first step: RND trained and nonzero, 8 answers in the archive."""
    warm = NoveltyReward(cfg, embedder=embedder)
    texts = ["Recycle it into a doorbell camera.", "Give it to a child as a learning tablet.",
             "Compost fruit peels in the garden.", "Share extra food with neighbours.",
             "Chess by post with strangers.", "Growing bonsai trees on a balcony.",
             "Free coding clubs for teenagers.", "Borrowable board games for families."]
    warm.update(warm.score([PROMPTS[i // 2] for i in range(8)], texts, 2))
    return warm.state_dict()


def reference(cfg, embedder, state) -> NoveltyReward:
    ref = NoveltyReward(cfg, embedder=embedder)
    ref.load_state_dict(copy.deepcopy(state))
    return ref


def check_like_the_hook(ref, prompt, answers, logs):
    """Each sample's terms and total reward equal NoveltyReward.score on its whole group (what the hook computes),
    given the quality the reward logged (the hook takes quality from the reward file too)."""
    got = [logs[a] for a in answers]
    scored = ref.score([prompt] * len(answers), answers, len(answers), quality=[g["novelty/quality"] for g in got])
    for key in ("diversity", "rnd", "archive", "novelty", "gate"):
        assert [g[f"novelty/{key}"] for g in got] == pytest.approx(scored.components[key], abs=1e-5), key
    assert [g["reward"] for g in got] == pytest.approx(scored.rewards, abs=1e-5)
    assert min(scored.components["rnd"]) > 0 and min(scored.components["diversity"]) > 0.2  # terms worth comparing


def test_server_scores_shuffled_delayed_samples_like_the_hook(embedder):
    """OpenRLHF's own HTTP client sends 5 prompts x 4 samples at once, shuffled, each after a random delay."""
    cfg = config()
    state = trained_state(cfg, embedder)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    remote.model.load_state_dict(copy.deepcopy(state))
    srv = RewardServer(remote, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    executor = SingleTurnAgentExecutor(f"{srv.url}/reward")
    jobs = [(p, a) for p, answers in zip(PROMPTS, ANSWERS) for a in answers]
    rng = random.Random(0)
    rng.shuffle(jobs)

    async def one(prompt, answer, delay):
        await asyncio.sleep(delay)
        out = (await executor._fetch_rewards_via_http([prompt + answer], [prompt], [""]))[0]
        return answer, {"reward": out["rewards"][0], **{k: v[0] for k, v in out["extra_logs"].items()}}

    async def go():
        return await asyncio.gather(*(one(p, a, rng.uniform(0, 0.6)) for p, a in jobs))

    try:
        logs = dict(asyncio.run(go()))
    finally:
        srv.shutdown()
    assert all(v["novelty/group_complete"] == 1.0 and v["novelty/error"] == 0.0 for v in logs.values())
    assert remote.stream.groups_complete == 5 and remote.stream.groups_timed_out == 0
    ref = reference(cfg, embedder, state)
    for prompt, answers in zip(PROMPTS, ANSWERS):
        check_like_the_hook(ref, prompt, answers, logs)


def call_concurrently(remote, jobs):
    """Each (prompt, answer, label) as its own request from its own thread, the way OpenRLHF calls the reward."""
    def one(job):
        prompt, answer, label = job
        out = remote([prompt + answer], [prompt], [label])
        return answer, {"reward": out["rewards"][0], **{k: v[0] for k, v in out["extra_logs"].items()}}

    with ThreadPoolExecutor(len(jobs)) as pool:
        return dict(pool.map(one, jobs))


def test_a_prompt_twice_in_a_batch_is_two_groups_of_n_never_one_of_2n(embedder):
    cfg = config()
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    remote.model.load_state_dict(trained_state(cfg, embedder))
    sizes, score = [], remote.stream._score
    remote.stream._score = lambda *a, group_size=0, **kw: sizes.append(group_size) or score(*a, group_size=group_size,
                                                                                          **kw)
    prompt, answers = PROMPTS[0], ANSWERS[0] + ANSWERS[1]  # 8 answers to one prompt: two dataset rows
    # The same label too: grouped by arrival, the first 4 form one group, the next 4 another.
    logs = call_concurrently(remote, [(prompt, a, "") for a in random.Random(1).sample(answers, 8)])
    assert remote.stream.groups_complete == 2 and set(sizes) == {4}
    assert all(v["novelty/group_complete"] == 1.0 for v in logs.values())
    # Different labels (the rows differ): each row's 4 samples are one group, scored like the hook would.
    state = remote.model.state_dict()
    jobs = [(prompt, a, "row A") for a in ANSWERS[0]] + [(prompt, a, "row B") for a in ANSWERS[1]]
    logs = call_concurrently(remote, random.Random(2).sample(jobs, 8))
    ref = reference(cfg, embedder, state)
    check_like_the_hook(ref, prompt, ANSWERS[0], logs)
    check_like_the_hook(ref, prompt, ANSWERS[1], logs)


def test_a_group_that_never_fills_is_scored_with_the_siblings_present_and_counted(embedder, caplog):
    cfg = config(group_timeout=1.0)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    remote.model.load_state_dict(trained_state(cfg, embedder))
    state = remote.model.state_dict()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="openrlhf_novelty.stream"):
        logs = call_concurrently(remote, [(PROMPTS[2], a, "") for a in ANSWERS[2][:2]])  # 2 of the group's 4
    took = time.monotonic() - start
    assert 1.0 <= took < 5.0
    assert all(v["novelty/group_complete"] == 0.0 and v["novelty/error"] == 0.0 for v in logs.values())
    assert remote.stats()["groups_timed_out"] == 1.0 and remote.stats()["groups_complete"] == 0.0
    assert "a group of 2 samples (stream.group_size 4) was scored with the siblings present" in caplog.text
    check_like_the_hook(reference(cfg, embedder, state), PROMPTS[2], ANSWERS[2][:2], logs)


def test_no_request_waits_past_openrlhfs_request_limit(embedder, monkeypatch):
    monkeypatch.setattr(stream_module, "REQUEST_BUDGET", 0.5)  # stands for 170 s of OpenRLHF's 180
    cfg = config(group_timeout=120)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    start = time.monotonic()
    out = remote([PROMPTS[0] + ANSWERS[0][0]], [PROMPTS[0]], [""])
    assert time.monotonic() - start < 5.0 and out["extra_logs"]["novelty/group_complete"] == [0.0]


def test_reward_file_widens_the_engines_pool_so_waiting_samples_cannot_starve_their_siblings(monkeypatch, caplog):
    """OpenRLHF calls reward_func through asyncio.to_thread: a pool of a few threads, each held by a sample waiting
    for its group, would leave the siblings queued behind them until the timeout."""
    monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG_JSON", json.dumps(config(group_timeout=20).to_dict()))
    package = logging.getLogger("openrlhf_novelty")  # the reward file turns its INFO lines on; off again after
    monkeypatch.setattr(package, "level", package.level)
    monkeypatch.setattr(package, "handlers", list(package.handlers))
    # Round robin over the prompts: the first 4 samples to get a thread are 4 different prompts' first samples.
    jobs = [(p, answers[i]) for i in range(4) for p, answers in zip(PROMPTS, ANSWERS)]

    async def go():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))  # a small node's pool
        executor = SingleTurnAgentExecutor(REWARD_FILE)  # executes the file on this loop, as the engine actor does
        start = time.monotonic()
        outs = await asyncio.gather(*(executor._fetch_rewards_via_func([p + a], [p], [""]) for p, a in jobs))
        return time.monotonic() - start, [o[0] for o in outs]

    with caplog.at_level(logging.INFO):
        took, outs = asyncio.run(go())
    assert [o["extra_logs"]["novelty/group_complete"] for o in outs] == [1.0] * 20
    assert took < 15.0  # no group waited out its 20 s
    assert "reward_func runs on this engine's widened pool (4096 threads, was 4)" in caplog.text


def test_a_sibling_arriving_after_its_group_timed_out_is_scored_at_once(embedder):
    """It must not open a new group and wait a whole timeout again for siblings already scored."""
    cfg = config(group_timeout=2.0)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    call_concurrently(remote, [(PROMPTS[3], a, "") for a in ANSWERS[3][:2]])  # times out after 2 s
    start = time.monotonic()
    out = remote([PROMPTS[3] + ANSWERS[3][2]], [PROMPTS[3]], [""])
    assert time.monotonic() - start < 1.0 and out["extra_logs"]["novelty/group_complete"] == [0.0]
    assert remote.stream.groups_timed_out == 2
    # The same prompt in a later step (long after) is a new group again.
    remote.stream._timed_out[(PROMPTS[3], "")][0] -= 10.0
    logs = call_concurrently(remote, [(PROMPTS[3], a, "") for a in ANSWERS[3]])
    assert all(v["novelty/group_complete"] == 1.0 for v in logs.values())


def test_the_next_group_of_a_prompt_whose_group_timed_out_waits_for_its_siblings(embedder):
    """Only the members a timed-out group was missing are stragglers: the prompt's next group, arriving at once
    (within 2 x group_timeout), is a whole group again, not four groups of one with diversity 0."""
    cfg = config(group_timeout=1.0)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    call_concurrently(remote, [(PROMPTS[3], a, "") for a in ANSWERS[3][:3]])  # 3 of 4: times out after 1 s
    out = remote([PROMPTS[3] + ANSWERS[3][3]], [PROMPTS[3]], [""])  # its straggler: at once, alone
    assert out["extra_logs"]["novelty/group_complete"] == [0.0]
    logs = call_concurrently(remote, [(PROMPTS[3], a, "") for a in ANSWERS[3]])  # the next step's group
    assert all(v["novelty/group_complete"] == 1.0 for v in logs.values())
    assert min(v["novelty/diversity"] for v in logs.values()) > 0
    assert remote.stream.groups_complete == 1 and remote.stream.groups_timed_out == 2


def test_the_judges_partition_gets_what_is_left_of_the_request_limit(embedder, monkeypatch, tmp_path):
    """diversity.mode judge through the server path: a slow judge cannot push a request past OpenRLHF's limit."""
    from tests.fake_openai import FakeOpenAI

    monkeypatch.setattr(stream_module, "REQUEST_BUDGET", 1.5)  # stands for 170 s of OpenRLHF's 180
    monkeypatch.setattr(stream_module, "SCORING_MARGIN", 0.5)
    slow = tmp_path / "slow_partition.txt"  # soundness answers at once; the partition request takes 5 s
    slow.write_text("[[slow]] Sort the answers to {prompt} into classes:\n{responses}\n")
    with FakeOpenAI(slow_seconds=5.0) as judge:
        cfg = NoveltyConfig.from_dict({"diversity": {"mode": "judge"}, "rnd": {"warmup_samples": 0},
                                       "stream": {"update_every": 100, "group_size": 4},
                                       "judge": {"base_url": judge.url, "model": "judge", "retries": 0,
                                                 "timeout": 10, "partition_rubric": str(slow)}})
        remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
        prompt = PROMPTS[0]
        start = time.monotonic()
        out = remote([prompt + a for a in ANSWERS[0]], [prompt] * 4, [""] * 4)
        took = time.monotonic() - start
    assert took < 4.0, took
    assert out["extra_logs"]["novelty/partition_failed"] == [1.0] * 4  # the embedding partition stood in
    assert out["extra_logs"]["novelty/group_complete"] == [1.0] * 4


def test_on_arrival_a_reworded_copy_of_an_earlier_sibling_adds_no_diversity(embedder):
    """group_timeout 0 scored each arrival against its prompt's earlier samples by plain cosine distance, so a copy
    reworded past an exact copy's 0 still earned distance (a whole group pays it nothing: duplicate_threshold)."""
    cfg = config(group_timeout=0)
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    source, reworded = ANSWERS[0][0], "Mount it on the fridge and use it as a recipe screen in the kitchen."
    e = embedder.encode([source, reworded])
    assert float(e[0] @ e[1]) >= cfg.diversity_duplicate_threshold  # one idea, to the embedding too
    remote([PROMPTS[0] + source], [PROMPTS[0]], [""])
    again = remote([PROMPTS[0] + reworded], [PROMPTS[0]], [""])["extra_logs"]["novelty/diversity"][0]
    new = remote([PROMPTS[0] + ANSWERS[0][2]], [PROMPTS[0]], [""])["extra_logs"]["novelty/diversity"][0]
    assert again == pytest.approx(0.0) and new > 0.2

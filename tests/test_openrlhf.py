"""The plugin against the real OpenRLHF 0.11.2 code, on CPU (only vllm / flash_attn get stand-ins)."""

import asyncio
import copy
import inspect
import json
import threading
from types import SimpleNamespace

import pytest
import torch

from tests.openrlhf_env import install_stand_ins

install_stand_ins()

from openrlhf.trainer import ppo_trainer  # noqa: E402
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker  # noqa: E402
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator  # noqa: E402
from openrlhf.utils.agent import SingleTurnAgentExecutor  # noqa: E402

from openrlhf_novelty.config import ConfigError, NoveltyConfig  # noqa: E402
from openrlhf_novelty.hook import NoveltyHook, novelty_experience_maker, novelty_trainer  # noqa: E402
from openrlhf_novelty.reward import NoveltyReward  # noqa: E402
from openrlhf_novelty.reward_file import __file__ as REWARD_FILE  # noqa: E402
from openrlhf_novelty.state import from_bytes  # noqa: E402
from tests.fake_openai import FakeOpenAI, refused_url  # noqa: E402

N = 4
PROMPTS = [f"Tweet pair {i}: propose one hypothesis about retweets.\n" for i in range(4)]
ANSWERS = [  # 4 prompts x 4 samples; group 0 has a duplicate, group 3 a sample without the HYP: line
    ["HYP: Tweets with numbers get more retweets.", "HYP: Tweets with numbers get more retweets.",
     "HYP: Questions invite replies and retweets.", "HYP: Morning tweets spread further."],
    ["HYP: Threads outperform single tweets.", "HYP: Tweets tagging celebrities are shared more.",
     "HYP: Short tweets are retweeted more.", "HYP: Humor drives retweets."],
    ["HYP: Breaking news spreads fastest.", "HYP: Tweets with images get more retweets.",
     "HYP: Deadlines create urgency and retweets.", "HYP: Personal failure stories are shared more."],
    ["HYP: Statistics make tweets credible.", "HYP: Hashtags widen reach.", "I like both tweets.",
     "HYP: Controversial opinions are retweeted more."],
]


class CharTokenizer:
    """One token per character: enough for OpenRLHF's executor and experience code, and exactly reversible."""

    pad_token_id = eos_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
        return {"input_ids": torch.tensor([[ord(c) for c in text]])}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids if i)


class FakeEngine:
    """Stands in for vLLM: answers each prompt with its scripted responses, in order."""

    def __init__(self):
        self.queue = {p: list(a) for p, a in zip(PROMPTS, ANSWERS)}

    async def generate(self, prompt_token_ids, params, multi_modal_data=None):
        text = self.queue["".join(map(chr, prompt_token_ids))].pop(0)
        out = SimpleNamespace(token_ids=[ord(c) for c in text], text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


def run_rollout(executor) -> list[dict]:
    """OpenRLHF's own SingleTurnAgentExecutor generates and rewards 16 samples concurrently."""
    engine, params = FakeEngine(), SimpleNamespace(max_tokens=128, logprobs=None)

    async def go():
        jobs = [executor.execute(p, "A", params, 1024, CharTokenizer(), engine) for p in PROMPTS for _ in range(N)]
        return await asyncio.gather(*jobs)

    return asyncio.run(go())


def write_config(tmp_path, **judge):
    lines = ["extract:", "  pattern: 'HYP:\\s*(.+)'", "rnd:", "  warmup_samples: 0"]
    if judge:
        lines += ["judge:"] + [f"  {k}: {v}" for k, v in judge.items()]
    path = tmp_path / "novelty.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def judge_server():
    with FakeOpenAI() as server:
        yield server


def test_reward_file_runs_inside_openrlhfs_executor_from_many_threads(tmp_path, monkeypatch, judge_server):
    monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG", str(write_config(tmp_path, base_url=judge_server.url,
                                                                   model="judge", retries=0)))
    executor = SingleTurnAgentExecutor(REWARD_FILE)  # loads the file the way OpenRLHF does
    threads, inner = set(), executor.reward_func

    def spy(*args):
        threads.add(threading.get_ident())
        return inner(*args)

    executor.reward_func = spy
    outputs = run_rollout(executor)
    assert len(threads) > 1  # OpenRLHF called us from several threads at once
    keys = {"novelty/quality", "novelty/format", "novelty/soundness", "novelty/judge_failed",
            "novelty/nondegenerate", "novelty/config", "novelty/masked", "novelty/error"}
    for out in outputs:
        assert isinstance(out["reward"], float) and isinstance(out["scores"], float)
        assert set(out["extra_logs"]) == keys  # the same keys on every sample
    by_response = {o["observation_tokens"] and "".join(map(chr, o["observation_tokens"])).split("\n", 1)[1]: o
                   for o in outputs}
    ok = by_response["HYP: Humor drives retweets."]
    assert ok["extra_logs"]["novelty/soundness"] == pytest.approx(0.7)  # the fake judge's default score
    assert ok["reward"] == pytest.approx(0.85) and ok["scores"] == pytest.approx(0.85)  # (format 1 + 0.7) / 2
    off = by_response["I like both tweets."]
    assert off["extra_logs"]["novelty/format"] == 0.0 and off["reward"] == pytest.approx(0.35)


def test_a_judge_outage_still_returns_rewards(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG", str(write_config(tmp_path, base_url=refused_url(), model="judge",
                                                                   retries=0)))
    outputs = run_rollout(SingleTurnAgentExecutor(REWARD_FILE))
    assert all(o["extra_logs"]["novelty/judge_failed"] == 1.0 for o in outputs)
    assert all(o["reward"] in (0.75, 0.25) for o in outputs)  # (format + neutral 0.5) / 2


def make_maker(tmp_path, monkeypatch, embedder, shared=None, **settings):
    """OpenRLHF's RemoteExperienceMaker with our hook; the model forwards (Ray actor groups) are faked.

    ``shared`` settings reach both the reward file (as the wrapper ships them: JSON in the environment) and the
    hook; ``settings`` only the hook."""
    shared = {"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"warmup_samples": 0}, **(shared or {})}
    monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG_JSON", json.dumps(NoveltyConfig.from_dict(shared).to_dict()))
    outputs = run_rollout(SingleTurnAgentExecutor(REWARD_FILE))
    # OpenRLHF's own code turns each executor output into an Experience.
    samples = [SamplesGenerator._process_response_into_experience(None, o, max_len=1024) for o in outputs]
    args = SimpleNamespace(
        train=SimpleNamespace(dynamic_batch_enable=False),
        rollout=SimpleNamespace(micro_batch_size=3, n_samples_per_prompt=N),
        data=SimpleNamespace(max_len=1024),
        reward=SimpleNamespace(clip_range=None, overlong_buffer_len=None, stop_properly_penalty_coef=None),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator="group_norm", gamma=1.0, lambd=1.0,
                                                       no_std_norm=False)),
    )
    cls = novelty_experience_maker(RemoteExperienceMaker)
    maker = cls.__new__(cls)
    maker.strategy, maker.args, maker.tokenizer = SimpleNamespace(args=args), args, CharTokenizer()
    maker.advantage_estimator, maker.kl_ctl = "group_norm", SimpleNamespace(value=0.0)

    def fake_forwards(samples_list):  # what the actor / reference groups would add; KL is zero here
        for s in samples_list:
            s.kl = torch.zeros_like(s.action_mask, dtype=torch.float32)
        return samples_list

    maker.make_experience = fake_forwards
    cfg = NoveltyConfig.from_dict({**shared, **settings})
    maker.novelty = NoveltyHook(cfg, CharTokenizer(), N, model=NoveltyReward(cfg.replace(), embedder=embedder))
    return maker, samples


def group_norm(r: torch.Tensor) -> torch.Tensor:
    g = r.reshape(-1, N)
    return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + 1e-9)).reshape(-1)


def test_hook_on_the_real_experience_maker(tmp_path, monkeypatch, embedder):
    maker, samples = make_maker(tmp_path, monkeypatch, embedder)
    quality = torch.tensor([float(s.rewards[0]) for s in samples])
    experiences = maker.make_experience_batch(samples)
    assert maker.novelty.model.step == 1 and maker.novelty.model.rnd.updates == 1  # exactly one RND update
    adv, reward, bonus = torch.zeros(16), torch.zeros(16), torch.zeros(16)
    for exp in experiences:
        for j, i in enumerate(exp.index):
            adv[i] = exp.advantages[j][exp.action_mask[j].bool()][0]
            reward[i], bonus[i] = exp.rewards[j], exp.info["novelty/bonus"][j]
    # The reward is quality plus the gated bonus, and the advantages are exactly its group normalization.
    torch.testing.assert_close(reward, quality + bonus)
    torch.testing.assert_close(adv, group_norm(quality + bonus))
    # Group 0: two identical answers get the same reward; the distinct ones differ from them.
    assert reward[0] == pytest.approx(float(reward[1]), abs=1e-6) and len({round(float(x), 6) for x in reward[:4]}) == 3
    # Group 3: the sample without a hypothesis has quality 0, so no bonus and the lowest advantage.
    assert bonus[14] == 0.0 and adv[14] == adv[12:16].min()
    assert {"novelty/rnd", "novelty/diversity", "novelty/archive", "novelty/gate"} <= set(experiences[0].info)
    maker.make_experience_batch([s for s in run_samples_again(maker)])
    assert maker.novelty.model.step == 2  # once per call


def run_samples_again(maker):
    outputs = run_rollout(SingleTurnAgentExecutor(REWARD_FILE))
    return [SamplesGenerator._process_response_into_experience(None, o, max_len=1024) for o in outputs]


def test_hook_can_add_the_bonus_after_group_normalization(tmp_path, monkeypatch, embedder):
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, hook={"bonus_to": "advantage"})
    quality = torch.tensor([float(s.rewards[0]) for s in samples])
    experiences = maker.make_experience_batch(samples)
    adv, bonus = torch.zeros(16), torch.zeros(16)
    for exp in experiences:
        for j, i in enumerate(exp.index):
            adv[i], bonus[i] = exp.advantages[j][exp.action_mask[j].bool()][0], exp.info["novelty/bonus"][j]
    torch.testing.assert_close(adv, group_norm(quality) + bonus)  # rewards untouched, bonus on top, unnormalized


def test_a_failing_embedder_costs_one_batch_its_bonus_not_the_training_step(tmp_path, monkeypatch, embedder):
    maker, samples = make_maker(tmp_path, monkeypatch, embedder)
    ok = maker.make_experience_batch(run_samples_again(maker))
    monkeypatch.setattr(maker.novelty.model.embedder, "encode",
                        lambda texts: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))
    maker.novelty.model._emb_cache.clear()  # the same texts were just encoded: they would not reach the encoder
    quality = torch.tensor([float(s.rewards[0]) for s in samples])
    failed = maker.make_experience_batch(samples)  # no exception: OpenRLHF would have killed the step
    assert set(failed[0].info) == set(ok[0].info)  # the same info keys, so OpenRLHF's logging stacks them
    rewards = torch.cat([exp.rewards for exp in failed])
    index = torch.cat([torch.as_tensor(exp.index) for exp in failed])
    torch.testing.assert_close(rewards, quality[index])  # quality alone
    # Counted and flagged per sample, not an error of the hook: every answer of the batch is unembedded.
    assert all(bool((exp.info["novelty/unembedded"] == 1).all()) for exp in failed)
    assert all(bool((exp.info["novelty/error"] == 0).all()) for exp in failed)
    model = maker.novelty.model
    assert model.encode_failures == 2 and maker.novelty.failures == 0  # the answers, and their prompt-free forms
    assert model.rnd.updates == 1  # nothing was learned from the failed batch


def test_evaluation_never_reaches_the_experience_maker():
    # Eval rollouts go generate_eval_samples -> compute_eval_metrics; the hook lives in make_experience_batch.
    source = inspect.getsource(ppo_trainer.PPOTrainer.__ray_actor_class__.evaluate)
    assert "experience_maker" not in source and "generate_eval_samples" in source


def per_sample(experiences, key) -> torch.Tensor:
    """An info value (or ``rewards``) per original sample index, from OpenRLHF's micro-batched experiences."""
    out = torch.zeros(16)
    for exp in experiences:
        values = exp.rewards if key == "rewards" else exp.info[key]
        for j, i in enumerate(exp.index):
            out[i] = values[j]
    return out


def task_file(tmp_path, body: str) -> str:
    path = tmp_path / "task.py"
    path.write_text("def reward_func(queries, prompts, labels):\n    " + body + "\n")
    return str(path)


def test_a_reward_file_failure_stays_visible_and_earns_nothing(tmp_path, monkeypatch, embedder):
    # The user's checker raises on every sample: the reward file reports error 1. The hook must keep that flag
    # (not overwrite it with its own 0) and give those samples neither quality nor novelty credit.
    task = task_file(tmp_path, "raise RuntimeError('checker crashed')")
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, shared={"reward": {"task_func": task}})
    experiences = maker.make_experience_batch(samples)
    assert per_sample(experiences, "novelty/error").tolist() == [1.0] * 16
    assert per_sample(experiences, "novelty/bonus").tolist() == [0.0] * 16
    assert per_sample(experiences, "rewards").tolist() == [0.0] * 16


def test_task_clip_is_applied_once(tmp_path, monkeypatch, embedder):
    # Task reward +1 right / -1 wrong, clipped to [-1, 1]: the reward file maps them to quality 1 / 0. The hook
    # must read that quality, not rescale it again (0 would become 0.5 and pass a 0.5 threshold gate).
    task = task_file(tmp_path, "return [1.0 if 'numbers' in q or 'Humor' in q else -1.0 for q in queries]")
    shared = {"reward": {"task_func": task, "task_clip": [-1, 1], "format_weight": 0.0, "gate": "threshold",
                         "gate_threshold": 0.5}}
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, shared=shared)
    experiences = maker.make_experience_batch(samples)
    right = torch.tensor([i in (0, 1, 7) for i in range(16)])  # samples 0, 1: numbers; 7: humor
    assert per_sample(experiences, "novelty/quality").tolist() == right.float().tolist()
    assert per_sample(experiences, "novelty/gate").tolist() == right.float().tolist()
    assert (per_sample(experiences, "novelty/bonus")[~right] == 0).all()


def test_a_reward_file_on_another_config_is_refused(tmp_path, monkeypatch, embedder):
    # The reward file ran without the task reward the hook's config names (its config never reached the engine).
    task = task_file(tmp_path, "return [1.0] * len(queries)")
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, reward={"task_func": task})
    with pytest.raises(ConfigError, match="another novelty config"):
        maker.make_experience_batch(samples)


def test_a_reward_file_on_other_settings_with_the_same_keys_is_refused(tmp_path, monkeypatch, embedder):
    # Another relevance ramp logs exactly the same keys: only the config fingerprint tells the two apart.
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, quality={"relevance_ramp": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="config fingerprint"):
        maker.make_experience_batch(samples)
    maker, samples = make_maker(tmp_path, monkeypatch, embedder, hook={"threads": 1})  # hook.* does not count
    maker.make_experience_batch(samples)


def test_samples_without_rewards_are_left_to_the_reward_model(tmp_path, monkeypatch, embedder):
    # No --reward.remote_url: rewards arrive as None and OpenRLHF runs its reward model only while they are None.
    maker, samples = make_maker(tmp_path, monkeypatch, embedder)
    for s in samples:
        s.rewards = None
    maker.novelty.apply(samples)
    assert all(s.rewards is None for s in samples)  # not 0 + bonus
    assert all(float(s.info["novelty/error"][0]) == 1.0 for s in samples) and maker.novelty.failures == 1


class FakeActorGroup:
    """Stands in for the actor's DeepSpeed checkpoints: save_checkpoint(tag) keeps client_states and moves
    ``latest`` to that tag (as DeepSpeed's save_latest does for regular and best saves alike);
    get_checkpoint_states returns what ``latest`` holds, as the actor does after load_ckpt."""

    def __init__(self):
        self.saved, self.latest = {}, None

    def async_run_method(self, method_name, **kwargs):
        if method_name == "save_checkpoint":
            self.saved[kwargs["tag"]] = copy.deepcopy(kwargs["client_states"])
            self.latest = kwargs["tag"]
            return []
        assert method_name == "get_checkpoint_states"
        return [copy.deepcopy(self.saved[self.latest])]


def checkpointing_trainer(tmp_path, maker, group):
    """Our trainer subclass with OpenRLHF's own save / best-save / resume methods; Ray handles are plain values."""
    cls = novelty_trainer(ppo_trainer.PPOTrainer.__ray_actor_class__, {"rnd": {"warmup_samples": 0}})
    args = SimpleNamespace(ckpt=SimpleNamespace(path=str(tmp_path / "ckpt"), save_steps=2, load_enable=True),
                           logger=SimpleNamespace(logging_steps=1), rollout=SimpleNamespace(n_samples_per_prompt=N))
    (tmp_path / "ckpt" / "_actor").mkdir(parents=True, exist_ok=True)
    trainer = cls.__new__(cls)
    trainer.args, trainer.experience_maker, trainer.actor_model_group = args, maker, group
    trainer.wandb_logger = trainer.tensorboard_logger = trainer.critic_model_group = None
    trainer.best_eval_metric_key, trainer.best_eval_metric_value = "eval_score", float("-inf")
    trainer._latest_eval_metric_value = None
    return trainer


def test_resume_restores_the_novelty_state_of_the_checkpoint_latest_names(tmp_path, monkeypatch, embedder):
    monkeypatch.setattr(ppo_trainer.ray, "get", lambda refs: refs)
    maker, samples = make_maker(tmp_path, monkeypatch, embedder)
    group = FakeActorGroup()
    trainer = checkpointing_trainer(tmp_path, maker, group)
    for step in (1, 2, 3):
        maker.make_experience_batch(run_samples_again(maker) if step > 1 else samples)
        states = {"global_step": step, "episode": 0, "total_consumed_prompts": 4 * step, "data_loader_state_dict": {}}
        trainer.save_logs_and_checkpoints(step, {}, states)  # saves at 2 (save_steps 2)
    trainer.save_best_checkpoint({"eval_score": 0.9}, 3, dict(states))  # a best save at 3 moves `latest`
    assert sorted(group.saved) == ["best_global_step3", "global_step2"] and group.latest == "best_global_step3"
    assert from_bytes(group.saved["global_step2"]["novelty_state"])["step"] == 2  # one blob (survives Ray's transfer)
    # A resumed run: a fresh hook, and OpenRLHF's own resume path (init_checkpoint_states) restores step 3.
    resumed_maker, _ = make_maker(tmp_path, monkeypatch, embedder)
    resumed = checkpointing_trainer(tmp_path, resumed_maker, group)
    states = resumed.init_checkpoint_states()
    got = resumed_maker.novelty.model
    assert states["global_step"] == 3 and "novelty_state" not in states
    assert got.step == 3 and got.rnd.updates == maker.novelty.model.rnd.updates == 3
    assert torch.equal(got.rnd.predictor[0].weight, maker.novelty.model.rnd.predictor[0].weight)
    assert torch.equal(got.archive.emb[: len(got.archive)], maker.novelty.model.archive.emb[: len(got.archive)])


def test_reward_file_cadence_is_per_engine_share(tmp_path, monkeypatch):
    # OpenRLHF loads one copy of the reward file per vLLM engine and sends each engine its share of the prompts.
    # With 2 engines and a rollout batch of 4 prompts x 4 samples, the documented K = 16 / 2 = 8 updates every
    # copy once per step; K = 16 (the batch) would update each copy only every second step.
    for k, updates_after_two_steps in ((8, [2, 2]), (16, [1, 1])):
        cfg = {"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"warmup_samples": 0}, "stream": {"update_every": k, "group_timeout": 0}}  # called one by one
        monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG_JSON", json.dumps(NoveltyConfig.from_dict(cfg).to_dict()))
        engines = [SingleTurnAgentExecutor(REWARD_FILE) for _ in range(2)]
        for _ in range(2):  # two rollout steps
            for e, prompts in zip(engines, (PROMPTS[:2], PROMPTS[2:])):
                for p in prompts:
                    for a in ANSWERS[PROMPTS.index(p)]:
                        e.reward_func([p + a], [p], [""])
        steps = [e.reward_func.__globals__["_get_remote"]().model.step for e in engines]
        assert steps == updates_after_two_steps

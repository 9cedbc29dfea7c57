"""The start-up check of every Ray node (openrlhf_novelty.nodes): what it asks for, what it says, and a real cluster of
two raylets on this machine whose second node lacks what the first has."""

import json
import os

import pytest

from tests.openrlhf_env import install_stand_ins
from tests.ray_cluster import start_head, start_worker, stop_head

install_stand_ins()

import ray  # noqa: E402
from openrlhf.trainer import ppo_trainer, ppo_trainer_async  # noqa: E402

from openrlhf_novelty import train_ppo_ray  # noqa: E402
from openrlhf_novelty.config import NoveltyConfig  # noqa: E402
from openrlhf_novelty.nodes import problems_here, requirements  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_requirements_are_the_files_the_run_names_and_the_keys_the_driver_has(tmp_path, monkeypatch):
    bank = tmp_path / "bank.txt"
    config = NoveltyConfig.from_dict({"bank": {"path": str(bank)}, "judge": {
        "base_url": "http://judge:8000/v1", "model": "m", "api_key_env": "JUDGE_KEY", "rubric": "/r/rubric.txt"}})
    monkeypatch.setenv("JUDGE_KEY", "secret")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    needs = requirements(config, {"--reward.remote_url": "/site/openrlhf_novelty/reward_file.py"}, {"CONFIG": "{}"})
    assert needs == {"files": {"--reward.remote_url": "/site/openrlhf_novelty/reward_file.py",
                               "bank.path": str(bank), "judge.rubric": "/r/rubric.txt"},
                     "keys": {"JUDGE_KEY": "judge.api_key_env"}, "shipped": {"CONFIG": "{}"}}
    assert "secret" not in repr(needs)  # the key's name travels, never its value
    # A key the driver does not have is not asked of the nodes (keyless servers); built-in rubric names are not paths.
    monkeypatch.delenv("JUDGE_KEY")
    plain = requirements(NoveltyConfig.from_dict({"judge": {"base_url": "http://j/v1", "model": "m"}}), {}, {})
    assert plain == {"files": {}, "keys": {}, "shipped": {}}


class Parsed(Exception):
    pass


@pytest.mark.parametrize("url, files", [
    ("/site/openrlhf_novelty/reward_file.py", {"--reward.remote_url": "/site/openrlhf_novelty/reward_file.py"}),
    ("http://10.0.0.1:5000/reward", {}),  # a server is not a file
    ("/a/r.py,/b/r.py", {"--reward.remote_url[0]": "/a/r.py", "--reward.remote_url[1]": "/b/r.py"}),
])
def test_the_nodes_are_checked_for_the_reward_files_openrlhf_will_load(url, files, tmp_path, monkeypatch):
    """Through OpenRLHF's real parser: its --reward.remote_url is still one comma-separated string when it is
    checked (the first version took its first character, "/", which exists everywhere, and refused every server).
    Ray already initialized: OpenRLHF skips its ray.init, so the check runs at parse time."""
    import openrlhf.utils

    checked = []
    monkeypatch.setattr(train_ppo_ray, "check_nodes", checked.append)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", ray.init)
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
    monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", ppo_trainer_async.PPOTrainerAsync)
    monkeypatch.setattr(openrlhf.utils, "get_strategy", lambda args: (_ for _ in ()).throw(Parsed()))
    monkeypatch.setattr("sys.argv", ["x"])
    config = tmp_path / "novelty.yaml"
    config.write_text("rnd:\n  lr: 0.01\n")
    with pytest.raises(Parsed):  # where train() goes on after Ray: everything before it has run
        train_ppo_ray.main(["--novelty.config", str(config), "--reward.remote_url", url])
    assert len(checked) == 1 and checked[0]["files"] == files


def test_problems_here_name_the_setting_the_path_and_the_variable(tmp_path, monkeypatch):
    present = tmp_path / "present.txt"
    present.write_text("x\n")
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    monkeypatch.setenv("SHIPPED", "{\"a\": 1}")
    needs = {"files": {"bank.path": str(present), "reward.task_func": "/nowhere/task.py"},
             "keys": {"JUDGE_KEY": "judge.api_key_env"}, "shipped": {"SHIPPED": "{\"a\": 2}"}}
    found = problems_here(needs)
    assert len(found) == 3
    assert found[0] == "reward.task_func /nowhere/task.py does not exist"
    assert found[1].startswith("$JUDGE_KEY (judge.api_key_env) is set in the driver's environment (on the head, "
                               "under ray job submit) but not here")
    assert "--runtime-env-json" in found[1]
    assert found[2].startswith("the novelty config did not reach the workers here ($SHIPPED differs)")
    monkeypatch.setenv("JUDGE_KEY", "k")
    # The same config written another way (the job's own copy of it, say) is the same config.
    assert problems_here({**needs, "files": {"bank.path": str(present)}, "shipped": {"SHIPPED": "{\"a\":1}"}}) == []


@pytest.fixture
def two_nodes(monkeypatch):
    """Two raylets joined into one cluster; the head's environment has JUDGE_KEY, the second node's does not (as
    when a key is exported on the machine a job is launched from and forgotten on another)."""
    base = {**os.environ, "PYTHONPATH": ROOT}
    base.pop("JUDGE_KEY", None)
    address, temp = start_head({**base, "JUDGE_KEY": "k"}, "--num-cpus=1", '--resources={"first": 1}')
    try:
        start_worker(base, address, temp, "n2", "--num-cpus=1", '--resources={"second": 1}')
        monkeypatch.setenv("RAY_ADDRESS", address)
        monkeypatch.setattr(ray, "init", ray.init)  # the wrapper patches these; undone after the test
        monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
        monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", ppo_trainer_async.PPOTrainerAsync)
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_head(temp)


def second_node_id() -> str:
    return next(n["NodeID"] for n in ray.nodes() if "second" in n["Resources"])[:12]


def test_a_node_without_the_judge_key_stops_the_launch_and_is_named(two_nodes, monkeypatch, capsys):
    config = NoveltyConfig.from_dict({"judge": {"base_url": "http://judge:8000/v1", "model": "m",
                                                "api_key_env": "JUDGE_KEY"}})
    monkeypatch.setenv("JUDGE_KEY", "k")  # the driver has it
    train_ppo_ray.install(config)
    with pytest.raises(SystemExit) as stop:
        ray.init()  # what OpenRLHF's train() does first: the check runs inside it, before any model loads
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "the run would fail on these Ray nodes" in err
    problems = [line.strip() for line in err.splitlines() if line.startswith("  Ray node ")]
    assert len(problems) == 1, err  # the head has the key; only the second node is named
    assert problems[0].startswith(f"Ray node {second_node_id()} ") and "$JUDGE_KEY (judge.api_key_env)" in problems[0]


def test_every_node_checked_and_said_when_nothing_is_missing(two_nodes, monkeypatch, capsys):
    config = NoveltyConfig.from_dict({"judge": {"base_url": "http://judge:8000/v1", "model": "m",
                                                "api_key_env": "JUDGE_KEY"}})
    monkeypatch.delenv("JUDGE_KEY", raising=False)  # a keyless judge: not asked of any node
    train_ppo_ray.install(config)
    ray.init()
    assert ("checked 2 Ray nodes: each has the files the run names (none), the API keys it uses (none) and the "
            "config") in capsys.readouterr().err


def test_env_vars_the_submitted_job_sets_are_left_to_the_job(monkeypatch, capsys):
    """Under `ray job submit --runtime-env-json`, Ray refuses a ray.init env var the job also sets (OpenRLHF's own
    ray.init always sets TOKENIZERS_PARALLELISM, NCCL_DEBUG, RAY_ENABLE_ZERO_COPY_TORCH_TENSORS)."""
    job = {"runtime_env": {"env_vars": {"NCCL_DEBUG": "INFO", "TOKENIZERS_PARALLELISM": "false"}}}
    monkeypatch.setenv(train_ppo_ray.JOB_CONFIG_ENV, json.dumps(job))
    driver = {"TOKENIZERS_PARALLELISM": "false", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
              "OPENRLHF_NOVELTY_CONFIG_JSON": "{}"}
    assert train_ppo_ray.without_job_env_vars(driver) == {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
                                                          "OPENRLHF_NOVELTY_CONFIG_JSON": "{}"}
    err = capsys.readouterr().err
    assert "the job's runtime env sets NCCL_DEBUG='INFO', ray.init asked for 'WARN': the job's value is kept" in err
    assert "TOKENIZERS_PARALLELISM" not in err  # the same value: nothing to say
    monkeypatch.delenv(train_ppo_ray.JOB_CONFIG_ENV)  # not a job: nothing is dropped
    assert train_ppo_ray.without_job_env_vars(driver) == driver


def test_a_job_shipping_another_novelty_config_is_refused(monkeypatch):
    job = {"runtime_env": {"env_vars": {"OPENRLHF_NOVELTY_CONFIG_JSON": "{\"rnd_lr\": 1, \"rnd_weight\": 0.5}"}}}
    monkeypatch.setenv(train_ppo_ray.JOB_CONFIG_ENV, json.dumps(job))
    with pytest.raises(train_ppo_ray.ConfigError, match="sets OPENRLHF_NOVELTY_CONFIG_JSON to another config"):
        train_ppo_ray.without_job_env_vars({"OPENRLHF_NOVELTY_CONFIG_JSON": "{}"})
    # The same config written another way is the same config: left to the job.
    assert train_ppo_ray.without_job_env_vars({"OPENRLHF_NOVELTY_CONFIG_JSON": "{\"rnd_weight\": 0.5,\"rnd_lr\": 1}"}) == {}

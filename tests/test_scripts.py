"""Every launch script's arguments go through OpenRLHF's real parser (and its start-up checks), via our wrapper."""

import json
import pathlib
import subprocess
import sys

import pytest

from tests.openrlhf_env import install_stand_ins

install_stand_ins()

import openrlhf.utils.config as openrlhf_config  # noqa: E402
import ray  # noqa: E402
from openrlhf.trainer import ppo_trainer, ppo_trainer_async  # noqa: E402

from openrlhf_novelty import cli, train_ppo_ray  # noqa: E402
from openrlhf_novelty.config import NoveltyConfig  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRPO_SCRIPTS = sorted((ROOT / "examples" / "scripts").glob("grpo_*.sh"))
ALL_SCRIPTS = GRPO_SCRIPTS + sorted((ROOT / "scripts").glob("*.sh"))


class Parsed(Exception):
    """Raised where train() would start Ray: everything before it (parsing, validation) has passed."""


CAPTURED: dict = {}


@pytest.fixture(autouse=True)
def restore_what_the_wrapper_patches(monkeypatch):
    """The wrapper patches the driver's PPOTrainer, ray.init and OpenRLHF's hierarchize; undo it after each test."""
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
    monkeypatch.setattr(ppo_trainer_async, "PPOTrainerAsync", ppo_trainer_async.PPOTrainerAsync)
    monkeypatch.setattr(ray, "init", ray.init)
    monkeypatch.setattr(openrlhf_config, "hierarchize", openrlhf_config.hierarchize)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.delenv("OPENRLHF_NOVELTY_CONFIG_JSON", raising=False)  # main() sets it; gone again after the test


def capture_script_argv(script, tmp_path, **extra_env) -> list[str]:
    shim = tmp_path / "python"
    shim.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    shim.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(shim), "REWARD_FILE": "/path/to/reward_file.py", "HOME": str(tmp_path),
           **extra_env}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "argv.json").read_text())


def run_wrapper(argv, monkeypatch) -> object:
    captured = CAPTURED
    captured.clear()
    real = openrlhf_config.hierarchize
    monkeypatch.setattr(openrlhf_config, "hierarchize", lambda a: captured.setdefault("args", real(a)))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def init(*args, **kwargs):  # where train() starts Ray: everything before it has passed
        captured["runtime_env"] = kwargs.get("runtime_env")
        raise Parsed()

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)  # restored after the test
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(Parsed):
        train_ppo_ray.main(argv)
    return captured["args"]


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.parametrize("script", GRPO_SCRIPTS, ids=lambda p: p.name)
def test_recipe_arguments_pass_openrlhfs_parser(script, tmp_path, monkeypatch):
    argv = capture_script_argv(script, tmp_path)
    assert argv[:3] == ["-m", "openrlhf_novelty.train_ppo_ray", "--novelty.config"]
    config = NoveltyConfig.from_file(argv[3])  # valid, and every file it names exists (checked at load)
    assert config.stream_update_every == 0  # the hook adds novelty; the reward file must not
    args = run_wrapper(argv[2:], monkeypatch)
    assert args.reward.remote_url == ["/path/to/reward_file.py"]
    assert args.algo.advantage.estimator == "group_norm" and args.rollout.n_samples_per_prompt == 8
    assert pathlib.Path(args.data.prompt_dataset).is_file()
    # The wrapper put the hooked trainer in OpenRLHF's place, as a Ray actor class.
    hooked = ppo_trainer.PPOTrainer.__ray_actor_class__
    assert hooked.__name__ == "NoveltyPPOTrainer" and hasattr(hooked, "install_novelty")
    # The config itself rides in the job's runtime env, next to OpenRLHF's own variables, to every Ray worker.
    env_vars = CAPTURED["runtime_env"]["env_vars"]
    assert json.loads(env_vars["OPENRLHF_NOVELTY_CONFIG_JSON"]) == config.to_dict()
    assert env_vars["TOKENIZERS_PARALLELISM"] and env_vars["NCCL_DEBUG"]


def test_a_streaming_config_runs_openrlhf_without_the_hook(tmp_path, monkeypatch, capsys):
    """grpo_smollm2.sh MODE=file: our launcher with stream.update_every > 0 leaves OpenRLHF's PPOTrainer alone (the
    reward file adds novelty; a hook too would add it twice), still ships the config, and says so."""
    config = tmp_path / "stream.yaml"
    config.write_text("stream:\n  update_every: 256\n  group_size: 8\n")
    argv = capture_script_argv(ROOT / "examples" / "scripts" / "grpo_smollm2.sh", tmp_path, MODE="file",
                               NOVELTY_CONFIG=str(config))
    plain = ppo_trainer.PPOTrainer
    args = run_wrapper(argv[2:], monkeypatch)
    trainer = ppo_trainer.PPOTrainer.__ray_actor_class__
    assert trainer.__name__ == "QualityEvalPPOTrainer" and trainer.__mro__[1] is plain.__ray_actor_class__
    assert "NoveltyPPOTrainer" not in [c.__name__ for c in trainer.__mro__]  # no hook: novelty would count twice
    assert args.reward.remote_url == ["/path/to/reward_file.py"]
    assert json.loads(CAPTURED["runtime_env"]["env_vars"]["OPENRLHF_NOVELTY_CONFIG_JSON"])["stream_update_every"] == 256
    assert "OpenRLHF runs without the experience-maker hook" in capsys.readouterr().err


@pytest.mark.parametrize("url, warned", [("http://127.0.0.1:5000/reward", False), ("/site/reward_file.py", True)])
def test_the_update_every_check_divides_by_engines_only_for_the_reward_file(url, warned, tmp_path, monkeypatch,
                                                                             capsys):
    """A server sees every sample of a step (16 here), each of 2 engines' reward files half of them. The URL is one
    string when this is checked: the first version read its first character and divided for servers too."""
    config = tmp_path / "stream.yaml"
    config.write_text("stream:\n  update_every: 16\n  group_size: 8\n")
    run_wrapper(["--novelty.config", str(config), "--reward.remote_url", url, "--rollout.n_samples_per_prompt", "8",
                 "--rollout.batch_size", "2", "--vllm.num_engines", "2"], monkeypatch)
    assert ("stream.update_every is 16, one training step brings 8 samples" in capsys.readouterr().err) == warned


def test_a_streaming_config_must_match_the_group_size(tmp_path, capsys):
    config = tmp_path / "stream.yaml"
    config.write_text("stream:\n  update_every: 16\n  group_size: 4\n")
    argv = ["--novelty.config", str(config), "--reward.remote_url", "r.py", "--rollout.n_samples_per_prompt", "8"]
    assert train_ppo_ray.main(argv) == 2
    assert "stream.group_size is 4 but --rollout.n_samples_per_prompt is 8" in capsys.readouterr().err


def test_async_training_gets_the_hook_in_openrlhfs_training_actor(tmp_path, monkeypatch, capsys):
    """ASYNC=1: --train.async_enable passes OpenRLHF's parser and start-up checks through our wrapper, and the class
    train() will start for it is ours; inside that actor, OpenRLHF's TrainingActor is the hooked one when
    OpenRLHF's own __init__ starts it."""
    argv = capture_script_argv(ROOT / "examples" / "scripts" / "grpo_smollm2.sh", tmp_path, ASYNC="1")
    assert "--train.async_enable" in argv and "--vllm.enable_sleep" not in argv
    args = run_wrapper(argv[2:], monkeypatch)
    assert args.train.async_enable
    assert "with --train.async_enable in OpenRLHF's training actor" in capsys.readouterr().err
    outer = ppo_trainer_async.PPOTrainerAsync.__ray_actor_class__
    assert outer.__name__ == "NoveltyPPOTrainerAsync"

    # What the PPOTrainerAsync actor does, in a fresh process, with the class exactly as Ray ships it: pickled by
    # value, so OpenRLHF's __init__ looks TrainingActor up in a copy of the module's globals (the first version set
    # only the module attribute, and the real async launch trained without the hook).
    import ray.cloudpickle

    shipped = tmp_path / "actor.pkl"
    shipped.write_bytes(ray.cloudpickle.dumps(ppo_trainer_async.PPOTrainerAsync.__ray_metadata__.modified_class))
    worker = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.openrlhf_env import install_stand_ins
install_stand_ins()
import ray.cloudpickle
cls = ray.cloudpickle.loads(open({str(shipped)!r}, "rb").read())
base = next(c for c in cls.__mro__ if c.__name__ == "PPOTrainerAsync")
original = base.__init__.__globals__["TrainingActor"]
hooked = cls.hook_training_actor()
assert cls.hook_training_actor() is hooked  # a second start does not wrap twice
started = base.__init__.__globals__["TrainingActor"]  # what OpenRLHF's __init__ will start
assert started is hooked and started.__ray_actor_class__.__name__ == "NoveltyPPOTrainer", started
assert issubclass(started.__ray_actor_class__, original.__ray_actor_class__)
print("hooked")
"""
    proc = subprocess.run([sys.executable, "-c", worker], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "hooked" in proc.stdout, proc.stderr[-2000:]


def test_group_completion_warns_when_evaluation_groups_differ(tmp_path, monkeypatch, capsys):
    config = tmp_path / "stream.yaml"
    config.write_text("stream:\n  update_every: 256\n  group_size: 8\n")
    argv = capture_script_argv(ROOT / "examples" / "scripts" / "grpo_smollm2.sh", tmp_path, MODE="file",
                               NOVELTY_CONFIG=str(config))
    run_wrapper(argv[2:] + ["--eval.dataset", argv[argv.index("--data.prompt_dataset") + 1], "--eval.steps", "5"],
                monkeypatch)
    err = capsys.readouterr().err
    assert "4 per prompt (--eval.n_samples_per_prompt), while a group is stream.group_size = 8" in err
    assert "Each prompt's group is scored whole once all stream.group_size samples are in" in err


def test_server_mode_uses_openrlhfs_own_launcher(tmp_path):
    argv = capture_script_argv(ROOT / "examples" / "scripts" / "grpo_smollm2.sh", tmp_path, MODE="server",
                               REWARD_URL="http://10.0.0.1:5000/reward")
    assert argv[:2] == ["-m", "openrlhf.cli.train_ppo_ray"] and "--novelty.config" not in argv
    assert argv[argv.index("--reward.remote_url") + 1] == "http://10.0.0.1:5000/reward"


def test_hookless_config_matches_the_rollout_size():
    cfg = NoveltyConfig.from_file(ROOT / "examples" / "configs" / "hypothesis_hookless.yaml")
    assert cfg.stream_update_every == 64 * 8 and pathlib.Path(cfg.bank_path).is_file()


def test_wrapper_help_shows_ours_then_openrlhfs(monkeypatch, capsys):
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", ppo_trainer.PPOTrainer)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert train_ppo_ray.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--novelty.config" in out and "--rollout.n_samples_per_prompt" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--reward.model_name_or_path", "some/rm"], "the novelty hook needs --reward.remote_url"),
        # argparse takes unique prefixes: the check holds on the parsed value, not on one spelling.
        (["--train.async_en", "--reward.model_name_or_path", "some/rm"], "the novelty hook needs --reward.remote_url"),
        (["--novelty.lr", "1"], "unknown flag --novelty.lr"),
        (["--novelty.config"], "--novelty.config needs a file"),
    ],
)
def test_wrapper_refuses_what_it_cannot_do(argv, message, capsys):
    assert train_ppo_ray.main(argv) == 2
    assert message in capsys.readouterr().err


def test_path_prints_the_reward_file(capsys):
    assert cli.main(["path"]) == 0
    path = pathlib.Path(capsys.readouterr().out.strip())
    assert path.name == "reward_file.py" and "def reward_func(queries, prompts, labels" in path.read_text()


def test_convert_hypobench(tmp_path, capsys):
    src = tmp_path / "retweet_train.json"
    src.write_text(json.dumps({"first_tweet": ["a 1", "b 2"], "second_tweet": ["c", "d"], "label": ["first", "second"]}))
    out = tmp_path / "prompts.jsonl"
    assert cli.main(["convert-hypobench", str(src), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["first", "second"]
    assert "Tweet A: a 1\nTweet B: c\n" in rows[0]["prompt"] and rows[0]["prompt"].endswith("starting with 'HYP:'.")
    src.write_text(json.dumps({"first_tweet": ["a"], "label": ["first"]}))
    assert cli.main(["convert-hypobench", str(src), "--output", str(out)]) == 2
    assert "columnar file lacks the list(s) second_tweet" in capsys.readouterr().err


def test_the_async_guard_fails_without_proof_of_the_hook():
    """A handle that cannot answer novelty_hooked (a private Ray attribute once made the check pass by default)."""
    from types import SimpleNamespace

    from openrlhf_novelty.hook import check_hooked

    with pytest.raises(RuntimeError, match="not the hooked training actor"):
        check_hooked(SimpleNamespace(_ray_actor_creation_function_descriptor=None))
    check_hooked(SimpleNamespace(novelty_hooked=lambda: True))


def test_without_the_hook_evaluation_is_scored_on_quality_alone():
    """OpenRLHF's eval_*_pass1 and best checkpoint average rewards; without the hook those carry the novelty bonus,
    which drifts as RND learns. The hookless launcher's trainer hands evaluation the quality the reward file
    logged instead; a sample without it (another reward function) keeps its reward."""
    from types import SimpleNamespace

    import torch

    from openrlhf_novelty.hook import quality_eval_trainer

    class Base:  # stands for OpenRLHF's PPOTrainer: what evaluate() reads is samples_generator's output
        def __init__(self):
            self.samples_generator = SimpleNamespace(generate_eval_samples=lambda **kw: [
                SimpleNamespace(rewards=torch.tensor([1.3]), info={"novelty/quality": torch.tensor([0.8])}),
                SimpleNamespace(rewards=torch.tensor([0.4]), info={})])

    trainer = quality_eval_trainer(Base, {"reward": {"quality_weight": 1.0}})()
    got = trainer.samples_generator.generate_eval_samples(n_samples_per_prompt=2)
    assert [round(float(s.rewards[0]), 6) for s in got] == [0.8, 0.4]


def test_bench_hook_runs_in_process_and_reports_time_and_memory(tmp_path):
    """benchmarks/bench_hook.py as gpu_check.sh runs it (--in-process), on a tiny batch: one row with both timings,
    the memory it used and the override it was given (a benchmark nobody runs breaks silently)."""
    out = tmp_path / "hook.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_hook.py"), "--in-process", "--sizes", "16",
                           "--lengths", "64", "--threads", "0", "--json", str(out),
                           "--set", "quality.relevance_weight=0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = json.loads(out.read_text())["rows"]
    assert row["size"] == 16 and row["tokens"] == 64 and row["overrides"] == ["quality.relevance_weight=0"]
    assert row["bare_s"] > 0 and row["hook_s"] > 0 and row["rss_peak_mib"] >= row["rss_start_mib"] > 100
    assert "| 64 | 16 |" in proc.stdout

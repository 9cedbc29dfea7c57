"""``python -m openrlhf_novelty.train_ppo_ray <train_ppo_ray arguments> [--novelty.config FILE]``

Runs OpenRLHF's own ``openrlhf.cli.train_ppo_ray`` with the novelty hook in its PPOTrainer. With a streaming config
(``stream.update_every > 0``: the reward file adds novelty per sample) it runs OpenRLHF without the hook, and only
ships the config; it says which at start-up. OpenRLHF's parser
rejects unknown flags, so ours are taken out of argv first. No registry selects the experience maker; this works
because ``train()`` imports ``PPOTrainer`` from ``openrlhf.trainer.ppo_trainer`` when it runs, so replacing that
attribute with a ``@ray.remote`` subclass is enough (the config travels inside the class to the Ray actor).

Three more seams, each in the driver only:
- the config reaches the reward file in every vLLM engine as JSON in ``OPENRLHF_NOVELTY_CONFIG_JSON``, added to the
  job's runtime environment when OpenRLHF calls ``ray.init`` (so it reaches workers of a cluster started with
  ``ray start`` too, on any node; Ray merges it with a ``ray job submit --runtime-env-json``);
- OpenRLHF's parsed arguments are checked (``hierarchize`` is imported when its ``__main__`` runs), so an
  abbreviated flag cannot slip past: a missing ``--reward.remote_url`` is refused.
Async training (``--train.async_enable``) gets the hook too: ``PPOTrainerAsync`` is replaced the same way, and puts
the hook into the ``TrainingActor`` it starts (see ``hook.novelty_async_trainer``).
"""

from __future__ import annotations

import json
import os
import runpy
import sys

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.nodes import NODE_CHECK_ENV, check_cluster, requirements, reward_urls, same_json
from openrlhf_novelty.reward_file import CONFIG_ENV, CONFIG_JSON_ENV

USAGE = """usage: python -m openrlhf_novelty.train_ppo_ray [--novelty.config FILE] <openrlhf.cli.train_ppo_ray arguments>

Runs OpenRLHF's GRPO / PPO trainer with the novelty experience-maker hook. Use it together with
--reward.remote_url "$(openrlhf-novelty path)" so the reward file computes quality per sample.
With a config whose stream.update_every > 0 the reward file (or server) adds novelty per sample, and OpenRLHF
runs without the hook.
--novelty.config (default: $OPENRLHF_NOVELTY_CONFIG) is read here and shipped, as JSON in the Ray job's runtime
environment, to the hook and to the reward file in every vLLM engine, whether this script starts Ray or connects to
a cluster started with `ray start` (files the config names, e.g. reward.task_func, must exist on every node).
Everything else goes to OpenRLHF unchanged; its own help follows."""


def split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --novelty.config path, the rest for OpenRLHF)."""
    config, rest = None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name == "--novelty.config":
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError("--novelty.config needs a file")
                value, i = argv[i + 1], i + 1
            config = value
        elif arg.startswith("--novelty."):
            raise ConfigError(f"unknown flag {arg}: the only novelty flag is --novelty.config FILE")
        else:
            rest.append(arg)
        i += 1
    return config, rest


def check_openrlhf_args(args, config: NoveltyConfig) -> None:
    """Refuse what the chosen mode cannot serve, on OpenRLHF's parsed (hierarchized) arguments."""
    hooked = config.stream_update_every == 0
    if not (args.reward.remote_url or args.train.agent_func_path):
        raise ConfigError(f"the novelty {'hook' if hooked else 'reward'} needs --reward.remote_url (e.g. "
                          "\"$(openrlhf-novelty path)\"): with a reward model instead, "
                          + ("OpenRLHF's samples reach the hook without rewards and would train on the bonus alone."
                             if hooked else "the novelty reward file or server is never called."))
    if not hooked:
        n = args.rollout.n_samples_per_prompt
        if config.stream_group_size != n:
            raise ConfigError(f"config stream.group_size is {config.stream_group_size} but "
                              f"--rollout.n_samples_per_prompt is {n}: diversity would compare the wrong siblings")
        urls = reward_urls(args.reward.remote_url)
        per_step = args.rollout.batch_size * n
        if urls and not urls[0].startswith("http"):  # the reward file: each engine sees its share
            per_step //= max(args.vllm.num_engines, 1)
        if config.stream_update_every != per_step:
            print(f"openrlhf_novelty.train_ppo_ray: warning: stream.update_every is {config.stream_update_every}, "
                  f"one training step brings {per_step} samples to each reward process: RND then updates "
                  "out of step with training", file=sys.stderr)
        eval_n = args.eval.n_samples_per_prompt
        if config.stream_group_timeout > 0 and args.eval.dataset and eval_n != n:
            print(f"openrlhf_novelty.train_ppo_ray: warning: evaluation samples go through the reward too, "
                  f"{eval_n} per prompt (--eval.n_samples_per_prompt), while a group is stream.group_size = {n}: "
                  f"every evaluation group waits stream.group_timeout ({config.stream_group_timeout:g} s) for "
                  f"samples that never come. Set --eval.n_samples_per_prompt {n}", file=sys.stderr)
        if args.eval.dataset and args.train.async_enable:
            print("openrlhf_novelty.train_ppo_ray: warning: without the hook, rewards include the novelty bonus, and "
                  "async training evaluates outside the trainer this launcher adjusts: eval_*_pass1 and the best "
                  "checkpoint average quality + bonus there. Compare runs on train/novelty/quality, or use the hook",
                  file=sys.stderr)
        if args.ckpt.load_enable:
            print("openrlhf_novelty.train_ppo_ray: warning: without the hook the novelty state (RND, archive) is not "
                  "in OpenRLHF's checkpoints: a resumed run starts it fresh in the reward file (the server keeps "
                  "its own, with --state)", file=sys.stderr)


def install(config: NoveltyConfig) -> None:
    """In this (driver) process: the hooked PPOTrainer (unless the config streams), the config in Ray's runtime env,
    the argument check."""
    import ray
    from openrlhf.trainer import ppo_trainer
    from openrlhf.utils import config as openrlhf_config

    from openrlhf_novelty.hook import novelty_async_trainer, novelty_trainer, quality_eval_trainer

    hooked = config.stream_update_every == 0
    if not hooked:  # rewards carry the bonus: evaluation gets quality alone (the async trainer evaluates elsewhere)
        base = ppo_trainer.PPOTrainer.__ray_actor_class__
        ppo_trainer.PPOTrainer = ray.remote(quality_eval_trainer(base, config.to_dict()))
    if hooked:
        base = ppo_trainer.PPOTrainer.__ray_actor_class__  # a @ray.remote class cannot be subclassed directly
        ppo_trainer.PPOTrainer = ray.remote(novelty_trainer(base, config.to_dict()))
        from openrlhf.trainer import ppo_trainer_async  # train() imports PPOTrainerAsync from here at call time

        base = ppo_trainer_async.PPOTrainerAsync.__ray_actor_class__
        ppo_trainer_async.PPOTrainerAsync = ray.remote(novelty_async_trainer(base, config.to_dict()))

    # The originals, also when install() ran before in this process: one check per parse, one config per init.
    hierarchize = getattr(openrlhf_config.hierarchize, "unwrapped", openrlhf_config.hierarchize)
    parsed = {}

    def check():
        check_nodes(requirements(config, parsed.get("files", {}), env))

    def checked_hierarchize(args):
        args = hierarchize(args)
        try:
            check_openrlhf_args(args, config)
        except ConfigError as e:
            stop(e)
        parsed["files"] = launch_files(args)
        if ray.is_initialized():  # OpenRLHF's train() will not call ray.init, where the check runs: run it now
            check()
        return args

    checked_hierarchize.unwrapped = hierarchize
    openrlhf_config.hierarchize = checked_hierarchize

    env = {CONFIG_JSON_ENV: json.dumps(config.to_dict())}
    if ray.is_initialized():  # someone started Ray in this process before us: its runtime env is fixed now
        print("openrlhf_novelty.train_ppo_ray: warning: Ray is already initialized; the novelty config reaches "
              f"remote workers only if {CONFIG_JSON_ENV} is in their environment", file=sys.stderr)
    ray_init = getattr(ray.init, "unwrapped", ray.init)

    def init_with_config(*args, **kwargs):
        runtime_env = dict(kwargs.get("runtime_env") or {})
        try:
            runtime_env["env_vars"] = without_job_env_vars({**(runtime_env.get("env_vars") or {}), **env})
        except ConfigError as e:
            stop(e)
        kwargs["runtime_env"] = runtime_env
        context = ray_init(*args, **kwargs)
        check()
        return context

    init_with_config.unwrapped = ray_init
    ray.init = init_with_config


def stop(error) -> None:
    """End the launch inside OpenRLHF's own code (its parser, its ray.init) with a one-line error, no traceback."""
    print(f"openrlhf_novelty.train_ppo_ray: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def launch_files(args) -> dict[str, str]:
    """The files OpenRLHF loads inside every vLLM engine: reward files (a --reward.remote_url ending in .py, its own
    rule) and --train.agent_func_path."""
    urls = [u for u in reward_urls(args.reward.remote_url) if u.endswith(".py")]
    files = {("--reward.remote_url" if len(urls) == 1 else f"--reward.remote_url[{i}]"): u for i, u in enumerate(urls)}
    if args.train.agent_func_path:
        files["--train.agent_func_path"] = args.train.agent_func_path
    return files


JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in the entrypoint of a `ray job submit`


def without_job_env_vars(env_vars: dict[str, str]) -> dict[str, str]:
    """The driver's env vars less those the job's own runtime env sets. Under `ray job submit`, Ray refuses a
    ``ray.init`` whose env vars share a key with the job's ("Failed to merge the Job's runtime env"), even with
    equal values; OpenRLHF's own ``ray.init`` always sets TOKENIZERS_PARALLELISM, NCCL_DEBUG and
    RAY_ENABLE_ZERO_COPY_TORCH_TENSORS, so a job that sets one of them (as OpenRLHF's own comment suggests for
    NCCL_DEBUG) could not start. The job's value reaches every worker anyway, so it wins; a different value is said.
    The novelty config is the exception: a job that ships another one is refused, naming both sources."""
    try:
        job_env = ((json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}).get("env_vars")
                   or {})
    except (ValueError, AttributeError):
        job_env = {}
    if CONFIG_JSON_ENV in job_env and not same_json(job_env[CONFIG_JSON_ENV], env_vars.get(CONFIG_JSON_ENV)):
        raise ConfigError(f"the job's runtime env sets {CONFIG_JSON_ENV} to another config than --novelty.config: "
                          "remove it from --runtime-env-json (this launcher ships the config itself)")
    for key in sorted(set(env_vars) & set(job_env)):
        if job_env[key] != env_vars[key]:
            print(f"openrlhf_novelty.train_ppo_ray: warning: the job's runtime env sets {key}={job_env[key]!r}, "
                  f"ray.init asked for {env_vars[key]!r}: the job's value is kept", file=sys.stderr)
    return {k: v for k, v in env_vars.items() if k not in job_env}


def check_nodes(needs: dict) -> None:
    """Before any model loads: every node has what the run needs there (see ``nodes``), or the launch stops here."""
    if os.environ.get(NODE_CHECK_ENV) == "0":
        print(f"openrlhf_novelty.train_ppo_ray: warning: {NODE_CHECK_ENV}=0: the Ray nodes are not checked for the "
              "files and keys the run needs", file=sys.stderr)
        return
    errors, warnings, count = check_cluster(needs)
    for w in warnings:
        print(f"openrlhf_novelty.train_ppo_ray: warning: {w}", file=sys.stderr)
    if errors:
        stop("the run would fail on these Ray nodes:\n  " + "\n  ".join(errors))
    files, keys = ", ".join(needs["files"]) or "none", ", ".join(needs["keys"]) or "none"
    print(f"openrlhf_novelty.train_ppo_ray: checked {count} Ray node{'s' * (count != 1)}: each has the files the "
          f"run names ({files}), the API keys it uses ({keys}) and the config", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config_path, rest = split_argv(argv)
        config_path = config_path or os.environ.get(CONFIG_ENV) or None
        config = NoveltyConfig.from_file(config_path) if config_path else NoveltyConfig()
    except ConfigError as e:
        print(f"openrlhf_novelty.train_ppo_ray: error: {e}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(USAGE + "\n")
    elif config.stream_update_every > 0:
        print(f"openrlhf_novelty.train_ppo_ray: stream.update_every = {config.stream_update_every}: novelty comes "
              "from the reward file / server per sample, so OpenRLHF runs without the experience-maker hook (the "
              "config is still shipped to every Ray worker). "
              + (f"Each prompt's group is scored whole once all stream.group_size samples are in (waiting up to "
                 f"stream.group_timeout = {config.stream_group_timeout:g} s), as the hook scores it. "
                 if config.stream_group_timeout > 0 else
                 "stream.group_timeout 0: each sample is scored on arrival against the siblings seen so far. ")
              + "Set stream.update_every 0 for the hook.", file=sys.stderr)
    else:
        print("openrlhf_novelty.train_ppo_ray: novelty by the experience-maker hook (whole groups, RND updated once "
              "per step, state in OpenRLHF's checkpoints; with --train.async_enable in OpenRLHF's training actor, "
              "scoring each batch as it is trained on)", file=sys.stderr)
    # This process and workers that inherit its environment (Ray started here) read the same config.
    os.environ[CONFIG_JSON_ENV] = json.dumps(config.to_dict())
    install(config)
    sys.argv = ["openrlhf.cli.train_ppo_ray", *rest]
    try:
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

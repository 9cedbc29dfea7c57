"""``python -m openrlhf_novelty.train_ppo_ray <train_ppo_ray arguments> [--novelty.config FILE]``

Runs OpenRLHF's own ``openrlhf.cli.train_ppo_ray`` with the novelty hook in its PPOTrainer. OpenRLHF's parser
rejects unknown flags, so ours are taken out of argv first. No registry selects the experience maker; this works
because ``train()`` imports ``PPOTrainer`` from ``openrlhf.trainer.ppo_trainer`` when it runs, so replacing that
attribute with a ``@ray.remote`` subclass is enough (the config travels inside the class to the Ray actor).
"""

from __future__ import annotations

import os
import runpy
import sys

from openrlhf_novelty.config import ConfigError, NoveltyConfig
from openrlhf_novelty.reward_file import CONFIG_ENV

USAGE = """usage: python -m openrlhf_novelty.train_ppo_ray [--novelty.config FILE] <openrlhf.cli.train_ppo_ray arguments>

Runs OpenRLHF's GRPO / PPO trainer with the novelty experience-maker hook. Use it together with
--reward.remote_url "$(openrlhf-novelty path)" so the reward file computes quality per sample.
--novelty.config (default: $OPENRLHF_NOVELTY_CONFIG) also sets OPENRLHF_NOVELTY_CONFIG for the reward file, so
both read one file (Ray workers on this node inherit it; under `ray job submit`, pass it in --runtime-env-json).
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


def install_hook(config: NoveltyConfig) -> None:
    """Replace OpenRLHF's PPOTrainer with the hooked one, in this (driver) process."""
    import ray
    from openrlhf.trainer import ppo_trainer

    from openrlhf_novelty.hook import novelty_trainer

    base = ppo_trainer.PPOTrainer.__ray_actor_class__  # a @ray.remote class cannot be subclassed directly
    ppo_trainer.PPOTrainer = ray.remote(novelty_trainer(base, config.to_dict()))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config_path, rest = split_argv(argv)
        config_path = config_path or os.environ.get(CONFIG_ENV) or None
        if "--train.async_enable" in rest:
            raise ConfigError("--train.async_enable is not supported by the novelty hook: async training builds its "
                              "experience maker in another actor. Use the reward file or the server with "
                              "stream.update_every > 0 instead (see the README).")
        config = NoveltyConfig.from_file(config_path) if config_path else NoveltyConfig()
        if config.stream_update_every > 0:
            raise ConfigError("config stream.update_every: must be 0 with the hook (novelty would be added twice)")
    except ConfigError as e:
        print(f"openrlhf_novelty.train_ppo_ray: error: {e}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(USAGE + "\n")
    if config_path:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    install_hook(config)
    sys.argv = ["openrlhf.cli.train_ppo_ray", *rest]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

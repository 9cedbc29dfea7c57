"""The file to pass to OpenRLHF: ``--reward.remote_url $(openrlhf-novelty path)``.

OpenRLHF executes this file in every vLLM engine (spec_from_file_location, not a package import, so only absolute
imports) and calls ``reward_func([query], [prompt], [label])`` once per generated sample from a thread pool.
The settings come from ``OPENRLHF_NOVELTY_CONFIG_JSON`` (the config itself, which ``openrlhf_novelty.train_ppo_ray``
puts in the Ray job's runtime environment so every worker on every node has it), else from the YAML / JSON file
named by ``OPENRLHF_NOVELTY_CONFIG``, else the defaults, and it logs which. Nothing is loaded at import time; the
model is built on the first call. ``reward_func`` never raises.
"""

import json
import logging
import os
import threading

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.remote import RemoteReward, log_keys

CONFIG_ENV = "OPENRLHF_NOVELTY_CONFIG"
CONFIG_JSON_ENV = "OPENRLHF_NOVELTY_CONFIG_JSON"
_remote = None
_fallback_keys: list[str] | None = None  # what a reward file that cannot start logs, found once
_lock = threading.Lock()
_logger = logging.getLogger("openrlhf_novelty.reward_file")


def show_info_logs() -> None:
    """Let this package's INFO lines through in a Ray worker (the reward file in a vLLM engine, the hook in the
    trainer actor): Python's last-resort handler prints only warnings there, and which config the reward file runs
    or that the novelty state was restored are confirmations a user must be able to see in the job's log."""
    package = logging.getLogger("openrlhf_novelty")
    package.setLevel(logging.INFO)
    if not package.handlers and not logging.getLogger().handlers:  # a host's own root handler prints them already
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(name)s] %(message)s", "%m-%d %H:%M:%S"))
        package.addHandler(handler)


def config_from_env() -> NoveltyConfig:
    """The config this process was given (JSON, then a file, then the defaults), saying which."""
    text, path = os.environ.get(CONFIG_JSON_ENV), os.environ.get(CONFIG_ENV)
    if text:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{CONFIG_JSON_ENV} is not valid JSON ({e})") from None
        config, source = NoveltyConfig.from_dict(data), f"${CONFIG_JSON_ENV}"
    elif path:
        config, source = NoveltyConfig.from_file(path), path
    else:
        _logger.warning("novelty reward file: neither %s nor %s is set in this process (pid %d): running the "
                        "default config", CONFIG_JSON_ENV, CONFIG_ENV, os.getpid())
        return NoveltyConfig()
    _logger.info("novelty reward file: config from %s (pid %d)", source, os.getpid())
    return config


def _get_remote():
    global _remote
    if _remote is None:
        with _lock:
            if _remote is None:
                show_info_logs()
                config = config_from_env()
                remote = RemoteReward(config)
                if remote.model.judge is not None:
                    try:
                        remote.model.judge.health_check()
                    except Exception as e:  # say it loudly, once; the judge's fallback keeps rewards flowing
                        _logger.error("novelty judge health check failed: %s", e)
                _remote = remote
    return _remote


def _failure_keys() -> list[str]:
    """The keys the engines that did start log, so OpenRLHF can still stack this step's samples."""
    global _fallback_keys
    if _fallback_keys is None:
        try:
            _fallback_keys = log_keys(config_from_env())
        except Exception:  # the config itself is broken: every engine fails alike, so these keys match
            _fallback_keys = ["novelty/masked", "novelty/error"]
    return _fallback_keys


def reward_func(queries, prompts, labels, **kwargs):
    """One dict of floats per call (OpenRLHF passes one sample): rewards, scores (= quality), extra_logs."""
    n = len(queries)
    try:
        result = _get_remote()(queries, prompts, labels)
    except Exception as e:  # a bad config, a judge that cannot load: report the error instead of crashing the step
        _logger.error("novelty reward_func cannot start: %s", e)
        logs = {k: [1.0 if k in ("novelty/masked", "novelty/error") else 0.0] * n for k in _failure_keys()}
        result = {"rewards": [0.0] * n, "scores": [0.0] * n, "extra_logs": logs}
    if n == 1:  # OpenRLHF turns each value into torch.tensor([value]): plain floats give shape [1]
        return {"rewards": result["rewards"][0], "scores": result["scores"][0],
                "extra_logs": {k: v[0] for k, v in result["extra_logs"].items()}}
    return result

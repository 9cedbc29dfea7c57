"""The file to pass to OpenRLHF: ``--reward.remote_url $(openrlhf-novelty path)``.

OpenRLHF executes this file in every vLLM engine (spec_from_file_location, not a package import, so only absolute
imports) and calls ``reward_func([query], [prompt], [label])`` once per generated sample from a thread pool.
The settings come from ``OPENRLHF_NOVELTY_CONFIG_JSON`` (the config itself, which ``openrlhf_novelty.train_ppo_ray``
puts in the Ray job's runtime environment so every worker on every node has it), else from the YAML / JSON file
named by ``OPENRLHF_NOVELTY_CONFIG``, else the defaults, and it logs which. Nothing is loaded at import time (with
group completion, importing only widens the engine's reward thread pool: ``widen_reward_threads``); the model is
built on the first call. ``reward_func`` never raises.
"""

import asyncio
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.nodes import here
from openrlhf_novelty.remote import RemoteReward, log_keys

CONFIG_ENV = "OPENRLHF_NOVELTY_CONFIG"
CONFIG_JSON_ENV = "OPENRLHF_NOVELTY_CONFIG_JSON"
_remote = None
_fallback_keys: list[str] | None = None  # what a reward file that cannot start logs, found once
_lock = threading.Lock()
_logger = logging.getLogger("openrlhf_novelty.reward_file")
# Group completion (stream.group_timeout > 0) holds a thread per sample waiting for its siblings. OpenRLHF calls
# reward_func through asyncio.to_thread, whose default pool has min(32, cores + 4) threads per vLLM engine: a few
# dozen waiting samples of unfinished groups would take them all, and their siblings, queued behind them, would only
# get in when the waits time out. So the pool is widened to this many threads (started only when needed).
REWARD_THREADS = 4096
_POOL_PREFIX = "novelty-reward"
_widened: tuple[int, int] | None = None  # (threads before, after), when this import widened the engine's pool
_pool_checked = False


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


def config_from_env(quiet: bool = False) -> NoveltyConfig:
    """The config this process was given (JSON, then a file, then the defaults), saying which (unless ``quiet``)."""
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
        if not quiet:
            _logger.warning("novelty reward file: neither %s nor %s is set in this process (%s): running the "
                            "default config", CONFIG_JSON_ENV, CONFIG_ENV, here())
        return NoveltyConfig()
    if not quiet:
        _logger.info("novelty reward file: config from %s (%s)", source, here())
    return config


def groups_complete_here(config: NoveltyConfig) -> bool:
    return config.stream_update_every > 0 and config.stream_group_timeout > 0


def widen_reward_threads() -> None:
    """Run when OpenRLHF executes this file: inside the vLLM engine actor's async ``__init__``, on the event loop
    whose default pool later runs every ``reward_func`` call. With group completion configured, give that loop a pool
    of REWARD_THREADS (see there). Never raises: a file that cannot tell its config leaves the pool alone (the first
    call reports the config error)."""
    global _widened
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not executed inside an event loop: nothing to widen (checked again at the first call)
        return
    try:
        if not groups_complete_here(config_from_env(quiet=True)):
            return
        before = getattr(getattr(loop, "_default_executor", None), "_max_workers", min(32, (os.cpu_count() or 1) + 4))
        loop.set_default_executor(ThreadPoolExecutor(max_workers=REWARD_THREADS, thread_name_prefix=_POOL_PREFIX))
        _widened = (before, REWARD_THREADS)
    except Exception as e:  # said at the first call, where logging is visible
        _widened = (-1, 0)
        _logger.warning("novelty reward file: could not widen the engine's reward thread pool: %s", e)


def _check_pool(config: NoveltyConfig) -> None:
    """Once, on the first call: say whether the samples waiting for their groups have the threads they need."""
    global _pool_checked
    if _pool_checked or not groups_complete_here(config):
        return
    _pool_checked = True
    on_ours = threading.current_thread().name.startswith(_POOL_PREFIX)
    if _widened and _widened[1] and on_ours:
        _logger.info("novelty reward file: group completion on; reward_func runs on this engine's widened pool "
                     "(%d threads, was %d): a sample waiting for its siblings never holds theirs up", _widened[1],
                     _widened[0])
    else:
        _logger.warning("novelty reward file: group completion (stream.group_timeout %.0f s) but reward_func runs "
                        "on thread %r, not on a pool this file widened: if it is a small pool, samples waiting for "
                        "their groups can hold every thread while their siblings queue, and groups then time out "
                        "(novelty/group_complete < 1). Use the reward server (a thread per request) if they do",
                        config.stream_group_timeout, threading.current_thread().name)


def _get_remote():
    global _remote
    if _remote is None:
        with _lock:
            if _remote is None:
                show_info_logs()
                config = config_from_env()
                _check_pool(config)
                remote = RemoteReward(config)
                try:
                    remote.model.health_check()
                except Exception as e:  # say it loudly, once; the fallbacks keep rewards flowing
                    _logger.error("novelty health check failed (the judge or the embedding server): %s", e)
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


widen_reward_threads()  # at import: OpenRLHF executes this file on the engine's event loop

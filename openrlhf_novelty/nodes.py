"""What every node of a Ray cluster needs before training starts, checked on each node at start-up.

On one machine a missing file or key fails at once and in plain sight. On a cluster it fails late and elsewhere:
OpenRLHF loads the reward file inside each vLLM engine, on whichever node the engine was placed; the reward file opens
the files the config names and reads the judge's key from its own environment, which is not the driver's. A missing
file there is a traceback in another node's log after the models have loaded; a missing key is a judge that answers
401, so every judgment takes the fallback (judge.fallback). So the launcher runs :func:`problems_here` once on every
node alive at start-up (a zero-CPU task pinned to it, inside the job's runtime env, so it sees what that node's
workers see) and stops with one error that names each node and what it lacks. Nodes an autoscaler adds later are not
checked. OPENRLHF_NOVELTY_NODE_CHECK=0 skips the check (said in the log).
"""

from __future__ import annotations

import json
import os

from openrlhf_novelty.config import NoveltyConfig

NODE_CHECK_ENV = "OPENRLHF_NOVELTY_NODE_CHECK"  # "0": skip the check
TIMEOUT = 120.0  # seconds for every node to answer (a runtime env may be built there first)


def reward_urls(value) -> list[str]:
    """``--reward.remote_url`` as OpenRLHF holds it: a comma-separated string when its arguments are parsed (the
    list comes later, inside ``train()``), or that list."""
    if isinstance(value, str):
        return [u.strip() for u in value.split(",") if u.strip()]
    return [u for u in (value or []) if u]


def requirements(config: NoveltyConfig, files: dict[str, str], shipped: dict[str, str]) -> dict:
    """What the run needs on every node: ``files`` (the launch's own: reward files, an agent file) and those the
    config names, by the setting that names them; the API-key variables this (driver) process has set (a keyless
    server needs none, so an unset one is not asked for); the variables the launcher ships in the job's runtime env
    (``shipped``: the config's JSON), with their values."""
    files = {**files, **config.files()}
    keys = {}
    for url, setting in ((config.judge_base_url, "judge.api_key_env"), (config.embed_base_url, "embed.api_key_env")):
        variable = getattr(config, setting.replace(".", "_"))
        if url and os.environ.get(variable):
            keys[variable] = setting
    return {"files": files, "keys": keys, "shipped": dict(shipped)}


def problems_here(needs: dict) -> list[str]:
    """What this process lacks of ``needs`` (empty: nothing)."""
    found = []
    for setting, path in needs["files"].items():
        if not os.path.exists(path):
            found.append(f"{setting} {path} does not exist")
    for variable, setting in needs["keys"].items():
        if not os.environ.get(variable):
            found.append(f"${variable} ({setting}) is set in the driver's environment (on the head, under ray job "
                         f"submit) but not here: pass it in the job's runtime env (ray job submit --runtime-env-json "
                         f"'{{\"env_vars\": {{\"{variable}\": \"...\"}}}}') or set it where `ray start` ran")
    for variable, value in needs["shipped"].items():
        if not same_json(os.environ.get(variable), value):
            found.append(f"the novelty config did not reach the workers here (${variable} "
                         f"{'differs' if os.environ.get(variable) else 'is missing'}): they would run another config")
    return found


def same_json(a: str | None, b: str | None) -> bool:
    """The same JSON value (a config written with other spacing or key order is the same config)."""
    if a is None or b is None:
        return a == b
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return a == b


def check_cluster(needs: dict, timeout: float = TIMEOUT) -> tuple[list[str], list[str], int]:
    """Run :func:`problems_here` on every alive node of the connected Ray cluster: (errors, warnings, nodes)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(problems_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(needs): n
            for n in nodes}
    done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    errors, warnings = [], []
    for ref, node in refs.items():
        where = f"Ray node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
        if ref not in done:
            ray.cancel(ref, force=True)
            warnings.append(f"{where} did not answer the start-up check within {timeout:.0f} s; it was not checked")
            continue
        try:
            errors += [f"{where}: {p}" for p in ray.get(ref)]
        except (ray.exceptions.NodeDiedError, ray.exceptions.TaskUnschedulableError) as e:  # gone since listed
            warnings.append(f"{where} left before the start-up check ran there ({type(e).__name__}); not checked")
        except ray.exceptions.RuntimeEnvSetupError as e:
            errors.append(f"{where}: the job's runtime env could not be set up there ({_last_line(e)})")
        except Exception as e:  # e.g. the plugin is not installed there: the task cannot even be unpickled
            errors.append(f"{where}: the start-up check could not run there ({_last_line(e)}); is openrlhf-novelty "
                          "installed on that node, in the Python the job uses?")
    return errors, warnings, len(nodes)


def _last_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def here() -> str:
    """'pid N, Ray node ID' for a log line, so a user can tell which node a message came from."""
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = f", Ray node {ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # no Ray, or no runtime context: the pid alone
        pass
    return f"pid {os.getpid()}{node}"

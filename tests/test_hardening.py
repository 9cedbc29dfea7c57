"""Bad input, fuzzed; faults; security. Each test says what is guaranteed."""

import errno
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrlhf_novelty import cli, reward_file
from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.remote import RemoteReward
from openrlhf_novelty.reward import PREFIX, NoveltyReward
from openrlhf_novelty.state import load_state, save_atomic
from tests.fake_openai import FakeOpenAI

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

# Text users' models really emit, and worse: control characters, lone surrogates (invalid UTF-8 once encoded),
# whitespace only, the extraction marker alone, 1 MB answers.
TEXT = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zs", "Zl"]), max_size=40),
    st.sampled_from(["", " ", "\n\t ", "\x00", "\ud800", "HYP:", "HYP: \udfff x", "<|im_end|>", "HYP: " + "a" * 1_000_000]),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


@st.composite
def batches(draw):
    """OpenRLHF reward calls: query = prompt + response, or a query that does not contain the prompt at all."""
    n = draw(st.integers(1, 4))
    prompts = draw(st.lists(TEXT, min_size=n, max_size=n))
    responses = draw(st.lists(TEXT, min_size=n, max_size=n))
    queries = [p + r if draw(st.booleans()) else r for p, r in zip(prompts, responses)]
    return queries, prompts, draw(st.lists(JSON, min_size=n, max_size=n))


@pytest.fixture(scope="module")
def remotes(embedder, tmp_path_factory):
    """Per-sample quality only, and streaming novelty, both with a user task reward that returns whatever the label
    is (NaN, inf, huge ints, strings, lists ...)."""
    folder = tmp_path_factory.mktemp("task")
    task = folder / "task.py"
    task.write_text("def reward_func(queries, prompts, labels):\n    return labels\n")
    out = []
    # quality only; streaming on arrival; streaming with group completion (groups of 8 rarely fill here: 50 ms)
    for stream, timeout in ((0, 0), (3, 0), (3, 0.05)):
        cfg = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"warmup_samples": 0},
                                       "reward": {"task_func": str(task)},
                                       "stream": {"update_every": stream, "group_timeout": timeout}})
        out.append(RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder)))
    return out


def check_result(result, n, keys):
    assert set(result) == {"rewards", "scores", "extra_logs"}
    assert len(result["rewards"]) == len(result["scores"]) == n
    assert all(isinstance(v, float) and math.isfinite(v) for v in result["rewards"] + result["scores"])
    assert sorted(result["extra_logs"]) == sorted(keys)  # the same keys every time: OpenRLHF stacks them
    assert all(len(v) == n and all(math.isfinite(x) for x in v) for v in result["extra_logs"].values())


@FUZZ
@given(batch=batches())
def test_reward_file_gives_finite_rewards_and_the_same_log_keys_for_anything(remotes, batch):
    for remote in remotes:
        check_result(remote(*batch), len(batch[0]), remote.log_keys)


@FUZZ
@given(batch=batches())
def test_reward_func_contract_holds_for_one_sample_as_openrlhf_calls_it(remotes, batch, monkeypatch):
    monkeypatch.setattr(reward_file, "_remote", remotes[1])
    queries, prompts, labels = batch
    out = reward_file.reward_func(queries[:1], prompts[:1], labels[:1])
    assert isinstance(out["rewards"], float) and math.isfinite(out["rewards"])
    assert sorted(out["extra_logs"]) == sorted(remotes[1].log_keys)


@pytest.mark.parametrize("which", [1, 2])  # on arrival; a group scored by another request's thread
def test_wrong_lengths_give_zero_with_the_error_flag_and_a_failing_embedder_costs_only_novelty(remotes, monkeypatch,
                                                                                                which):
    remote = remotes[which]
    out = remote(["a", "b"], ["p"], None)  # prompts shorter than queries
    check_result(out, 2, remote.log_keys)
    assert out["rewards"] == [0.0, 0.0] and out["extra_logs"][PREFIX + "error"] == [1.0, 1.0]
    monkeypatch.setattr(remote.model.embedder, "encode", lambda texts: (_ for _ in ()).throw(RuntimeError("OOM")))
    remote.model._emb_cache.clear()
    out = remote(["p HYP: x"], ["p "], [1.0])
    check_result(out, 1, remote.log_keys)
    logs = out["extra_logs"]  # the answer could not be embedded: no novelty, its quality stands, no error
    assert logs[PREFIX + "unembedded"] == [1.0] and logs[PREFIX + "error"] == [0.0]
    assert out["rewards"] == pytest.approx(logs[PREFIX + "quality"])  # quality alone ("x" is too short: 0)
    monkeypatch.undo()
    again = remote(["p HYP: x"], ["p "], [1.0])["extra_logs"]
    assert again[PREFIX + "unembedded"] == [0.0] and again[PREFIX + "error"] == [0.0]  # the next call recovers


def test_scoring_a_group_of_the_wrong_size_is_a_clear_error(embedder):
    model = NoveltyReward(NoveltyConfig(), embedder=embedder)
    with pytest.raises(ValueError, match="5 samples do not split into groups of 2"):
        model.score(["p"] * 5, ["r"] * 5, 2)


# --- the server, fuzzed with raw bytes and arbitrary JSON


@pytest.fixture(scope="module")
def server(remotes):
    from openrlhf_novelty.server import RewardServer

    srv = RewardServer(remotes[1], port=0, max_body=2 << 20)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(10)


def post(url, data: bytes):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"query": JSON, "prompts": JSON}, optional={"labels": JSON}).map(
        lambda v: json.dumps(v).encode()),
    batches().map(lambda b: json.dumps({"query": b[0], "prompts": b[1], "labels": b[2]}).encode()),
))
def test_server_answers_anything_with_a_json_2xx_or_4xx(server, body):
    try:
        status, payload = post(server.url + "/reward", body)
    except urllib.error.URLError:  # over the size limit the server answers 413 and closes before reading the body,
        assert len(body) > server.max_body  # so a client still sending may see the reset instead of the 413
        return
    assert status in (200, 400, 413), payload
    if status == 200:
        assert all(math.isfinite(r) for r in payload["rewards"])
    else:
        assert isinstance(payload["error"], str) and payload["error"]


def test_server_survives_garbage_on_the_socket(server):
    for junk in (b"\x00\xff\xfe garbage\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", b"G"):
        with socket.create_connection((server.host, server.port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.recv(4096)
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"


# --- the CLIs: anything in the input file gives exit 0 or 2 with one line, never a traceback


@FUZZ
@given(content=st.one_of(
    st.binary(max_size=300),
    st.lists(JSON.map(json.dumps), max_size=4).map(lambda lines: "\n".join(lines).encode()),
    st.lists(st.fixed_dictionaries({"prompt": JSON, "response": JSON}, optional={"task_reward": JSON}), max_size=4)
    .map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
))
def test_score_and_eval_clis_exit_0_or_2_with_one_line(content, tmp_path_factory, embedder, monkeypatch, capsys):
    monkeypatch.setattr("openrlhf_novelty.embed.Embedder", lambda *a, **k: embedder)
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "in.jsonl"
    path.write_bytes(content)
    for argv in (["score", str(path), "--group-size", "2", "--output", str(folder / "o.jsonl")],
                 ["eval", str(path), "--output-dir", str(folder / "report")]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2), err
        assert "Traceback" not in err
        if code == 2:
            assert err.count("\n") == 1 and "error:" in err


# --- faults: saving state


def test_a_failed_save_leaves_the_previous_state_intact_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_atomic({"version": torch.tensor(1)}, path)

    def disk_full(obj, fh):
        fh.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"version": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_state(path)["version"].item() == 1
    assert os.listdir(tmp_path) == ["state.pt"]


def test_adapters_log_a_failed_save_and_go_on(embedder, tmp_path, monkeypatch, caplog):
    from openrlhf_novelty.hook import NoveltyHook
    from openrlhf_novelty.trl_reward import NoveltyRewardFunc

    model = NoveltyReward(NoveltyConfig(), embedder=embedder)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("openrlhf_novelty.reward.save_atomic", read_only)
    hook = NoveltyHook(NoveltyConfig(), tokenizer=None, n_samples_per_prompt=2, model=model)
    trl = NoveltyRewardFunc(model=model)
    monkeypatch.setattr(model, "state_dict", lambda: (_ for _ in ()).throw(RuntimeError("state cannot be taken")))
    with caplog.at_level(logging.ERROR):
        # The hook's state rides in OpenRLHF's checkpoint: if it cannot be taken, the checkpoint goes on without.
        assert hook.checkpoint_state() is None and trl.save(str(tmp_path / "b.pt")) is False
    assert hook.failures == 1 and trl.failures == 1
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["ERROR", "ERROR"] and "for the checkpoint" in caplog.text


SAVER = textwrap.dedent("""
    import sys, torch
    from openrlhf_novelty.state import save_atomic
    path, big = sys.argv[1], torch.randn(4_000_000)  # 16 MB: each save takes a while, so kills land mid-write
    version = 0
    while True:
        version += 1
        save_atomic({"version": version, "data": big + version, "check": float((big + version).sum())}, path)
        print(version, flush=True)
""")


def test_sigkill_during_saves_never_leaves_a_state_that_does_not_load(tmp_path):
    """Kill a process that saves a 16 MB state in a loop, at several points; every time the file loads whole."""
    path = tmp_path / "state.pt"
    # Five kills at spread delays, then more (up to 30) until one has landed mid-write: how often one does depends
    # on the machine's disk and load (5 of 5 missed on one run of the suite).
    delays = [0.0, 0.05, 0.1, 0.2, 0.3] + [0.013 * k for k in range(1, 26)]
    for n, delay in enumerate(delays):
        if n >= 5 and any(name.endswith(".tmp") for name in os.listdir(tmp_path)):
            break
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()  # one save done: from now on a kill lands before, in or after one
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        state = load_state(path)
        assert state["version"] >= 1
        assert abs(float(state["data"].sum()) - state["check"]) <= 1e-4 * abs(state["check"]) + 1.0
    # Kills that landed mid-write left their temporary file behind (never read): proof the test hit that case.
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))


# --- faults: a judge endpoint flapping for a whole run


def test_a_flapping_judge_costs_only_the_failed_judgments(embedder):
    from openrlhf_novelty.judge import Judge

    with FakeOpenAI() as fake:
        cfg = NoveltyConfig.from_dict({"judge": {"base_url": fake.url, "model": "m", "retries": 0,
                                                 "breaker_failures": 1000, "timeout": 5, "blind_numbers": False}})
        judge = Judge(cfg)
        responses = [f"[[500]] idea {i}" if i % 3 == 0 else f"idea {i}" for i in range(30)]
        scores, failed = judge.judge_many(["t"] * 30, responses)
    assert failed == [i % 3 == 0 for i in range(30)]
    assert scores == [0.5 if i % 3 == 0 else 0.7 for i in range(30)]
    assert judge.stats.failures == 10


# --- faults: the reward server restarts mid-run; OpenRLHF's own client retries through it


def test_openrlhfs_client_retries_through_a_server_restart(remotes, tmp_path):
    import asyncio

    from openrlhf_novelty.server import RewardServer
    from tests.test_openrlhf import SingleTurnAgentExecutor  # the real one, imported with the CUDA stand-ins
    state = str(tmp_path / "state.pt")
    first = RewardServer(remotes[1], port=0, state_path=state)
    port = first.port
    t1 = threading.Thread(target=first.serve_forever, daemon=True)
    t1.start()
    executor = SingleTurnAgentExecutor(f"http://127.0.0.1:{port}/reward")
    for text in ("one", "uno", "eins"):  # three samples: one RND update (stream.update_every 3)
        ok = asyncio.run(executor._fetch_rewards_via_http([f"p HYP: {text}"], ["p "], [1.0]))
    first.shutdown()
    t1.join(10)  # stopped, state saved
    step, weight = remotes[1].model.step, remotes[1].model.rnd.predictor[0].weight.clone()
    assert step > 0  # something worth restoring (an RND update every 3 samples)
    fresh = RemoteReward(remotes[1].config, model=NoveltyReward(remotes[1].config, embedder=remotes[1].model.embedder))

    def restart_later():
        time.sleep(1.5)  # the client's first tries hit a closed port
        second = RewardServer(fresh, port=port, state_path=state)  # a new process's objects: only the file carries
        threading.Thread(target=second.serve_forever, daemon=True).start()
        restarted.append(second)

    restarted = []
    threading.Thread(target=restart_later, daemon=True).start()
    again = asyncio.run(executor._fetch_rewards_via_http(["p HYP: two"], ["p "], [1.0]))
    restarted[0].shutdown()
    assert len(ok[0]["rewards"]) == 1 and len(again[0]["rewards"]) == 1
    assert fresh.model.step >= step and fresh.model.step > 0  # state restored from the file, not reset
    if fresh.model.step == step:
        assert torch.equal(fresh.model.rnd.predictor[0].weight, weight)


# --- security


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
def test_an_endpoint_quoting_the_api_key_never_gets_it_into_logs_errors_or_state(embedder, monkeypatch, caplog,
                                                                                 tmp_path, transport):
    from openrlhf_novelty.judge import Judge, JudgeUnavailable

    key = "sk-planted-4f9a1c77e2"
    monkeypatch.setenv("NOVELTY_TEST_KEY", key)
    with FakeOpenAI() as fake, caplog.at_level(logging.DEBUG):
        cfg = NoveltyConfig.from_dict({"judge": {"base_url": fake.url, "model": "[[echo-key]]", "retries": 1,
                                                 "backoff": 0.01, "api_key_env": "NOVELTY_TEST_KEY",
                                                 "transport": transport}})
        judge = Judge(cfg)
        with pytest.raises(JudgeUnavailable) as err:
            judge.health_check()
        judge.close()
        remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
        out = remote(["p HYP: an idea", "p HYP: another"], ["p "] * 2, None)
        save_atomic(remote.state_dict(), tmp_path / "state.pt")
        remote.model.judge.close()
    assert fake.counts["echo-key"] == 3  # the health check and two judgments: each quoted the key back
    assert "401" in str(err.value) and key not in str(err.value)
    assert key not in caplog.text and key not in json.dumps(out) and key not in json.dumps(remote.stats())
    assert key.encode() not in (tmp_path / "state.pt").read_bytes()


def test_no_unsafe_deserialization_anywhere_in_the_package():
    import openrlhf_novelty

    root = os.path.dirname(openrlhf_novelty.__file__)
    for name in os.listdir(root):
        if name.endswith(".py"):
            source = open(os.path.join(root, name), encoding="utf-8").read()
            assert "weights_only=False" not in source and "import pickle" not in source, name
            assert "torch.load(" not in source or name == "state.py", name  # the one loader, weights_only=True


def test_server_binds_loopback_unless_told_otherwise():
    import inspect

    from openrlhf_novelty.server import RewardServer

    assert inspect.signature(RewardServer).parameters["host"].default == "127.0.0.1"
    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


def test_a_reward_file_that_cannot_start_logs_every_key_the_others_do(tmp_path, monkeypatch):
    # One engine fails to build its reward (here: the judge's local model path is gone on this node) while the
    # others run: OpenRLHF stacks info key by key, so the failing engine must log the same keys.
    import importlib.util

    from openrlhf_novelty.reward_file import __file__ as reward_file

    cfg = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}, "stream": {"update_every": 8}})
    monkeypatch.setenv("OPENRLHF_NOVELTY_CONFIG_JSON", json.dumps(cfg.to_dict()))
    spec = importlib.util.spec_from_file_location("reward_func", reward_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(module._get_remote.__globals__, "RemoteReward",
                        lambda config: (_ for _ in ()).throw(RuntimeError("model path gone")))
    out = module.reward_func(["p HYP: x"], ["p "], [""])
    from openrlhf_novelty.remote import log_keys

    assert sorted(out["extra_logs"]) == sorted(log_keys(cfg)) and len(out["extra_logs"]) == 17  # group_complete, config, language, fluency, unembedded too
    assert out["extra_logs"]["novelty/error"] == 1.0 and out["extra_logs"]["novelty/masked"] == 1.0
    assert out["rewards"] == 0.0

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.remote import RemoteReward
from openrlhf_novelty.reward import NoveltyReward
from openrlhf_novelty.server import RewardServer
from tests.test_openrlhf import ANSWERS, PROMPTS, SingleTurnAgentExecutor, run_rollout

TOKEN = "s3cret-token"


def make_remote(embedder) -> RemoteReward:
    cfg = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"warmup_samples": 0},
                                   "stream": {"update_every": 8, "group_size": 4}})
    return RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))


class Running:
    def __init__(self, remote, tmp_path, **kw):
        self.srv = RewardServer(remote, port=0, token=TOKEN, state_path=str(tmp_path / "state.pt"), **kw)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.thread.join(10)


@pytest.fixture
def server(embedder, tmp_path):
    r = Running(make_remote(embedder), tmp_path, max_body=64 << 10)
    yield r.srv
    r.stop()


def post(url, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def request(n=4, prompt="P\n"):
    return {"query": [prompt + a for a in ANSWERS[1][:n]], "prompts": [prompt] * n, "labels": ["A"] * n}


def test_contract(server):
    status, out = post(f"{server.url}/reward?token={TOKEN}", request())
    assert status == 200 and len(out["rewards"]) == len(out["scores"]) == 4
    assert all(isinstance(r, float) for r in out["rewards"])
    assert {"novelty/quality", "novelty/rnd", "novelty/diversity", "novelty/novelty"} <= set(out["extra_logs"])
    assert all(len(v) == 4 for v in out["extra_logs"].values())
    # A whole group in one request is one group: every sample, the first too, is compared with its 3 siblings.
    assert min(out["extra_logs"]["novelty/diversity"]) > 0.2
    assert out["extra_logs"]["novelty/group_complete"] == [1.0] * 4
    assert post(f"{server.url}/reward?token={TOKEN}", {"query": [], "prompts": [], "labels": []}) == (
        200, {"rewards": [], "scores": [], "extra_logs": {}})


def test_on_arrival_scoring_without_group_completion(embedder):
    """stream.group_timeout 0: each sample against the siblings seen so far (the first has none yet)."""
    cfg = NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}, "rnd": {"warmup_samples": 0},
                                   "stream": {"update_every": 8, "group_size": 4, "group_timeout": 0}})
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    logs = remote(*request().values())["extra_logs"]
    assert logs["novelty/diversity"][0] == 0.0 and min(logs["novelty/diversity"][1:]) > 0.2
    assert "novelty/group_complete" not in logs


def test_openrlhfs_own_http_client(server):
    outputs = run_rollout(SingleTurnAgentExecutor([f"{server.url}/reward?token={TOKEN}"]))
    assert len(outputs) == len(PROMPTS) * 4
    assert all(isinstance(o["reward"], list) and isinstance(o["reward"][0], float) for o in outputs)
    assert server.remote.model.step == 2  # 16 samples, RND updated every 8


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"[1, 2]", 400, "body must be a JSON object"),
        (json.dumps({"query": ["a"]}).encode(), 400, "'prompts' must be a list of strings"),
        (json.dumps({"query": ["a", "b"], "prompts": ["p"]}).encode(), 400, "differ in length (2, 1, 2)"),
        (json.dumps({"query": ["x" * 70000], "prompts": ["p"]}).encode(), 413, "exceeds the limit of 65536"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_json_error(server, body, status, message):
    got, out = post(f"{server.url}/reward?token={TOKEN}", body)
    assert got == status and message in out["error"]


def test_token(server):
    assert post(f"{server.url}/reward", request())[0] == 401
    assert post(f"{server.url}/reward?token=wrong", request())[0] == 401
    assert post(f"{server.url}/reward", request(), {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    with urllib.request.urlopen(f"{server.url}/health?token={TOKEN}", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_64_concurrent_clients(server):
    def one(i):
        return post(f"{server.url}/reward?token={TOKEN}", request(1, prompt=f"prompt {i % 16}\n"))

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(128)))
    assert all(status == 200 and len(out["rewards"]) == 1 for status, out in results)
    assert server.remote.calls == 128 and server.remote.errors == 0 and server.remote.model.step == 16


def test_state_survives_a_restart(embedder, tmp_path):
    first = Running(make_remote(embedder), tmp_path)
    for i in range(3):  # 12 samples: one RND update at 8, 4 pending
        post(f"{first.srv.url}/r?token={TOKEN}", request(4, prompt=f"p{i}\n"))
    first.stop()  # saves at shutdown
    before = first.srv.remote.state_dict()
    second = Running(make_remote(embedder), tmp_path)
    after = second.srv.remote.state_dict()
    second.stop()
    assert after["model"]["step"] == before["model"]["step"] == 1
    assert torch.equal(after["pending"], before["pending"]) and after["pending"].shape[0] == 4
    assert torch.equal(after["model"]["rnd"]["predictor"]["0.weight"], before["model"]["rnd"]["predictor"]["0.weight"])
    assert after["sibling_keys"].tolist() == before["sibling_keys"].tolist()


def test_batcher_runs_concurrent_requests_together_and_returns_each_its_own():
    import time

    from openrlhf_novelty.batcher import Batcher

    sizes = []

    def double(items):
        sizes.append(len(items))
        time.sleep(0.02)  # an encoder call: others queue up meanwhile
        if "boom" in items:
            raise RuntimeError("boom")
        return [2 * x for x in items]

    batcher = Batcher(double)
    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(batcher.submit, range(96))) == [2 * i for i in range(96)]
    assert sum(sizes) == 96 and max(sizes) > 8  # far fewer calls than requests
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit("boom")
    assert batcher.submit(3) == 6  # a failed batch does not wedge the next one


def test_concurrent_encodes_share_forward_passes_and_each_gets_its_own_vectors(embedder):
    """The reward file encodes one answer per request thread (relevance); those calls are batched together."""
    texts = [f"HYP: Tweets about topic {i} get {'more' if i % 2 else 'fewer'} retweets." for i in range(48)]
    alone = torch.stack([embedder.encode([t])[0] for t in texts])
    calls = []
    model = embedder.model
    real = model.encode

    def counting(batch, **kwargs):
        calls.append(len(batch))
        return real(batch, **kwargs)

    model.encode = counting
    try:
        with ThreadPoolExecutor(16) as pool:
            together = torch.stack([e[0] for e in pool.map(lambda t: embedder.encode([t]), texts)])
    finally:
        del model.encode
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert sum(calls) == 48 and len(calls) < 24


def test_batcher_leader_returns_once_its_own_item_is_done_under_steady_load():
    """A leader that served newcomers until the queue ran dry could be held past OpenRLHF's request limit."""
    import time

    from openrlhf_novelty.batcher import Batcher

    def slow(items):
        time.sleep(0.05)
        return items

    batcher, stop, took = Batcher(slow), threading.Event(), []

    def first():
        t0 = time.monotonic()
        batcher.submit("first")
        took.append(time.monotonic() - t0)

    def steady(i):
        while not stop.is_set():
            time.sleep(0.01 * i)  # staggered: some request always arrives while a batch runs
            batcher.submit("more")

    with ThreadPoolExecutor(8) as pool:
        leader = pool.submit(first)  # alone: it leads
        time.sleep(0.01)  # its batch is running; the load arrives behind it
        for i in range(6):
            pool.submit(steady, i)
        time.sleep(1.0)
        stop.set()
        leader.result()
    assert took and took[0] < 0.5  # its own batch (50 ms) and at most a few more, not the whole second of load


def test_a_state_snapshot_loses_no_samples_to_an_update_in_between(embedder):
    """The model's state and the samples pending for it are taken under one lock: an update landing between the
    two (it moves K pending samples into RND) would leave them in neither."""
    cfg = NoveltyConfig.from_dict({"rnd": {"warmup_samples": 0},
                                   "stream": {"update_every": 4, "group_size": 4, "group_timeout": 0}})
    remote = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    answers = ANSWERS[1]
    for a in answers[:3]:  # 3 pending, one short of an update
        remote(["P\n" + a], ["P\n"], ["A"])
    model_state, late = remote.model.state_dict, []

    def slow_state_dict():  # the 4th sample arrives while the model's state is being taken
        out = model_state()
        late.append(threading.Thread(target=remote, args=(["P\n" + answers[3]], ["P\n"], ["A"])))
        late[0].start()
        late[0].join(0.5)
        return out

    remote.model.state_dict = slow_state_dict
    snapshot = remote.state_dict()
    remote.model.state_dict = model_state
    late[0].join()
    back = RemoteReward(cfg, model=NoveltyReward(cfg, embedder=embedder))
    back.load_state_dict(snapshot)
    assert back.model.rnd.obs_rms.count + len(back.stream._pending) == 3

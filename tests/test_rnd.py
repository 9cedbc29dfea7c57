import torch

from openrlhf_novelty.rnd import RND, RunningMeanStd


def data(seed: int, n: int = 64, dim: int = 16) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=-1)


def test_running_mean_std_matches_the_whole_data():
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    rms = RunningMeanStd((2,))
    for chunk in (x[:1], x[1:4], x[4:]):
        rms.update(chunk)
    assert rms.count == 6
    assert torch.allclose(rms.mean, x.mean(0)) and torch.allclose(rms.var, x.var(0, unbiased=False))


def test_scoring_does_not_change_state():
    rnd = RND(16, hidden=32, out=8, warmup_samples=0)
    rnd.update(data(0))
    before = rnd.state_dict()
    rnd.score(data(1))
    after = rnd.state_dict()
    assert all(torch.equal(before["predictor"][k], after["predictor"][k]) for k in before["predictor"])
    assert torch.equal(before["obs_rms"]["mean"], after["obs_rms"]["mean"]) and before["updates"] == after["updates"]


def test_warmup_pays_nothing_until_enough_samples_were_seen():
    rnd = RND(16, hidden=32, out=8, warmup_samples=100)
    rnd.update(data(0, n=64))
    assert rnd.score(data(1))[0].abs().max().item() == 0.0  # 64 < 100 seen
    rnd.update(data(2, n=64))
    assert rnd.score(data(1))[0].min().item() > 0.0  # 128 seen


def test_seen_data_becomes_less_novel_than_unseen():
    rnd = RND(16, hidden=64, out=16, lr=1e-2, update_proportion=0.5, updates_per_batch=8, warmup_samples=0)
    seen, unseen = data(0), data(1)
    first = rnd.score(seen)[1].mean().item()
    for _ in range(30):
        rnd.update(seen)
    assert rnd.score(seen)[1].mean().item() < 0.2 * first
    assert rnd.score(unseen)[0].mean().item() > 2 * rnd.score(seen)[0].mean().item()


def test_same_seed_same_target_and_state_round_trip_is_exact():
    a, b = RND(16, hidden=32, out=8, seed=7), RND(16, hidden=32, out=8, seed=7)
    assert all(torch.equal(a.target.state_dict()[k], b.target.state_dict()[k]) for k in a.target.state_dict())
    for i in range(3):
        a.update(data(i))
    c = RND(16, hidden=32, out=8, seed=99)  # different init, overwritten by the state
    c.load_state_dict(a.state_dict())
    assert torch.equal(a.score(data(5))[1], c.score(data(5))[1])
    a.update(data(6))  # the update masks continue from the same RNG state
    c.update(data(6))
    assert torch.equal(a.score(data(5))[1], c.score(data(5))[1])


def test_update_learns_even_when_the_host_runs_under_no_grad():
    rnd = RND(16, hidden=32, out=8, warmup_samples=0)
    before = rnd.predictor[0].weight.clone()
    with torch.no_grad():  # OpenRLHF's make_experience_batch is decorated with @torch.no_grad()
        rnd.update(data(0))
    assert not torch.equal(before, rnd.predictor[0].weight)

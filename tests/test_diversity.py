import math

import pytest
import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import Archive, group_diversity, knn_distance, prompt_key


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_mean_and_min_distance_to_siblings():
    # Two identical samples and one orthogonal to both (cosine distance 1).
    g = torch.tensor([[unit(0), unit(0), unit(90)]])
    assert group_diversity(g, "mean").tolist() == [[0.5, 0.5, 1.0]]  # (0 + 1) / 2 for each duplicate
    assert group_diversity(g, "min").tolist() == [[0.0, 0.0, 1.0]]  # a duplicate's nearest sibling is itself


def test_identical_group_has_no_diversity_and_singletons_score_zero():
    same = torch.tensor([[unit(10)] * 4])
    for mode in ("mean", "min", "partition"):
        assert group_diversity(same, mode).abs().max().item() < 1e-6
    assert group_diversity(torch.tensor([[unit(0)], [unit(90)]]), "mean").tolist() == [[0.0], [0.0]]


def test_partition_clusters_transitively():
    # a-b and b-c are 25 degrees apart (cos 0.906 >= 0.85), a-c 50 (cos 0.643): one cluster through b.
    # d points away from all three and is its own cluster.
    g = torch.tensor([[unit(0), unit(25), unit(50), unit(-90)]])
    got = group_diversity(g, "partition", threshold=0.85)[0].tolist()
    assert got == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])  # share of the 3 siblings outside one's cluster


def test_groups_are_independent():
    g = torch.tensor([[unit(0), unit(90)], [unit(0), unit(0)]])
    assert group_diversity(g, "mean").reshape(-1).tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0], abs=1e-6)


def test_knn_distance():
    keys = torch.tensor([unit(0), unit(90), unit(60)])
    q = torch.tensor([unit(0)])
    assert knn_distance(q, keys, k=1).tolist() == pytest.approx([0.0], abs=1e-6)  # an exact copy is not novel
    assert knn_distance(q, keys, k=2).tolist() == pytest.approx([0.25])  # mean of distances 0 and 1 - cos 60
    assert knn_distance(q, keys[:0], k=3).tolist() == [1.0]  # nothing to compare with: fully novel
    none_allowed = torch.zeros(1, 3, dtype=torch.bool)
    assert knn_distance(q, keys, k=2, allowed=none_allowed).tolist() == [1.0]
    only_far = torch.tensor([[False, True, False]])
    assert knn_distance(q, keys, k=2, allowed=only_far).tolist() == pytest.approx([1.0])  # only the 90-degree key


def test_archive_is_a_bounded_ring_buffer_and_round_trips():
    a = Archive(size=3, dim=2)
    a.add(torch.tensor([unit(0), unit(10), unit(20), unit(30), unit(40)]), torch.tensor([1, 1, 2, 2, 2]))
    assert len(a) == 3  # capped
    kept = sorted(round(math.degrees(math.atan2(y, x))) for x, y in a.emb.tolist())
    assert kept == [20, 30, 40]  # the oldest two were overwritten
    b = Archive(size=3, dim=2)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.emb, b.emb) and torch.equal(a.keys, b.keys) and a.pos == b.pos
    q = torch.tensor([unit(20)])
    assert a.novelty(q, torch.tensor([2]), k=1, per_prompt=True).tolist() == pytest.approx([0.0], abs=1e-6)
    assert a.novelty(q, torch.tensor([1]), k=1, per_prompt=True).tolist() == [1.0]  # prompt 1's entries are gone
    with pytest.raises(ValueError, match="does not fit an archive of size 2"):
        Archive(size=2, dim=2).load_state_dict(a.state_dict())


def test_prompt_key_is_stable_across_processes():
    # Saved archives store these keys: a change here would silently orphan every per-prompt archive.
    assert prompt_key("p") == 1131804030325668102
    assert prompt_key("Tweet A") == 5656993197784068353


def normed(*rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=-1, keepdim=True)


def test_failed_siblings_are_not_distance_to_be_paid_for():
    # Two near-identical good answers and two failed ones (far away): only the good pair counts for the good ones.
    emb = normed([1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0, 1])[None]
    eligible = torch.tensor([[True, True, False, False]])
    got = group_diversity(emb, "mean", eligible=eligible)[0]
    pair = 1 - float(emb[0, 0] @ emb[0, 1])
    assert got[:2].tolist() == pytest.approx([pair, pair], abs=1e-6)  # not inflated by the failures' distance
    assert group_diversity(emb, "min", eligible=eligible)[0, :2].tolist() == pytest.approx([pair, pair], abs=1e-6)
    # A good answer whose siblings all failed has nothing to differ from.
    assert group_diversity(emb, "mean", eligible=torch.tensor([[True, False, False, False]]))[0, 0] == 0.0


def test_partition_is_transitive_on_both_paths():
    # a ~ b and b ~ c (cos >= 0.85) but a !~ c: one cluster, so nobody is diverse, whichever path scores it.
    a, b, c = normed([1, 0], [0.866, 0.5], [0.5, 0.866])  # cos(a,b) = cos(b,c) = 0.866, cos(a,c) = 0.5
    assert group_diversity(torch.stack([a, b, c])[None], "partition", 0.85)[0].tolist() == [0.0, 0.0, 0.0]
    from openrlhf_novelty.reward import NoveltyReward
    from openrlhf_novelty.stream import StreamingNovelty

    class Fixed:  # an embedder with the three vectors above
        dim = 2
        vectors = {"HYP: a": a, "HYP: b": b, "HYP: c": c}

        def encode(self, texts):
            return torch.stack([self.vectors[t] for t in texts])

    cfg = NoveltyConfig.from_dict({"diversity": {"mode": "partition"}, "rnd": {"weight": 0},
                                   "archive": {"weight": 0}, "stream": {"update_every": 100, "group_size": 3}})
    stream = StreamingNovelty(cfg, NoveltyReward(cfg, embedder=Fixed()))
    got = [stream(["p"], [t], [1.0])[1]["diversity"][0] for t in ("HYP: a", "HYP: b", "HYP: c")]
    assert got == [0.0, 0.0, 0.0]  # pairwise, c would have scored 0.5 against its siblings a and b

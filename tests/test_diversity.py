import math

import pytest
import torch

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.diversity import Archive, group_diversity, knn_distance, prompt_key
from tests.conftest import TOY_TEXTS


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

    for timeout in (0, 30):  # on arrival, and the whole group at once (group completion)
        cfg = NoveltyConfig.from_dict({"diversity": {"mode": "partition"}, "rnd": {"weight": 0},
                                       "archive": {"weight": 0}, "quality": TOY_TEXTS, "extract": {"normalize": False},
                                       "stream": {"update_every": 100, "group_size": 3, "group_timeout": timeout}})
        stream = StreamingNovelty(cfg, NoveltyReward(cfg, embedder=Fixed()))
        if timeout:
            got = stream(["p"] * 3, ["HYP: a", "HYP: b", "HYP: c"], [1.0] * 3)[1]["diversity"]
        else:
            got = [stream(["p"], [t], [1.0])[1]["diversity"][0] for t in ("HYP: a", "HYP: b", "HYP: c")]
        assert got == [0.0, 0.0, 0.0]  # pairwise, c would have scored 0.5 against its siblings a and b


def test_elliptical_bonus_literal_values():
    """RepExp's bonus, scaled into [0, 1]: sqrt(lam e'(lam I + sum_j e_j e_j')^-1 e) over the siblings."""
    lam = 0.01
    # Orthogonal answers: each lies wholly outside the others' span.
    eye = torch.eye(4, 6)[None]
    torch.testing.assert_close(group_diversity(eye, "elliptical", lam=lam), torch.ones(1, 4))
    # Identical answers: m = 3 copies among the siblings leave sqrt(lam / (lam + m)), about 0.058.
    same = torch.tensor([[unit(10)] * 4])
    expected = math.sqrt(lam / (lam + 3))
    torch.testing.assert_close(group_diversity(same, "elliptical", lam=lam), torch.full((1, 4), expected))
    # Two answers at 60 degrees (cosine 0.5): sqrt(1 - c^2 / (1 + lam)) each.
    pair = torch.tensor([[unit(0), unit(60)]])
    torch.testing.assert_close(group_diversity(pair, "elliptical", lam=lam),
                               torch.full((1, 2), math.sqrt(1 - 0.25 / (1 + lam))))


def test_elliptical_pays_nothing_for_blending_two_siblings():
    """Mean distance pays an answer halfway between two siblings; the span it lies in does not."""
    a, b = torch.eye(3)[0], torch.eye(3)[1]
    blend = torch.nn.functional.normalize(a + b, dim=0)
    group = torch.stack([a, b, blend])[None]
    mean = group_diversity(group, "mean")[0, 2].item()
    ell = group_diversity(group, "elliptical", lam=0.01)[0, 2].item()
    assert mean == pytest.approx(1 - math.sqrt(0.5), abs=1e-6) and mean > 0.29
    assert ell == pytest.approx(math.sqrt(0.01 / 1.01), abs=1e-6)  # ~0.10: it lies in the span of a and b
    new = torch.stack([a, b, torch.eye(3)[2]])[None]
    assert group_diversity(new, "elliptical", lam=0.01)[0, 2].item() == pytest.approx(1.0, abs=1e-6)


def test_elliptical_dual_and_primal_paths_agree_and_respect_eligibility():
    from openrlhf_novelty.diversity import elliptical

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(12, 5), dim=-1)
    ok = torch.tensor([True] * 9 + [False] * 3)
    dual = elliptical(emb[None], ok[None], 0.05)[0]  # n <= 64: the n x n dual
    # The same 12 padded past 64 with non-eligible rows, which must change nothing: the d x d primal.
    padded = torch.cat([emb, torch.nn.functional.normalize(torch.randn(60, 5), dim=-1)])
    primal = elliptical(padded[None], torch.cat([ok, torch.zeros(60, dtype=torch.bool)])[None], 0.05)[0, :12]
    torch.testing.assert_close(dual, primal, atol=1e-5, rtol=0)
    # A direct inverse per sample, leave-one-out over eligible others.
    for i in range(12):
        others = [j for j in range(12) if j != i and ok[j]]
        a = 0.05 * torch.eye(5, dtype=torch.float64) + emb[others].double().T @ emb[others].double()
        direct = math.sqrt(0.05 * float(emb[i].double() @ torch.linalg.solve(a, emb[i].double())))
        assert dual[i].item() == pytest.approx(direct, abs=1e-5)


def test_elliptical_batch_scope_compares_across_prompts():
    from openrlhf_novelty.reward import NoveltyReward

    class Fixed:  # embeddings by text: the two prompts' answers repeat each other across groups
        dim = 3
        table = {"alpha": [1.0, 0, 0], "beta": [0, 1.0, 0], "gamma": [0, 0, 1.0]}

        def encode(self, texts):
            return torch.tensor([self.table[t.split()[0]] for t in texts])

    base = {"diversity": {"mode": "elliptical"}, "rnd": {"weight": 0}, "archive": {"weight": 0},
            "quality": {"relevance_weight": 0, "degenerate_weight": 0, "shared_threshold": 2}}
    texts = ["alpha one", "beta one", "alpha two", "gamma two"]
    group = NoveltyReward(NoveltyConfig.from_dict(base), embedder=Fixed())
    batch = NoveltyReward(NoveltyConfig.from_dict({**base, "diversity": {"mode": "elliptical",
                                                                          "elliptical_scope": "batch"}}),
                          embedder=Fixed())
    g = group.score(["p", "p", "q", "q"], texts, 2).components["diversity"]
    b = batch.score(["p", "p", "q", "q"], texts, 2).components["diversity"]
    assert g == pytest.approx([1.0, 1.0, 1.0, 1.0], abs=1e-6)  # within each group all are orthogonal
    # Across the batch "alpha" appears twice: each copy has one copy among the others.
    assert b == pytest.approx([math.sqrt(0.01 / 1.01), 1.0, math.sqrt(0.01 / 1.01), 1.0], abs=1e-6)
    with pytest.raises(Exception, match="elliptical_scope: batch needs a whole rollout batch"):
        NoveltyConfig.from_dict({"diversity": {"mode": "elliptical", "elliptical_scope": "batch"},
                                 "stream": {"update_every": 8}})
    # A scope the mode never reads is refused, not silently ignored.
    with pytest.raises(Exception, match="applies to diversity.mode elliptical only"):
        NoveltyConfig.from_dict({"diversity": {"mode": "mean", "elliptical_scope": "batch"}})


def test_elliptical_pays_a_paraphrase_its_angle():
    """The README's warning, in numbers: a paraphrase at cosine 0.95 to three identical siblings."""
    c = 0.95
    para = [c, math.sqrt(1 - c * c), 0.0]
    group = torch.tensor([[[1.0, 0, 0]] * 3 + [para]])
    ell = group_diversity(group, "elliptical", lam=0.01)[0, 3].item()
    mean = group_diversity(group, "mean")[0, 3].item()
    part = group_diversity(group, "partition", threshold=0.85)[0, 3].item()
    assert ell == pytest.approx(math.sqrt(1 - c * c + 0.01 * c * c / 3.01), abs=1e-6)  # ~0.31
    assert mean == pytest.approx(0.05, abs=1e-6) and part == 0.0


def test_elliptical_groups_are_scored_independently_in_one_batched_solve():
    from openrlhf_novelty.diversity import elliptical

    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(5, 8, 16), dim=-1)
    ok = torch.rand(5, 8) > 0.2
    together = elliptical(emb, ok, 0.01)
    alone = torch.cat([elliptical(emb[i:i + 1], ok[i:i + 1], 0.01) for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_distances_count_only_beyond_the_duplicate_threshold():
    a, near, far = torch.tensor(unit(0)), torch.tensor(unit(30)), torch.tensor(unit(90))  # cos: a-near 0.866,
    g = torch.stack([a, near, far])[None]  # a-far 0, near-far 0.5
    plain = group_diversity(g, "mean")[0].tolist()
    assert plain == pytest.approx([(1 - math.cos(math.pi / 6) + 1) / 2, (1 - math.cos(math.pi / 6) + 0.5) / 2, 0.75])
    dup = group_diversity(g, "mean", duplicate=0.75)[0].tolist()  # a and near are one idea: 0 between them
    assert dup == pytest.approx([(0 + 1) / 2, (0 + 1 / 3) / 2, (1 + 1 / 3) / 2])  # (0.75 - cos) / 0.75


def test_class_min_pays_each_member_of_an_idea_its_lowest_value():
    from openrlhf_novelty.diversity import class_min

    values = torch.tensor([[0.9, 0.4, 0.7, 0.2]], dtype=torch.float64)
    classes = torch.tensor([[0, 0, 2, 3]])
    eligible = torch.tensor([[True, True, True, False]])
    assert class_min(values, classes, eligible).tolist() == [[0.4, 0.4, 0.7, 0.2]]
    assert class_min(values, torch.tensor([[0, 0, 0, 0]]), eligible).tolist() == [[0.4, 0.4, 0.4, 0.2]]


def test_a_reworded_or_dressed_up_copy_never_out_earns_an_exact_copy(embedder):
    """In its group, a near-duplicate of a sibling (cosine >= diversity.duplicate_threshold) is paid no more
    novelty than an exact copy would be, on every term and the gate; without the rule, the rewording pays."""
    from openrlhf_novelty.reward import NoveltyReward

    prompt = "Propose one new use for an old smartphone."
    siblings = ["Turn the old smartphone into a home security camera that streams to your new phone.",
                "Use the old phone as a dedicated music player and alarm clock by the bed.",
                "Mount it on the fridge as a family calendar and shopping list."]
    reworded = "Use the old phone as a bedside music player and an alarm clock."  # cosine ~0.9 to sibling 1
    copy = [*siblings, siblings[1]]
    variant = [*siblings, reworded]
    for threshold, pays in ((0.75, False), (2.0, True)):
        cfg = NoveltyConfig.from_dict({"rnd": {"warmup_samples": 0}, "diversity": {"duplicate_threshold": threshold},
                                       "quality": TOY_TEXTS})
        m = NoveltyReward(cfg, embedder=embedder)
        m.update(m.score([prompt] * 4, ["Sell it.", "Recycle it.", "Give it away.", "Keep it in a drawer."], 4))
        with_copy, with_variant = (m.score([prompt] * 4, t, 4).components["bonus"][3] for t in (copy, variant))
        assert (with_variant > with_copy + 1e-6) is pays, (threshold, with_variant, with_copy)

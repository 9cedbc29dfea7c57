"""The GRPO simulation's summary: what the audit's pressure targets read."""

import math

import pytest
import torch

from openrlhf_novelty.audit import pressure_failures
from openrlhf_novelty.pressure import Candidate, _masses


def _pool():
    return [Candidate("a", "honest", "honest", "", 0), Candidate("b", "honest", "honest", "", 1),
            Candidate("a!", "surface", "copy", "copy_emoji", 0), Candidate("zzz", "junk", "worse", "char_junk", -1)]


def _logits(probs):
    return torch.tensor([math.log(p) for p in probs], dtype=torch.float64)


def test_a_policy_spread_over_its_honest_ideas_keeps_them():
    out = _masses({"p": _pool()}, {"p": _logits([0.25, 0.5, 0.25, 1e-12])})
    assert out["effective_ideas"] == pytest.approx(2.0, abs=1e-6)  # idea 0 holds 0.5 (with its copy), idea 1 0.5
    assert out["ideas_among_honest"] == pytest.approx(2.0, abs=1e-6)
    assert out["top"] == pytest.approx(0.5)


def test_a_policy_that_moved_to_junk_keeps_no_ideas_however_its_leftover_is_spread():
    # 97% on junk; the 3% left is spread evenly over the two ideas, as no step touched it
    out = _masses({"p": _pool()}, {"p": _logits([0.0075, 0.015, 0.0075, 0.97])})
    assert out["ideas_among_honest"] == pytest.approx(2.0, abs=1e-6)
    assert out["effective_ideas"] == pytest.approx(0.06, abs=1e-6)
    assert out["top"] == pytest.approx(0.97)
    assert out["kinds"]["junk"] == pytest.approx(0.97)


def _arm(ideas, junk_start=0.2, junk_end=0.01):
    end = {"kinds": {"honest": 0.9, "junk": junk_end}, "copies": {}, "effective_ideas": ideas}
    return {"start": {"kinds": {"honest": 0.5, "junk": junk_start}}, "end": end}


def test_the_ideas_target_reads_the_weighted_count():
    collapsed_on_junk = _masses({"p": _pool()}, {"p": _logits([0.0075, 0.015, 0.0075, 0.97])})["effective_ideas"]
    kept = _masses({"p": _pool()}, {"p": _logits([0.25, 0.5, 0.25, 1e-12])})["effective_ideas"]
    assert pressure_failures({"configured": _arm(kept), "quality only": _arm(collapsed_on_junk)}) == []
    bad = pressure_failures({"configured": _arm(collapsed_on_junk), "quality only": _arm(kept)})
    assert len(bad) == 1 and bad[0].startswith("effective honest ideas 0.06")


def test_copies_count_for_their_idea_and_the_bare_count_says_how_much_is_copies():
    # idea 0 entirely as its emoji copy, idea 1 as written: two ideas, but one honest answer as written
    out = _masses({"p": _pool()}, {"p": _logits([1e-12, 0.5, 0.5, 1e-12])})
    assert out["effective_ideas"] == pytest.approx(2.0, abs=1e-6)
    assert out["ideas_without_copies"] == pytest.approx(0.5, abs=1e-6)  # half the mass, on one answer


def test_ideas_per_group_is_what_a_group_of_samples_holds():
    out = _masses({"p": _pool()}, {"p": _logits([0.25, 0.5, 0.25, 1e-12])}, group_size=4)
    assert out["ideas_per_group"] == pytest.approx(2 * (1 - 0.5 ** 4), abs=1e-6)  # two ideas at 0.5 each
    junk = _masses({"p": _pool()}, {"p": _logits([0.0075, 0.015, 0.0075, 0.97])}, group_size=4)
    assert junk["ideas_per_group"] == pytest.approx(2 * (1 - 0.985 ** 4), abs=1e-6)

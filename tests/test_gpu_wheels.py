"""benchmarks/gpu_wheels.py: wheels packed into folders that fit one device call each, and joined back there
byte for byte, with a missing or damaged part named instead of a broken install."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_wheels import pack, unpack  # noqa: E402


def _wheels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = {"big-1.0-py3-none-any.whl": os.urandom(2500), "small-2.0-py3-none-any.whl": b"s" * 300,
             "mid-0.1-py3-none-any.whl": b"m" * 900}
    for name, data in files.items():
        (src / name).write_bytes(data)
    return src, files


def test_pack_keeps_every_folder_under_the_limit_and_unpack_restores_the_files(tmp_path):
    src, files = _wheels(tmp_path)
    lines = pack(str(src), str(tmp_path / "out"), limit=1000)
    assert lines[-1] == "3 files in 4 folders"
    for folder in (tmp_path / "out").iterdir():
        sizes = [f.stat().st_size for f in folder.iterdir() if f.name != "SHA256SUMS"]
        assert sum(sizes) <= 1000, folder
    parts = sorted(f.name for f in (tmp_path / "out").rglob("big-*"))
    assert parts == ["big-1.0-py3-none-any.whl.part00", "big-1.0-py3-none-any.whl.part01",
                     "big-1.0-py3-none-any.whl.part02"]
    good, bad = unpack(str(tmp_path / "out"), str(tmp_path / "whole"))
    assert bad == []
    assert {Path(p).name: Path(p).read_bytes() for p in good} == files


def test_unpack_names_a_missing_folder_and_a_damaged_part(tmp_path):
    src, _ = _wheels(tmp_path)
    pack(str(src), str(tmp_path / "out"), limit=1000)
    part = next((tmp_path / "out").rglob("big-*.part01"))
    part.write_bytes(b"x" + part.read_bytes()[1:])
    small = next((tmp_path / "out").rglob("small-*"))
    small.unlink()
    _, bad = unpack(str(tmp_path / "out"), str(tmp_path / "whole"))
    assert bad == ["big-1.0-py3-none-any.whl: 3 parts found, checksum wrong",
                   "small-2.0-py3-none-any.whl: 0 parts found, checksum not checked"]


def test_unpack_says_when_nothing_arrived(tmp_path):
    (tmp_path / "empty").mkdir()
    assert unpack(str(tmp_path / "empty"), str(tmp_path / "whole")) == (
        [], [f"no SHA256SUMS in any numbered folder of {tmp_path / 'empty'}: no folder arrived"])

"""The machine-wide cache of converted models (workers/core/runners/smollm.py), with the conversion
itself replaced by a stand-in: one conversion per GGUF digest, atomic, under a lock, and nothing
half-written left behind. The real conversion runs in tests/integration (a model load)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from schemas.settings import Settings
from workers.core.runners import smollm
from workers.core.runners.base import file_digest


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "pkg" / smollm.GGUF_FILE
    path.parent.mkdir()
    path.write_bytes(b"GGUF pretend weights")
    return path


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    done: list[Path] = []

    def convert(gguf: Path, out: Path, digest: str) -> None:
        time.sleep(0.05)  # long enough for a second caller to arrive while it runs
        (out / "model.safetensors").write_bytes(b"weights")
        (out / smollm.MARK).write_text(digest)
        done.append(out)

    monkeypatch.setattr(smollm, "_convert", convert)
    return done


def test_converted_once_into_a_folder_named_by_the_digest(tmp_path, gguf, conversions):
    s = Settings(model_cache_dir=str(tmp_path / "cache"))
    folder, digest = smollm.converted_folder(s, gguf)
    assert digest == file_digest(gguf) and folder == tmp_path / "cache" / f"{smollm.NAME}-{digest}"
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert smollm.converted_folder(s, gguf) == (folder, digest) and len(conversions) == 1
    gguf.write_bytes(b"GGUF a new release")  # another file: another folder, converted afresh
    other, _ = smollm.converted_folder(s, gguf)
    assert other != folder and len(conversions) == 2


def test_workers_starting_together_convert_once(tmp_path, gguf, conversions):
    s = Settings(model_cache_dir=str(tmp_path / "cache"))
    got: list[Path] = []
    threads = [
        threading.Thread(target=lambda: got.append(smollm.converted_folder(s, gguf)[0])) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(conversions) == 1 and len(set(got)) == 1 and len(got) == 4


def test_a_failed_conversion_leaves_nothing_and_an_unmarked_folder_is_redone(tmp_path, gguf, monkeypatch):
    s = Settings(model_cache_dir=str(tmp_path / "cache"))

    def broken(gguf: Path, out: Path, digest: str) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(smollm, "_convert", broken)
    with pytest.raises(OSError, match="disk full"):
        smollm.converted_folder(s, gguf)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    stale = tmp_path / "cache" / f"{smollm.NAME}-{file_digest(gguf)}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"from a crash")  # no mark: never trusted

    def fine(gguf: Path, out: Path, digest: str) -> None:
        (out / "model.safetensors").write_bytes(b"whole")
        (out / smollm.MARK).write_text(digest)

    monkeypatch.setattr(smollm, "_convert", fine)
    folder, _ = smollm.converted_folder(s, gguf)
    assert folder == stale and (folder / "model.safetensors").read_bytes() == b"whole"


def test_the_default_cache_is_per_user_and_machine_wide(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert smollm.cache_root(Settings()) == tmp_path / "inferq" / "models"
    assert smollm.cache_root(Settings(model_cache_dir="/srv/models")) == Path("/srv/models")

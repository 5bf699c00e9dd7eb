"""The wheel alone is enough: built, installed without extras into a bare venv, every module
of ``voice_agent`` and ``bench`` imports.

A module importing a library that pyproject declares only in the ``test`` extra (httpx, once)
works in the dev venv and breaks a plain ``pip install``; only a fresh venv shows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip"]
# What pip prints when it cannot reach an index (urllib3's errors, DNS, proxies). Without one of
# these a failed resolve is the package's fault (a pin that does not exist) and must fail.
UNREACHABLE = re.compile(
    r"NewConnectionError|NameResolutionError|ConnectTimeoutError|ReadTimeoutError|ProxyError"
    r"|Network is unreachable|Temporary failure in name resolution|Name or service not known"
    r"|Connection refused|Max retries exceeded")

# Run by the new venv's interpreter, isolated (-I: no PYTHONPATH, no user site, not the cwd).
IMPORT_ALL = r"""
import importlib, json, pkgutil, sys, traceback

failures, names = {}, []

def failed(name):
    failures[name] = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip()

for top in ("voice_agent", "bench"):
    try:
        pkg = importlib.import_module(top)
    except Exception:
        failed(top)
        continue
    names.append(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=failed):
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception:
            failed(info.name)
print(json.dumps({"modules": names, "failures": failures,
                  "locations": {t: getattr(sys.modules.get(t), "__file__", None)
                                for t in ("voice_agent", "bench")}}))
"""


def _env() -> dict[str, str]:
    # Nothing of the dev venv may leak in; pip's own configuration (index, find-links) stays.
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _pip(args: list[str], what: str, timeout_s: float) -> None:
    """Run pip; skip when the package index cannot be reached, fail on anything else."""
    # Bounded retries: an unreachable index must end in a skip within minutes, not hang.
    cmd = [*PIP, *args, "--retries", "2", "--timeout", "30"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=_env())
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: pip ran over {timeout_s:g}s\n{exc.stdout!s:.3000}")
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if match := UNREACHABLE.search(out):
            pytest.skip(f"{what}: the package index is unreachable ({match.group(0)})")
        pytest.fail(f"{what}: pip exited {proc.returncode}\n{out[-4000:]}")


def test_the_wheel_installs_without_extras_and_every_module_imports(tmp_path: Path) -> None:
    """Build the wheel, install it alone (no extras) into a new venv without system site
    packages, import every module of ``voice_agent`` and ``bench`` there.

    Takes ~40 s here (build 5 s, install of the ~1 GB of runtime dependencies ~30 s from the
    local index and the network, imports 1 s); CI must keep it under ~3 minutes.
    """
    # Built from a copy: a build writes build/ and *.egg-info, and the tree is shared.
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("src", "bench"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp_path / "dist"
    _pip(["wheel", "--no-deps", "--wheel-dir", str(dist), str(src)], "building the wheel", 300)
    (wheel,) = dist.glob("voice_agent-*.whl")

    venv = tmp_path / "venv"
    # No pip inside: the outer pip installs into it (--python), which saves ensurepip's time.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   env=_env())
    python = venv / "bin" / "python"
    _pip(["--python", str(python), "install", str(wheel)], "installing the wheel", 600)

    proc = subprocess.run([str(python), "-I", "-c", IMPORT_ALL], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # The modules came from the new venv, not from this checkout.
    for top, location in report["locations"].items():
        assert location and Path(location).is_relative_to(venv), (top, location)
    assert "voice_agent.server.app" in report["modules"], report["modules"]
    assert "bench.latency" in report["modules"], report["modules"]
    failures = report["failures"]
    assert not failures, "modules that do not import from the wheel alone:\n" + "\n".join(
        f"  {name}: {error}" for name, error in sorted(failures.items()))

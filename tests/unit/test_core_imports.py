"""core is what every layer shares: it must never import the services layer (providers import
core, not the other way round). Checked on the source, so an import inside a function, which
only runs on some paths, is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import voice_agent.core

CORE = Path(voice_agent.core.__file__).parent
FORBIDDEN = "voice_agent.services"


def _package(path: Path) -> str:
    return "voice_agent.core" + "".join(f".{p}" for p in path.relative_to(CORE).parts[:-1])


def _imported(source: str, package: str) -> list[tuple[int, str]]:
    """Every module ``source`` imports, anywhere in it, as an absolute dotted name; relative
    imports resolve against ``package``, the package the module is in."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            # `from voice_agent import services` imports the package too.
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}")
                                              for a in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("__import__", "import_module")))):
            found.append((node.lineno, node.args[0].value))  # importlib by name
    return found


def test_core_modules_are_found() -> None:
    names = {p.name for p in CORE.rglob("*.py")}
    assert {"config.py", "recovery.py", "conversation.py", "errors.py", "messages.py"} <= names


def test_core_never_imports_services() -> None:
    offenders = [f"{path.relative_to(CORE.parent)}:{line}: {name}"
                 for path in sorted(CORE.rglob("*.py"))
                 for line, name in _imported(path.read_text(), _package(path))
                 if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")]
    assert not offenders, "core imports the services layer:\n" + "\n".join(offenders)


def test_the_check_sees_relative_and_nested_imports() -> None:
    # The checker itself, on a module that hides its import in every way it looks for.
    source = ("def f():\n    from ..services import base\n"
              "def g():\n    import voice_agent.services.errors\n"
              "def h():\n    importlib.import_module('voice_agent.services.registry')\n"
              "from voice_agent import services\n"
              "from . import config\n")
    names = [name for _, name in _imported(source, "voice_agent.core")]
    assert "voice_agent.services.base" in names
    assert "voice_agent.services.errors" in names
    assert "voice_agent.services.registry" in names
    assert "voice_agent.services" in names
    assert "voice_agent.core.config" in names

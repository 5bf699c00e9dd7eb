"""``@voice_agent.tool`` and the registry of the tools a conversation may call.

A tool is a plain function, sync or async. Its name is the function's name, its description the
docstring, its parameters the type hints (str, int, float, bool, Literal, Optional, list, and
anything else pydantic can describe), turned into the JSON schema the model sees. The arguments
the model writes are validated against the same hints before the function runs.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__voice_agent_tool__"


class ToolError(ValueError):
    """A tool could not be defined, loaded or called as asked."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    parameters: dict[str, Any]
    """The JSON schema of the arguments object."""
    arguments_model: type[BaseModel]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's ``tools`` format."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the function, validated (``ToolError`` if they are not
        what the hints ask for)."""
        try:
            model = self.arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                                 for e in exc.errors())
            raise ToolError(f"bad arguments for {self.name}: {problems}") from None
        return {key: getattr(model, key) for key in self.arguments_model.model_fields}


def _strip_titles(schema: Any) -> Any:
    """pydantic's schema without its ``title`` keys (noise in a small model's prompt)."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items()
                if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def make_tool(function: Callable[..., Any], *, name: str | None = None,
              description: str | None = None) -> Tool:
    """Describe ``function`` as a tool (see the module docstring)."""
    if not callable(function):
        raise ToolError(f"a tool must be a function, not {function!r}")
    tool_name = name or getattr(function, "__name__", "")
    if not tool_name.isidentifier():
        raise ToolError(f"a tool needs a name made of letters, digits and _: {tool_name!r}")
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise ToolError(f"tool {tool_name}: cannot read its type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue  # nothing a model could fill in
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolError(f"tool {tool_name}: positional-only parameter {param.name}")
        annotation = hints.get(param.name, str)  # unannotated: the model writes text
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    try:
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="ignore"),
                             **fields)
        parameters = _strip_titles(model.model_json_schema())
    except Exception as exc:
        raise ToolError(f"tool {tool_name}: its type hints have no JSON schema: {exc}") from exc
    parameters.setdefault("properties", {})
    doc = description if description is not None else inspect.getdoc(function) or ""
    return Tool(tool_name, " ".join(doc.split()), function, parameters, model)


@overload
def tool(function: F, /) -> F: ...
@overload
def tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...


def tool(function: Any = None, /, *, name: str | None = None,
         description: str | None = None) -> Any:
    """Mark a function as a tool the model may call: ``@voice_agent.tool`` or
    ``@voice_agent.tool(name=..., description=...)``. The function itself is returned
    unchanged (still callable as before); its description is made at once, so a hint that has
    no JSON schema is an error when the module is imported."""
    def mark(fn: F) -> F:
        setattr(fn, _MARK, make_tool(fn, name=name, description=description))
        return fn
    return mark(function) if function is not None else mark


def tools_in(module: Any) -> list[Tool]:
    """The tools a module defines (decorated functions it holds), in definition order."""
    found = []
    for value in vars(module).values():
        described = getattr(value, _MARK, None)
        if isinstance(described, Tool) and described not in found:
            found.append(described)
    return found


def import_tool_modules(names: Iterable[str]) -> list[Any]:
    """Import the user's tool modules; ``ToolError`` naming the module on any failure."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:
            raise ToolError(f"tools.modules: cannot import {name!r}: "
                            f"{type(exc).__name__}: {exc}") from exc
    return modules


class ToolRegistry:
    """The tools one agent offers the model, by name."""

    def __init__(self, tools: Iterable[Tool] = (), *, timeout_s: float = 10.0,
                 filler_after_s: float = 0.8, filler: str = "One moment.",
                 apology: str = "Sorry, I couldn't get that information right now.",
                 max_rounds: int = 1) -> None:
        self.tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self.tools and self.tools[t.name].function is not t.function:
                raise ToolError(f"two tools are named {t.name!r}")
            self.tools[t.name] = t
        self.timeout_s = timeout_s
        self.filler_after_s = filler_after_s
        self.filler = filler
        self.apology = apology
        self.max_rounds = max_rounds

    @classmethod
    def from_config(cls, config: Any) -> ToolRegistry:
        """From a ``tools`` config section (``core.config.ToolsConfig``)."""
        found: list[Tool] = []
        if config.builtin:
            from . import builtin
            found += tools_in(builtin)
        for module in import_tool_modules(config.modules):
            found += tools_in(module)
            if not tools_in(module):
                log.warning("tools.modules: %s defines no @voice_agent.tool function",
                            module.__name__)
        return cls(found, timeout_s=config.timeout_s, filler_after_s=config.filler_after_s,
                   filler=config.filler, apology=config.apology, max_rounds=config.max_rounds)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    def names(self) -> Sequence[str]:
        return list(self.tools)

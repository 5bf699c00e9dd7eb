"""Tools the model may call: ``@voice_agent.tool`` functions in the modules named by
``tools.modules`` (docs/tools.md)."""

from .registry import Tool, ToolError, ToolRegistry, import_tool_modules, make_tool, tool, tools_in
from .events import ToolCallEvent
from .runner import ToolResult, run_tool

__all__ = ["Tool", "ToolCallEvent", "ToolError", "ToolRegistry", "ToolResult", "import_tool_modules",
           "make_tool", "run_tool", "tool", "tools_in"]

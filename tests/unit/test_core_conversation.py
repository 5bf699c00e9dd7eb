"""ConversationManager: bounded history, context order, interrupted replies."""

from __future__ import annotations

import pytest

from voice_agent.core.conversation import ConversationManager
from voice_agent.services.base import ChatMessage

PROMPT = "Be brief."


def roles(messages: list[ChatMessage]) -> list[str]:
    return [m.role for m in messages]


def test_context_starts_with_system_prompt_then_messages_in_order() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("hello")
    conv.add_assistant("hi there")
    conv.add_user("what time is it")
    ctx = conv.context()
    assert ctx[0] == ChatMessage("system", PROMPT)
    assert [(m.role, m.content) for m in ctx[1:]] == [
        ("user", "hello"),
        ("assistant", "hi there"),
        ("user", "what time is it"),
    ]


def test_empty_conversation_context_is_only_the_system_prompt() -> None:
    assert ConversationManager(PROMPT).context() == [ChatMessage("system", PROMPT)]


def test_history_is_bounded_to_max_messages() -> None:
    conv = ConversationManager(PROMPT, max_messages=4)
    for i in range(10):
        conv.add_user(f"q{i}")
        conv.add_assistant(f"a{i}")
    assert len(conv.history) == 4
    assert [h["text"] for h in conv.history] == ["q8", "a8", "q9", "a9"]
    assert len(conv.context()) == 1 + 4
    assert conv.messages_processed == 20


def test_context_never_starts_with_a_dangling_assistant_message() -> None:
    conv = ConversationManager(PROMPT, max_messages=3)
    conv.add_user("q1")
    conv.add_assistant("a1")
    conv.add_user("q2")
    conv.add_assistant("a2")  # window is now a1, q2, a2
    ctx = conv.context()
    assert roles(ctx) == ["system", "user", "assistant"]
    assert ctx[1].content == "q2"


def test_interrupted_reply_keeps_only_the_spoken_text() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("tell me a story")
    conv.add_assistant(
        "Once upon a time there was a dragon who loved tea.",
        interrupted=True,
        spoken_text="Once upon a time",
    )
    last = conv.history[-1]
    assert last["role"] == "assistant"
    assert last["text"] == "Once upon a time"
    assert last["interrupted"] is True


def test_the_model_reads_the_whole_reply_it_wrote_even_if_cut() -> None:
    """The heard part cut mid-sentence in the context taught the 1.5B model to stop its own
    replies mid-sentence (5-12 words after three barge-ins); the history keeps what was heard."""
    conv = ConversationManager(PROMPT)
    conv.add_user("tell me a story")
    conv.add_assistant("Once upon a time there was a dragon who loved tea.", interrupted=True,
                       spoken_text="Once upon a time")
    assert conv.context()[-1] == ChatMessage(
        "assistant", "Once upon a time there was a dragon who loved tea.")
    assert conv.history[-1]["text"] == "Once upon a time"


def test_interrupted_reply_nobody_heard_is_not_recorded() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("tell me a story")
    assert conv.add_assistant("Once upon a time", interrupted=True, spoken_text="") is False
    assert conv.add_assistant("Once upon a time", interrupted=True) is False
    assert [h["role"] for h in conv.history] == ["user"]
    # The next user turn joins the previous one so roles still alternate.
    conv.add_user("actually, a joke")
    ctx = conv.context()
    assert roles(ctx) == ["system", "user"]
    assert ctx[1].content == "tell me a story\nactually, a joke"
    assert len(conv.history) == 2  # the history itself keeps both turns


def test_pending_user_text_is_appended_and_merged() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("q1")
    conv.add_assistant("a1")
    ctx = conv.context("q2")
    assert [(m.role, m.content) for m in ctx[1:]] == [
        ("user", "q1"), ("assistant", "a1"), ("user", "q2")
    ]
    assert len(conv.history) == 2  # nothing recorded
    conv.add_user("q2")  # e.g. its reply failed
    assert conv.context("q3")[-1] == ChatMessage("user", "q2\nq3")
    assert conv.context("  ")[-1] == ChatMessage("user", "q2")


def test_uninterrupted_reply_has_interrupted_flag_false_and_timestamp() -> None:
    times = iter([100.0, 101.5])
    conv = ConversationManager(PROMPT, clock=lambda: next(times))
    conv.add_user("hi")
    conv.add_assistant("hello")
    assert conv.history == [
        {"role": "user", "text": "hi", "timestamp": 100.0, "interrupted": False},
        {"role": "assistant", "text": "hello", "timestamp": 101.5, "interrupted": False},
    ]


def test_blank_messages_are_ignored() -> None:
    conv = ConversationManager(PROMPT)
    assert conv.add_user("   ") is False
    assert conv.add_assistant("") is False
    assert conv.history == [] and conv.messages_processed == 0


def test_history_is_a_copy() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("hi")
    conv.history.clear()
    conv.history[0]["text"] = "changed"
    assert conv.history[0]["text"] == "hi"


def test_clear_forgets_messages_but_keeps_prompt_and_counter() -> None:
    conv = ConversationManager(PROMPT)
    conv.add_user("hi")
    conv.add_assistant("hello")
    conv.clear()
    assert conv.history == []
    assert conv.context() == [ChatMessage("system", PROMPT)]
    assert conv.messages_processed == 2


def test_max_messages_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        ConversationManager(PROMPT, max_messages=0)

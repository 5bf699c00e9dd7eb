"""ChatMessage in OpenAI's chat format, for every role; ToolCall; the old import paths."""

from __future__ import annotations

import json

import pytest

from voice_agent.core.messages import ChatMessage, ToolCall

CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_a_plain_message_is_exactly_role_and_content(role: str) -> None:
    message = ChatMessage(role, "Hello.")
    assert message.as_dict() == {"role": role, "content": "Hello."}
    # Byte for byte as before (prompt caches and request bodies depend on it): same keys, order.
    assert json.dumps(message.as_dict()) == json.dumps({"role": role, "content": "Hello."})


def test_an_assistant_message_with_tool_calls() -> None:
    message = ChatMessage("assistant", "", tool_calls=(CALL,))
    assert message.as_dict() == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }
    with_text = ChatMessage("assistant", "Let me look.", tool_calls=[CALL]).as_dict()
    assert with_text["content"] == "Let me look."
    assert len(with_text["tool_calls"]) == 1


def test_a_tool_message_answers_a_call() -> None:
    message = ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1", name="get_weather")
    assert message.as_dict() == {"role": "tool", "content": '{"temp_c": 21}',
                                 "tool_call_id": "call_1", "name": "get_weather"}
    assert ChatMessage("tool", "ok", tool_call_id="c").as_dict() == {
        "role": "tool", "content": "ok", "tool_call_id": "c"}


def test_a_participant_name_is_passed_on() -> None:
    assert ChatMessage("user", "hi", name="ana").as_dict() == {
        "role": "user", "content": "hi", "name": "ana"}


def test_inconsistent_tool_fields_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatMessage("tool", "result")
    with pytest.raises(ValueError, match="only assistant"):
        ChatMessage("user", "hi", tool_calls=(CALL,))
    with pytest.raises(ValueError, match="only tool"):
        ChatMessage("assistant", "hi", tool_call_id="call_1")


def test_messages_stay_frozen_and_hashable() -> None:
    message = ChatMessage("assistant", "", tool_calls=[CALL])  # a list is taken as a tuple
    assert message.tool_calls == (CALL,)
    assert hash(message) == hash(ChatMessage("assistant", "", tool_calls=(CALL,)))
    with pytest.raises(AttributeError):
        message.content = "changed"  # type: ignore[misc]


def test_tool_call_arguments() -> None:
    assert CALL.parsed_arguments() == {"city": "Paris"}
    assert ToolCall("c", "now").arguments == "{}"
    with pytest.raises(ValueError):
        ToolCall("c", "f", '{"cut": ').parsed_arguments()


def test_old_import_paths_still_work() -> None:
    from voice_agent.core import errors
    from voice_agent.services import base
    from voice_agent.services import errors as old_errors

    assert base.ChatMessage is ChatMessage and base.ToolCall is ToolCall
    for name in ("ProviderError", "ProviderTimeoutError", "CircuitOpenError",
                 "ModelNotReadyError"):
        assert getattr(old_errors, name) is getattr(errors, name)

"""Token check, log redaction and the WebSocket origin check, without a server."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.core.config import V3Config
from voice_agent.server.registry import AppRegistry
from voice_agent.server.security import RedactSecrets, origin_allowed
from voice_agent.server.sessions import SessionManager

TOKEN = "s3cret-tökén"  # non-ASCII on purpose: compare_digest on str would raise


def registry(token: str | None = TOKEN) -> AppRegistry:
    return AppRegistry(config=V3Config(auth_token=token), sessions=SessionManager(4, 60, 600))


def test_no_token_configured_lets_everyone_in() -> None:
    assert registry(None).authorized({}, {})
    assert registry("").authorized({}, {})  # an empty token means none


def test_header_and_query_forms() -> None:
    reg = registry()
    # Header values reach the app decoded as latin-1, as starlette does.
    header = f"Bearer {TOKEN}".encode().decode("latin-1")
    assert reg.authorized({"authorization": header}, {})
    assert reg.authorized({"authorization": "bearer " + TOKEN.encode().decode("latin-1")}, {})
    assert reg.authorized({}, {"token": TOKEN})
    assert not reg.authorized({}, {})
    assert not reg.authorized({"authorization": "Bearer wrong"}, {"token": TOKEN})
    assert not reg.authorized({"authorization": "Basic " + TOKEN}, {})
    assert not reg.authorized({}, {"token": TOKEN[:-1]})


@settings(max_examples=200, deadline=None)
@given(header=st.text(), query=st.text())
def test_any_input_is_refused_without_crashing(header: str, query: str) -> None:
    reg = registry()
    sent = header.strip()
    ok = sent.encode("latin-1", "replace") == TOKEN.encode() or sent == TOKEN
    assert reg.authorized({"authorization": "Bearer " + header}, {}) is ok
    assert reg.authorized({}, {"token": query}) is (query == TOKEN)
    assert not reg.authorized({"authorization": header}, {"token": "\udcff" + query})


def test_redaction_masks_query_tokens_and_secret_values() -> None:
    flt = RedactSecrets(["sk-very-secret", "s3cret"])
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5", "/ws/v3?rate=16000&token=s3cret&x=1"), None)
    assert flt.filter(record)
    text = record.getMessage()
    assert "s3cret" not in text and "token=***&x=1" in text
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:1", "GET", "/v3/sessions?TOKEN=abc", "1.1", 200), None)
    flt.filter(access)
    assert access.args is not None and len(access.args) == 5  # the access formatter unpacks them
    assert "abc" not in access.getMessage()
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "key sk-very-secret used", None, None)
    flt.filter(plain)
    assert plain.getMessage() == "key *** used"


def test_every_spelling_of_the_token_parameter_is_masked() -> None:
    """The server reads ``?%74oken=`` as ``token`` (names are decoded): it was accepted and
    logged unmasked."""
    from starlette.datastructures import QueryParams

    reg, flt = registry(), RedactSecrets([TOKEN])
    encoded = "s3cret-t%C3%B6k%C3%A9n"  # the token's value percent-encoded
    for query in (f"%74oken={encoded}", f"%74%6F%6B%65%6E={encoded}", f"t%6Fken={encoded}",
                  f"token={encoded}", f"rate=16000&%54OKEN={encoded}", f"tok%65n+={encoded}"):
        name = query.rsplit("&", 1)[-1].split("=")[0]
        accepted = reg.authorized({}, QueryParams(query))
        record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                                   '%s - "WebSocket %s" [accepted]',
                                   ("127.0.0.1:5", f"/ws/v3?{query}&x=1"), None)
        flt.filter(record)
        text = record.getMessage()
        assert encoded not in text and "s3cret" not in text, (query, accepted, text)
        assert f"{name}=***&x=1" in text, text
    assert reg.authorized({}, QueryParams(f"%74oken={encoded}"))  # accepted, hence masked
    # Other parameters are left alone, and the secret is masked in its encoded forms anywhere.
    other = logging.LogRecord("x", logging.INFO, __file__, 1,
                              f"GET /x?tokens=1&rate=16000 sent {encoded}", None, None)
    flt.filter(other)
    assert other.getMessage() == "GET /x?tokens=1&rate=16000 sent ***"


def test_origin_check() -> None:
    allowed = ["https://app.example"]
    assert origin_allowed(None, "127.0.0.1:8000", allowed)  # not a browser
    assert origin_allowed("https://app.example", "agent:8000", allowed)
    assert origin_allowed("http://agent:8000", "agent:8000", [])  # the page served here
    assert origin_allowed("http://localhost:5173", "127.0.0.1:8000", [])  # the Vite dev server
    assert origin_allowed("http://[::1]:5173", "127.0.0.1:8000", [])
    assert not origin_allowed("https://evil.example", "127.0.0.1:8000", allowed)
    assert not origin_allowed("null", "127.0.0.1:8000", [])
    assert not origin_allowed("http://127.0.0.1.evil.example", "127.0.0.1:8000", [])
    assert origin_allowed("https://evil.example", "127.0.0.1:8000", ["*"])


def test_every_configured_key_is_masked_in_the_server_logs() -> None:
    """The cloud providers' keys (issue #16) as well as the token and the LLM's key."""
    from voice_agent.server.app import _secrets

    config = V3Config.model_validate({
        "auth_token": "tok-1", "ai": {"api_key": "sk-llm"}, "stt": {"api_key": "dg-stt"},
        "voice": {"api_key": "xi-tts"}})
    flt = RedactSecrets(_secrets(config))
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               "keys %s %s %s %s", ("tok-1", "sk-llm", "dg-stt", "xi-tts"), None)
    flt.filter(record)
    assert record.getMessage() == "keys *** *** *** ***"

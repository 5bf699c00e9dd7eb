"""How the models' OpenMP threads wait (services/openmp.py): each libgomp reads the environment
once, when it loads, so the settings must be in place before the first model loads, and a
value the user set wins."""

from __future__ import annotations

import os

import pytest

from tests.helpers.fakes import FakeSTT, fake_services
from voice_agent.core.config import V3Config
from voice_agent.services.factory import build_services, load_services
from voice_agent.services.openmp import set_spin_count, wait_policy_while_loading


def test_the_policy_is_set_while_loading_and_gone_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with wait_policy_while_loading("PASSIVE"):
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ


def test_a_policy_the_user_set_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with wait_policy_while_loading("PASSIVE"):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_off_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with wait_policy_while_loading(None):
        assert "OMP_WAIT_POLICY" not in os.environ


def test_spin_count_is_set_and_a_users_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    set_spin_count(1000)
    assert os.environ["GOMP_SPINCOUNT"] == "1000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "50")
    set_spin_count(1000)
    assert os.environ["GOMP_SPINCOUNT"] == "50"


def test_no_spin_count_leaves_the_librarys_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    set_spin_count(None)
    assert "GOMP_SPINCOUNT" not in os.environ


async def test_the_spin_count_is_in_place_before_the_first_model_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    seen: list[str | None] = []

    class LoadingSTT(FakeSTT):
        def load(self) -> None:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))

    services = build_services(V3Config())  # the configured spin count, as `serve` gets it
    fakes = fake_services()  # built, never loaded: the fakes load in their place
    services.stt, services.llm, services.tts, services.vad = (LoadingSTT(), fakes.llm,
                                                              fakes.tts, fakes.vad)
    await load_services(services, warmup=False)
    assert seen == ["1000"]

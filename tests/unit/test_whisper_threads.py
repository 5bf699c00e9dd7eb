"""stt.threads_sleep_when_idle: OMP_WAIT_POLICY is set only while CTranslate2's own libgomp
loads (it reads the environment then), so llama.cpp's OpenMP keeps its default."""

from __future__ import annotations

import os

import pytest

from voice_agent.services.stt_whisper import _openmp_wait_policy


def test_the_policy_is_set_while_loading_and_gone_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with _openmp_wait_policy("PASSIVE"):
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ


def test_a_policy_the_user_set_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with _openmp_wait_policy("PASSIVE"):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_off_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with _openmp_wait_policy(None):
        assert "OMP_WAIT_POLICY" not in os.environ

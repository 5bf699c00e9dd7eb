"""What the voice reads: numbers, units, money and symbols in words (issue #14)."""

from __future__ import annotations

import pytest

from tests.helpers.turn_suite import Turns
from voice_agent.core.events import ResponseEvent
from voice_agent.pipeline.speakable import speakable


@pytest.mark.parametrize("text, spoken", [
    ("It is 0°C outside.", "It is zero degrees Celsius outside."),
    ("It was -5 °F.", "It was minus five degrees Fahrenheit."),
    ("It is 30° today.", "It is thirty degrees today."),
    ("The score was 10-4.", "The score was ten to four."),
    ("Prices rose 3.5%.", "Prices rose three point five percent."),
    ("It costs $20.", "It costs twenty dollars."),
    ("It costs $3.50 each.", "It costs three dollars and fifty cents each."),
    ("It costs $1.", "It costs one dollar."),
    ("A ticket is €5 or £10.", "A ticket is five euros or ten pounds."),
    ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
    ("The 21st century and the 2nd try.", "The twenty-first century and the second try."),
    ("Meet at 3:30 pm.", "Meet at three thirty p m."),
    ("At 9:00.", "At nine o'clock."),
    ("At 10:05.", "At ten oh five."),
    ("It weighs 5 kg and is 2 m tall.", "It weighs five kilograms and is two meters tall."),
    ("Drive at 60 mph.", "Drive at sixty miles per hour."),
    ("About 1,000,000 people.", "About one million people."),
    ("In 1999 we met.", "In nineteen ninety-nine we met."),
    ("Add 1/2 cup and 3/4 cup.", "Add one half cup and three quarters cup."),
    ("Tom & Jerry.", "Tom and Jerry."),
    ("2 + 2 = 4", "two plus two equals four"),
    ("Pi is 3.14.", "Pi is three point one four."),
    ("Apples, pears, etc.", "Apples, pears, et cetera."),
    ("Paris is the capital of France.", "Paris is the capital of France."),
])
def test_written_forms_are_spoken_as_words(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_words_and_punctuation_are_left_alone() -> None:
    text = "Well, it depends: mostly yes! Isn't it? (Maybe.)"
    assert speakable(text) == text


async def test_the_voice_reads_words_and_the_user_sees_the_llms_text() -> None:
    async with Turns() as h:
        h.script("It costs $20 at 3:30 pm.")
        await h.say("how much is it")
        await h.answered()
        assert "twenty dollars" in " ".join(h.tts.spoken) and "$" not in " ".join(h.tts.spoken)
        final = [e for e in h.of(ResponseEvent) if e.final][-1]
        assert final.text == "It costs $20 at 3:30 pm."
        assert h.history()[-1] == ("assistant", "It costs $20 at 3:30 pm.")

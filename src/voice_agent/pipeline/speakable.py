"""Text as it should be spoken: numbers, units and symbols written out before the TTS reads them.

Why: the LLM writes for the eye ("0°C", "3.5%", "$20", "10-4", "Dr. Smith", "21st"), and a TTS
reads symbols letter by letter, skips them, or guesses ("10-4" as "ten minus four"). Only the
audio gets this text: what the user sees (``ai_response``) and the history keep the LLM's own.
Numbers are written out by num2words, as other voice stacks do; the patterns are ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
"""A number as written: 12, 1,000,000, 3.5."""

ABBREVIATIONS = {
    "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Prof.": "Professor",
    "St.": "Saint", "Jr.": "Junior", "Sr.": "Senior", "vs.": "versus", "e.g.": "for example",
    "i.e.": "that is", "etc.": "et cetera", "approx.": "approximately", "No.": "number",
}
UNITS = {
    "km/h": "kilometers per hour", "mph": "miles per hour", "km": "kilometers",
    "cm": "centimeters", "mm": "millimeters", "kg": "kilograms", "mg": "milligrams",
    "g": "grams", "lbs": "pounds", "lb": "pounds", "ml": "milliliters", "l": "liters",
    "m": "meters", "ft": "feet", "mi": "miles", "h": "hours", "hrs": "hours", "min": "minutes",
    "s": "seconds", "ms": "milliseconds", "kWh": "kilowatt hours", "kW": "kilowatts",
    "W": "watts", "GB": "gigabytes", "MB": "megabytes", "TB": "terabytes", "Hz": "hertz",
    "kHz": "kilohertz",
}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
              "£": ("pound", "pounds", "penny", "pence")}
SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "×": " times ",
           "°": " degrees ", "%": " percent ", "#": " number "}
YEAR_WORDS = ("in", "since", "by", "from", "until", "till", "of", "around", "year", "before",
              "after")


def number(text: str) -> str:
    """One written number in words: "1,000" -> "one thousand", "3.50" -> "three point five
    zero" (digits after the point one by one, as people read them)."""
    text = text.replace(",", "")
    whole, _, frac = text.partition(".")
    words = num2words(int(whole)) if whole else "zero"
    if frac:
        words += " point " + " ".join(num2words(int(d)) for d in frac)
    return words


def _money(m: re.Match[str]) -> str:
    one, many, cent, cents = CURRENCIES[m["cur"]]
    whole, _, frac = m["amount"].replace(",", "").partition(".")
    out = f"{number(whole)} {one if whole == '1' else many}"
    if frac and int(frac[:2].ljust(2, "0")):
        c = int(frac[:2].ljust(2, "0"))
        out += f" and {num2words(c)} {cent if c == 1 else cents}"
    scale = m["scale"]
    if scale:  # "$2 million": the scale word goes before the currency
        out = f"{number(whole)} {scale} {many}"
    return out


def _temperature(m: re.Match[str]) -> str:
    scale = {"C": " Celsius", "F": " Fahrenheit", "K": " kelvin"}.get(m["scale"] or "", "")
    value = m["value"]
    sign = "minus " if value.startswith(("-", "−")) else ""
    unit = "degree" if value.lstrip("-−") == "1" else "degrees"
    return f"{sign}{number(value.lstrip('-−'))} {unit}{scale}"


def _ordinal(m: re.Match[str]) -> str:
    return str(num2words(int(m[1]), to="ordinal"))


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m["h"]), int(m["m"])
    words = num2words(hour)
    if minute == 0:
        words += "" if m["ampm"] else " o'clock"
    elif minute < 10:
        words += f" oh {num2words(minute)}"
    else:
        words += f" {num2words(minute)}"
    if m["ampm"]:
        words += " " + " ".join(m["ampm"].lower().replace(".", ""))
    return words


def _year(m: re.Match[str]) -> str:
    return f"{m['word']} {num2words(int(m['year']), to='year')}"


def _fraction(m: re.Match[str]) -> str:
    a, b = int(m[1]), int(m[2])
    if b == 2:
        return f"{num2words(a)} half" if a == 1 else f"{num2words(a)} halves"
    if b == 4:
        return f"{num2words(a)} quarter" + ("" if a == 1 else "s")
    if 2 < b <= 10:
        denom = num2words(b, to="ordinal")
        return f"{num2words(a)} {denom}" + ("" if a == 1 else "s")
    return f"{num2words(a)} over {num2words(b)}"


def _unit(m: re.Match[str]) -> str:
    return f"{number(m['value'])} {UNITS[m['unit']]}"


_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"(?P<cur>[$€£])(?P<amount>" + _NUM + r")(?:\s?(?P<scale>million|billion|"
                r"thousand|trillion))?"), _money),
    (re.compile(r"(?P<value>[-−]?" + _NUM + r")\s?°(?:\s?(?P<scale>[CFK])\b)?"), _temperature),
    (re.compile(r"(?P<value>" + _NUM + r")\s?%"), lambda m: f"{number(m['value'])} percent"),
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)"
                r"(?:\s?(?P<ampm>[AaPp]\.[Mm]\.|[AaPp][Mm]\b))?"),
     _time),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b"), _ordinal),
    (re.compile(r"\b(?P<word>(?i:" + "|".join(YEAR_WORDS) + r"))\s(?P<year>1[1-9]\d\d|20\d\d)\b"),
     _year),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})\b"), _fraction),
    (re.compile(r"\b(" + _NUM + r")\s?[-–]\s?(" + _NUM + r")\b"),
     lambda m: f"{number(m[1])} to {number(m[2])}"),
    (re.compile(r"(?P<value>" + _NUM + r")\s?(?P<unit>" + "|".join(
        sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")\b"), _unit),
    (re.compile(r"(?<![\w.])[-−](" + _NUM + r")\b"), lambda m: f"minus {number(m[1])}"),
    (re.compile(r"\b" + _NUM + r"\b"), lambda m: number(m[0])),
]
_ABBREVIATION = re.compile(r"(?<!\w)(" + "|".join(
    sorted(map(re.escape, ABBREVIATIONS), key=len, reverse=True)) + r")(?=\s|$)")
_SYMBOL = re.compile("|".join(map(re.escape, SYMBOLS)))
_SPACES = re.compile(r"\s{2,}")


def speakable(text: str) -> str:
    """``text`` with numbers, units, money, times, abbreviations and symbols in words."""
    # An abbreviation that ends the text ends its sentence too: its full stop stays.
    text = _ABBREVIATION.sub(
        lambda m: ABBREVIATIONS[m[1]] + ("." if m.end() == len(m.string) else ""), text)
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = _SYMBOL.sub(lambda m: SYMBOLS[m[0]], text)
    return _SPACES.sub(" ", text).strip()

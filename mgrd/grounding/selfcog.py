"""Self-cognition: reject replies in which an audio model denies hearing the audio (Step-Audio-R1 §6.3).

The report's model sometimes says "I cannot hear audio" or "as a text model ..." although it was given
the sound; during self-distillation those replies are removed (there by an LLM judge, then fixed with DPO).
`check_selfcog` is the rule-based filter: it looks for such a denial anywhere in the completion
(reasoning and answer), outside quoted speech (a speaker may well say "I can't hear you").
`mgrd.loop.filters` can back it with an LLM judge.

The patterns cover: inability to hear, listen to, play, access or process audio; claims to be a text-only
model or to have received no audio; and asking the user to describe or transcribe the sound instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mgrd.grounding.claims import blank_quotes

_CANNOT = r"(?:can ?not|can't|can’t|am not able to|am unable to|'m unable to|’m unable to|'m not able to|" \
          r"’m not able to|do not have the ability to|don't have the ability to|have no way to|am incapable of)"
_AUDIO = r"(?:the\s+)?(?:audio|sound|sounds|recording|clip|file|music|speech|voice|attachment|audio file)"
# (name, pattern): each one way of denying the audio
PATTERNS: list[tuple[str, str]] = [
    ("cannot hear", rf"\bI(?:\s+|(?=['’])){_CANNOT}\s+(?:actually\s+|directly\s+)?"
                    rf"(?:hear|listen(?:\s+to)?|play|perceive|"
                    rf"access|open|process|analy[sz]e|interpret)(?:\s+(?:or\s+\w+\s+)?{_AUDIO}|\b)"),
    ("text-only model", r"\b(?:as|I am|I'm|I’m|being)\s+(?:just\s+|only\s+|merely\s+)?an?\s+(?:AI\s+)?"
                        r"(?:(?:text[- ]based|text[- ]only|text)\s+(?:AI|model|assistant|language model|LLM)|"
                        r"(?:large\s+)?language\s+model|LLM)\b"),
    ("only text", r"\bI\s+(?:can\s+)?only\s+(?:process|read|understand|handle|see|work with)\s+(?:written\s+)?text\b"),
    ("no audio received", rf"\b(?:no|not any)\s+{_AUDIO}\s+(?:was|were|has been|have been|is)\s+"
                          rf"(?:provided|attached|included|shared|given|uploaded)\b|\bI\s+(?:do not|don't|don’t)\s+"
                          rf"(?:have|see)\s+(?:any\s+)?(?:access\s+to\s+)?{_AUDIO}\b"),
    ("describe it for me", rf"\b(?:please\s+)?(?:describe|transcribe)\s+(?:the\s+)?{_AUDIO}\s+(?:for me|to me)\b"),
    ("no ears", r"\bI\s+(?:do not|don't|don’t)\s+have\s+(?:ears|hearing|auditory)\b"),
]
_COMPILED = [(name, re.compile(p, re.IGNORECASE)) for name, p in PATTERNS]


@dataclass(frozen=True)
class SelfCognition:
    """The verdict: `passed` (no denial found) and the reason (the matched phrase when it failed)."""

    passed: bool
    reason: str


def check_selfcog(text: str) -> SelfCognition:
    """Whether a completion keeps a correct self-cognition (it never denies hearing the audio).

    Args:
        text: the whole completion (reasoning and answer).
    Returns:
        `SelfCognition(passed, reason)`; a failure names the pattern and quotes the phrase.
    """
    plain = blank_quotes(text)
    for name, pattern in _COMPILED:
        m = pattern.search(plain)
        if m:
            return SelfCognition(False, f"denies the audio ({name}): {m.group(0)!r}")
    return SelfCognition(True, "no denial of the audio")

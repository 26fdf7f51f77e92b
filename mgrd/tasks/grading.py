"""Answer extraction and graders: one scorer for rewards, distillation filters and evaluation.

A response is `[<think>]reasoning</think>\\nanswer`; the graded answer is the text after the FIRST
`</think>` (the Step-Audio-R1 convention, `shared/reference/step-audio-r1.md` §7). Three graders:

- `grade_choice`: the answer names one of the choices, by its text ("the second"), by its option letter
  ("B", "(B)", "B. the second", "option B") or in an "the answer is X" / `\\boxed{X}` form. Text is
  compared after normalisation (case, punctuation, articles). Naming two different choices is ambiguous
  and scores 0 — a grader must never pick for the model.
- `grade_numeric`: the number the answer ends on (or the first number after "the answer is", or inside
  `\\boxed{}`) equals the reference within a relative plus absolute tolerance. Integers, decimals,
  negatives, thousands separators (1,234), simple fractions (3/4), percentages and number words
  (zero to ninety-nine) are understood.
- `grade_exact`: the normalised answer equals the normalised reference.

`grade(item, response)` picks the grader of the item's task: the one its registered `mgrd.tasks.Task`
names, else one inferred from the row (`infer_grader`). This module knows no task family: it imports
nothing from `mgrd.data.synth`, and the Task registry is only consulted, lazily, when no grader is given.
Graders return 1.0 or 0.0 and never guess (no random fallback, cf. `shared/reference/benchmarks.md` §9.8).
This module reproduces no benchmark's official scorer; those live with their benchmark tasks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from fractions import Fraction
from typing import Any

from mgrd.chat import THINK_START, split_reasoning

_ARTICLES = {"a", "an", "the"}
# "the answer is X", "final answer: X", "answer - X"; the last such trigger in the answer wins
# ("-" is a separator only when no number follows: "the answer is -5" keeps its sign)
_TRIGGER = re.compile(r"\banswer\s*(?:(?:is|would be|will be|should be)\s*(?:[:=]|-(?![\d.]))?|[:=]|-(?![\d.]))\s*",
                      re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# an option letter alone: "B", "(B)", "B.", "b)", "Option B", "choice (b)"
_LETTER_ALONE = re.compile(r"^(?:option|choice)?\s*\(?([A-Za-z])\)?[.:)]?$", re.IGNORECASE)
# an option letter followed by text: "B. the second", "(B) the second", "B) the second", "B)the second"
# (a closing bracket may touch the text; "B." and "B:" need a space, so "a.m. recording" is not option A)
_LETTER_LEAD = re.compile(r"^(?:option\s+|choice\s+)?(?:\(?([A-Za-z])\)\s*|([A-Za-z])[.:]\s+)(.+)$", re.IGNORECASE)
_MARKUP = re.compile(r"[*`]")  # markdown emphasis and code marks around letters or choices ("**B.** the second")

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | _TENS
_WORD_ALT = "|".join(sorted(_WORD_VALUES, key=len, reverse=True))
_UNIT_ALT = "|".join(_UNITS[1:10])
# one number token: digits with thousands separators / decimals / a fraction / an exponent, or words
_NUMBER = re.compile(
    r"(?P<neg>(?<![\w.])[-\u2212](?=\.?\d)|\bnegative\s+|\bminus\s+(?=\d))?"
    r"(?:(?P<num>(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?"
    r"|(?<![\d.])\.\d+)"
    rf"|\b(?P<word>(?:{'|'.join(_TENS)})[\s-](?:{_UNIT_ALT})|{_WORD_ALT})\b)",
    re.IGNORECASE,
)


# ---------------------------------------------------------------- extraction


def extract_answer(response: str | None, require_think: bool = False) -> str | None:
    """The answer part of a response: the text after the first `</think>`.

    Args:
        response: the model's text. When the prompt ended with `<think>\\n` (the Step-Audio-R1
            generation prompt), pass the prefix + completion, or set `require_think`.
        require_think: a response without `</think>` counts as truncated even if it has no `<think>`.
    Returns:
        The answer, stripped; `None` when the response is truncated (`<think>` opened but never
        closed) or missing. A response with no think block at all is all answer.
    """
    if response is None:
        return None
    _, answer = split_reasoning(response)  # the one think/answer splitter
    if answer is not None:
        return answer.strip()
    if require_think or THINK_START in response:
        return None
    return response.strip()


def normalize(text: str) -> str:
    """Lower-case, drop punctuation (keeping decimal points inside numbers) and articles, squeeze spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 -> 1234
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep 3.5, drop sentence dots
    text = re.sub(r"[^\w.]+|_", " ", text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _final_segment(answer: str) -> str | None:
    """The claimed final answer in `\\boxed{X}` or after the last "answer is", else None."""
    boxed = _BOXED.findall(answer)
    if boxed:
        return boxed[-1].strip()
    triggers = list(_TRIGGER.finditer(answer))
    if not triggers:
        return None
    rest = answer[triggers[-1].end():]
    # the claim ends at the first line break or sentence end ("B. Because ..." -> "B")
    rest = re.split(r"\n|(?<!\d)[.!?;](?:\s|$)|[.!?;]\s", rest, maxsplit=1)[0]
    return rest.strip().strip("*`\"' ")


# ---------------------------------------------------------------- choice


def _unique_choices(choices: list[str]) -> list[tuple[str, str]]:
    """(choice, normalised) pairs, one per distinct normalised text, in order; empty texts dropped."""
    seen: dict[str, str] = {}
    for c in choices:
        norm = normalize(str(c))
        if norm and norm not in seen:
            seen[norm] = str(c)
    return [(c, n) for n, c in seen.items()]


def _mentions(norm_text: str, options: list[tuple[str, str]]) -> set[str]:
    """Normalised choices named in `norm_text` as whole words; a choice inside a longer named one
    ("present" in "not present") does not count on its own."""
    residual = f" {norm_text} "
    named: set[str] = set()
    for _, norm in sorted(options, key=lambda o: len(o[1]), reverse=True):
        needle = f" {norm} "
        if needle in residual:
            named.add(norm)
            residual = residual.replace(needle, "  ")
    return named


def _letter_index(letter: str, n_choices: int) -> int | None:
    index = ord(letter.upper()) - ord("A")
    return index if 0 <= index < n_choices else None


def resolve_choice(answer: str, choices: list[str]) -> str | None:
    """The choice an answer names, or None when it names none or several.

    Args:
        answer: the answer text (already split from the reasoning).
        choices: the options, in the order they were shown (letters A, B, ... index them).
    Returns:
        The normalised text of the named choice.
    """
    options = _unique_choices(choices)
    segment = _final_segment(answer)
    text = _MARKUP.sub("", segment if segment is not None else answer).strip().strip("\"' ")
    letter = _LETTER_ALONE.match(text)
    if letter:
        index = _letter_index(letter.group(1), len(choices))
        # a lone "a" that is not an option letter is an article, never a choice
        return normalize(str(choices[index])) if index is not None else None
    lead = _LETTER_LEAD.match(text)
    if lead:
        index = _letter_index(lead.group(1) or lead.group(2), len(choices))
        if index is not None:
            by_letter = normalize(str(choices[index]))
            named = _mentions(normalize(lead.group(3)), options)
            # "B. the first" contradicts itself unless the text names only option B (or nothing)
            return by_letter if named <= {by_letter} else None
    norm = normalize(text)
    named = _mentions(norm, options)
    return named.pop() if len(named) == 1 else None


def grade_choice(response: str | None, answer: str, choices: list[str] | None = None) -> float:
    """1.0 when the response's answer names the reference choice and no other, else 0.0.

    Args:
        response: the full model response (think block included).
        answer: the reference, the text of one choice.
        choices: the options in shown order; without them the answer must match `answer` exactly
            (after normalisation), alone or in an "the answer is X" form.
    """
    text = extract_answer(response)
    if not text:
        return 0.0
    if not choices:
        return grade_exact(response, answer)
    return float(resolve_choice(text, choices) == normalize(str(answer)))


def grade_exact(response: str | None, answer: str) -> float:
    """1.0 when the normalised answer (or its "the answer is X" part) equals the normalised reference."""
    text = extract_answer(response)
    if not text:
        return 0.0
    segment = _final_segment(text)
    target = normalize(str(answer))
    return float(normalize(text) == target or (segment is not None and normalize(segment) == target))


# ---------------------------------------------------------------- numeric


def _number_value(match: re.Match) -> float:
    if match.group("word"):
        words = re.split(r"[\s-]+", match.group("word").lower())
        value = float(sum(_WORD_VALUES[w] for w in words))
    else:
        raw = match.group("num").replace(",", "")
        if "/" in raw:
            num, den = raw.split("/")
            value = float(Fraction(num) / Fraction(den)) if float(den) != 0 else math.nan
        else:
            value = float(raw)
    return -value if match.group("neg") else value


def find_numbers(text: str) -> list[float]:
    """Every number in `text`, in order of appearance (see the module docstring for the forms)."""
    return [_number_value(m) for m in _NUMBER.finditer(text)]


def parse_final_number(text: str) -> float | None:
    """The number an answer commits to: inside the last `\\boxed{}`, else the first number after the
    last "the answer is", else the last number in the text; None when there is none."""
    segment = _final_segment(text)
    if segment is not None:
        numbers = find_numbers(segment)
        if numbers:
            return numbers[-1] if _BOXED.search(text) else numbers[0]
    numbers = find_numbers(text)
    return numbers[-1] if numbers else None


def grade_numeric(response: str | None, answer: str | float, *, rel_tol: float = 1e-6,
                  abs_tol: float = 1e-6) -> float:
    """1.0 when the response's final number equals the reference within the tolerance, else 0.0.

    Args:
        response: the full model response (think block included).
        answer: the reference: a number, or text whose final number is the reference ("#### 70000",
            "You have 6 apples now.").
        rel_tol, abs_tol: passed to `math.isclose` when either number is fractional (rounding in written
            decimals); two whole numbers compare exactly, so 999,999 is never 1,000,000.
    Raises:
        ValueError: the reference holds no number (a data bug, not a wrong response).
    """
    reference = float(answer) if isinstance(answer, (int, float)) else parse_final_number(str(answer))
    if reference is None:
        raise ValueError(f"numeric reference has no number: {answer!r}")
    text = extract_answer(response)
    predicted = parse_final_number(text) if text else None
    if predicted is None or math.isnan(predicted):
        return 0.0
    if predicted.is_integer() and reference.is_integer():
        return float(predicted == reference)
    return float(math.isclose(predicted, reference, rel_tol=rel_tol, abs_tol=abs_tol))


# ---------------------------------------------------------------- dispatch

GRADERS = {"choice": grade_choice, "numeric": grade_numeric, "exact": grade_exact}


def has_reasoning(response: str | None) -> bool:
    """Whether a response holds a closed, non-empty think block (the "reasoning present" of the audio reward).

    A completion after the `<think>\n` generation prompt counts as well as a full `<think>...</think>` text;
    a response cut off before `</think>` has no finished reasoning and counts as absent.
    """
    if response is None:
        return False
    reasoning, answer = split_reasoning(response)
    return answer is not None and bool(reasoning.strip())


def infer_grader(item: dict) -> str:
    """The grader a row implies on its own: "choice" with choices, "numeric" when the answer is a bare
    number, else "exact"."""
    if item.get("choices"):
        return "choice"
    answer = str(item.get("answer", "")).strip()
    return "numeric" if _NUMBER.fullmatch(answer) else "exact"


def grader_name(item: dict) -> str:
    """The grader for a manifest row: its registered task's (`mgrd.tasks.find_task`), else `infer_grader`."""
    from mgrd.tasks.base import find_task  # lazy: the registry module imports this one

    task = find_task(item.get("task"))
    return task.grader if task is not None else infer_grader(item)


def as_row(item: dict | Any) -> dict:
    """A manifest row (dict) as is, or a loaded `Item` (any dataclass) as a dict of its fields."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    if not isinstance(item, dict):
        raise ValueError(f"an item must be a manifest row (dict) or an Item, got {type(item).__name__}")
    return item


def grade(item: dict | Any, response: str | None, require_think: bool = True, grader: str | None = None) -> float:
    """Score one response against a manifest row (dict) or a loaded `Item`.

    Args:
        item: the manifest row or `Item`.
        response: the model's completion (the text after the `<think>\n` generation prompt), or a full
            `<think>...</think>answer` text.
        require_think: a response with no `</think>` was cut off before its answer (the Step-Audio-R1
            prompt opens the think block) and scores 0. Pass False for endpoints that answer without one.
        grader: "choice", "numeric" or "exact"; None picks it with `grader_name`.
    Returns:
        1.0 or 0.0.
    Raises:
        ValueError: an unknown grader name.
    """
    row = as_row(item)
    name = grader if grader is not None else grader_name(row)
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; choose one of {sorted(GRADERS)}")
    if extract_answer(response, require_think=require_think) is None:  # cut off before its answer
        return 0.0
    if name == "choice":
        return grade_choice(response, row["answer"], row.get("choices"))
    return GRADERS[name](response, row["answer"])

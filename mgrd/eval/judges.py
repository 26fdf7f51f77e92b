"""Judge prompts and reply parsers for the judged benchmarks (used through `mgrd.judge.Judge`).

- `bba-aa`: Artificial Analysis's Big Bench Audio grader (benchmarks.md §2.2), byte-exact: the candidate answer,
  the official answer and the question; the reply is CORRECT or INCORRECT. The blog's code block shows the
  characters `\\n\\n` after `{question}`; whether they were meant as newlines is unknown, so
  `bba_literal_newlines` (default True: the literal characters, as printed) is a recorded choice.
  `parse_correct` reads the reply anchored at its start, INCORRECT before CORRECT ("INCORRECT" contains
  "CORRECT"); anything else is invalid.
- `wildspeech`: WildSpeech-Bench's checklist rubric (query, response, general + item checklist, a 1-10 score
  ending "Score: [your score]"). The official meta prompt (`Tencent/WildSpeech-Bench:tools/api_judge.py`) is not
  reproduced here; this template follows its described structure in mgrd's own words and can be replaced with
  the official text through a template file (`{query}`, `{response}`, `{checklist}` slots).
  `parse_score` is the official regex `Score: (?:\\[)?(\\d+)(?:\\])?`; no match is invalid.
"""

from __future__ import annotations

import re
from pathlib import Path

BBA_TEMPLATE = (
    "Assess whether the following CANDIDATE ANSWER is CORRECT or INCORRECT.\n"
    "For the CANDIDATE ANSWER to be correct, it must be consistent with the OFFICIAL ANSWER.\n"
    "If the CANDIDATE ANSWER contradicts itself, assess the first proposed answer.\n"
    "If the CANDIDATE ANSWER provides a final answer and working, assess the final answer only.\n"
    "If the CANDIDATE ANSWER includes irrelevant information, assess only the relevant information.\n"
    "If the CANDIDATE ANSWER includes a numeric value it is ok if it is spelled e.g. 7 or seven\n"
    "It is ok if the CANDIDATE ANSWER involves a misspelling of a person's name e.g. Leda or Lida, Autry or Audrie.\n"
    "  \n"
    "The question, for reference only: START QUESTION {question} \\n\\nEND QUESTION\n"
    "\n"
    "The OFFICIAL ANSWER:{official_answer}\n"
    "\n"
    "BEGIN CANDIDATE ANSWER TO ASSESS\n"
    "\n"
    "{candidate_answer}\n"
    "\n"
    "END CANDIDATE ANSWER TO ASSESS\n"
    "\n"
    "Reply only with CORRECT or INCORRECT."
)

WILDSPEECH_GENERAL_CHECKLIST = (
    "- Does the response follow the user's instruction and address what was asked?\n"
    "- Is the content correct, with no factual or logical errors?\n"
    "- Is the response free of needless repetition?"
)

WILDSPEECH_TEMPLATE = (
    "You are rating how well an assistant answered a spoken user query.\n\n"
    "[User query]\n{query}\n\n"
    "[Assistant response]\n{response}\n\n"
    "[Checklist]\n{checklist}\n\n"
    "Use the checklist to rate the response from 1 to 10: 1-2 the response has no value or fails the query; "
    "3-4 it has serious problems; 5-6 it is acceptable with clear shortcomings; 7-8 it is good with minor issues; "
    "9-10 it is of high quality and fully meets the checklist.\n"
    "First explain your rating briefly, then end with a line of the form\nScore: [your score]"
)

_VERDICT = re.compile(r"^\W*(INCORRECT|CORRECT)\b", re.IGNORECASE)
_SCORE = re.compile(r"Score: (?:\[)?(\d+)(?:\])?")


def bba_prompt(question: str, official_answer: str, candidate_answer: str, literal_newlines: bool = True) -> str:
    """The Big Bench Audio judge prompt for one candidate answer."""
    template = BBA_TEMPLATE if literal_newlines else BBA_TEMPLATE.replace("\\n\\n", "\n\n")
    return (template.replace("{question}", question).replace("{official_answer}", official_answer)
            .replace("{candidate_answer}", candidate_answer))


def parse_correct(reply: str) -> float | None:
    """1.0 for a reply starting with CORRECT, 0.0 for INCORRECT (any case, after punctuation), None otherwise."""
    match = _VERDICT.match(reply.strip())
    if not match:
        return None
    return 0.0 if match.group(1).upper() == "INCORRECT" else 1.0


def wildspeech_prompt(query: str, response: str, checklist: str, template: str | None = None) -> str:
    """The rubric prompt: the general checklist then the item's, under the template's slots."""
    full = WILDSPEECH_GENERAL_CHECKLIST + ("\n" + checklist.strip() if checklist and checklist.strip() else "")
    return ((template or WILDSPEECH_TEMPLATE).replace("{query}", query).replace("{response}", response)
            .replace("{checklist}", full))


def parse_score(reply: str) -> float | None:
    """The official score regex; None when the reply holds no score (an invalid judge output)."""
    match = _SCORE.search(reply)
    return float(match.group(1)) if match else None


def read_template(path: str | Path | None) -> str | None:
    """A template file's text (None passes through); it must hold the `{query}` and `{response}` slots."""
    if path is None:
        return None
    text = Path(path).read_text(encoding="utf-8")
    missing = [slot for slot in ("{query}", "{response}") if slot not in text]
    if missing:
        raise ValueError(f"{path}: judge template lacks the slot(s) {', '.join(missing)}")
    return text

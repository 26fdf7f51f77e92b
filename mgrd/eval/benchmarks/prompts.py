"""The report's prompts as registered tasks (Step-Audio-R1 `examples-vllm_r1.py`, benchmarks.md §1.3).

- MCQ benchmarks (MMAU, MMSU): text first, then audio; the question, the fixed instruction and one
  `"{letter}. {choice}\\n"` line per choice (`McqTask`).
- Spoken MQA: text first ("Solve the given math question step by step."), then audio (a plain `Task` whose
  rows carry that text as their question).
- Big Bench Audio: audio first, then the fixed Chinese instruction (a plain `Task`, `audio_first=True`).
- Wild Speech: the audio alone, no text (`AudioOnlyTask`).

Every prompt goes through `Task.encode_prompt`, so parts are joined with the official "\\n" and the generation
prompt ends with `<think>\\n`, as the official server renders it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mgrd.tasks import Task, find_task, register_task
from mgrd.tasks.grading import as_row

MCQ_INSTRUCTION = ("Please choose the answer from the following options, do not provide any additional explanations "
                   "or content: \n")
MQA_INSTRUCTION = "Solve the given math question step by step."
BBA_INSTRUCTION = ("仅用 \"valid\" 或 \"invalid\"，\"yes\" 或 \"no\"，"
                   "或者数字来直接回答上面的问题，不要添加任何其他描述。")


def mcq_text(question: str, choices: list[str]) -> str:
    """Step-Audio-R1's multiple-choice text: question, instruction, then `"A. choice\\n"` per choice."""
    if len(choices) > 26:
        raise ValueError(f"at most 26 choices can be lettered, got {len(choices)}")
    lines = "".join(f"{chr(65 + i)}. {choice}\n" for i, choice in enumerate(choices))
    return f"{question}\n{MCQ_INSTRUCTION}{lines}"


@dataclass(frozen=True)
class McqTask(Task):
    """A multiple-choice benchmark task with the report's MCQ prompt (text before audio)."""

    def question_text(self, row: dict) -> str:
        question, choices = row.get("question"), row.get("choices")
        if not isinstance(question, str) or not choices:
            raise ValueError(f"item {row.get('id')!r}: an MCQ item needs a string 'question' and 'choices'")
        return mcq_text(question, [str(c) for c in choices])


@dataclass(frozen=True)
class AudioOnlyTask(Task):
    """A task whose prompt is the item's audio alone (Wild Speech: the spoken query is the whole turn)."""

    def prompt(self, item: dict | Any, features=None):
        row = as_row(item)
        audio = [{"type": "audio", "audio": p if isinstance(p, bytes) else os.fspath(p)}
                 for p in row.get("audio") or []]
        if not audio:
            raise ValueError(f"item {row.get('id')!r}: an audio-only prompt needs audio")
        if features:
            audio = [dict(part, mels=features[part["audio"]]) if part["audio"] in features else part for part in audio]
        return [{"role": "user", "content": audio}]


def ensure_task(task: Task) -> Task:
    """Register `task` unless a task of that name already is (module reloads, tests); returns the registered one."""
    return find_task(task.name) or register_task(task)


MMAU_TASK = ensure_task(McqTask("mmau", grader="choice", audio_first=False,
                                description="MMAU test-mini: sound, music and speech MCQ (report's MCQ prompt)"))
MMSU_TASK = ensure_task(McqTask("mmsu", grader="choice", audio_first=False,
                                description="MMSU: spoken-language understanding MCQ (report's MCQ prompt)"))
SPOKEN_MQA_TASK = ensure_task(Task("spoken_mqa", grader="numeric", audio_first=False,
                                   description="Spoken MQA: spoken arithmetic and math word problems"))
BBA_TASK = ensure_task(Task("big_bench_audio", grader="exact", audio_first=True,
                            description="Big Bench Audio: spoken BBH questions (audio, then the instruction)"))
WILDSPEECH_TASK = ensure_task(AudioOnlyTask("wildspeech", grader="exact", audio_first=True,
                                            description="Wild Speech: open spoken queries judged by a checklist"))

"""Tiny benchmark folders in each benchmark's official layout (benchmarks.md §7), written by the tests.

Audio is real: short sine tones written with soundfile (16 kHz PCM wav), embedded as file bytes in the
parquet benchmarks, as the Hugging Face audio struct `{bytes, path}` holds them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 16_000


def tone(hz: float = 440.0, seconds: float = 0.3, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def wav_bytes(hz: float = 440.0, seconds: float = 0.3) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(hz, seconds), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: Path, hz: float = 440.0, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(hz, seconds))
    return path


MMAU_ROWS = [
    {"id": "f-001", "audio_id": "./test-mini-audios/f-001.wav",
     "question": "Based on the given audio, identify the source of the speaking voice.",
     "choices": ["Man", "Woman", "Child", "Robot"], "answer": "Man", "dataset": "AudioSet", "task": "sound",
     "split": "test-mini", "category": "Reasoning", "sub-category": "Acoustic Source Inference",
     "difficulty": "medium"},
    {"id": "f-002", "audio_id": "./test-mini-audios/f-002.wav", "question": "Which word appears first",
     "choices": ["wind", "wharf"], "answer": "wind", "dataset": "synthetic", "task": "speech", "split": "test-mini",
     "category": "Information Extraction", "sub-category": "Phonological Sequence Decoding", "difficulty": "easy"},
    {"id": "f-003", "audio_id": "./test-mini-audios/f-003.wav", "question": "Who is speaking?",
     "choices": ["Woman and child", "Two men", "Two women", "A man and a child"], "answer": "Woman and child",
     "dataset": "synthetic", "task": "speech", "split": "test-mini", "category": ["Reasoning"],
     "sub-category": "Multi Speaker Role Mapping", "difficulty": "hard"},
    {"id": "f-004", "audio_id": "./test-mini-audios/f-004.wav",
     "question": "Can you identify the sound of a dog in the sequence?",
     "choices": ["Yes, it is the second sound.", "Yes, it is the third sound.", "No, it is not present.",
                 "Yes, it is the last sound."], "answer": "No, it is not present.", "dataset": "synthetic",
     "task": "sound", "split": "test-mini", "category": "Reasoning", "sub-category": "Temporal Event Reasoning",
     "difficulty": "easy"},
]

MMSU_ROWS = [
    {"id": "mmsu-1", "audio_path": "audio/nonverbal/mmsu-1.wav",
     "question": "What type of non-verbal sound is in the audio?", "choice_a": "laugh", "choice_b": "burp",
     "choice_c": "cough", "choice_d": "yawn", "answer_gt": "cough", "task_name": "non_verbal_sound_detection",
     "category": "Perception", "sub-category": "Paralinguistics", "sub-sub-category": "Speaking style",
     "linguistics_sub_discipline": "Paralinguistics"},
    {"id": "mmsu-2", "audio_path": "audio/counting/mmsu-2.wav", "question": "How many speakers?", "choice_a": 1,
     "choice_b": 2, "choice_c": 3, "choice_d": 4, "answer_gt": 2, "task_name": "speaker_counting",
     "category": "Reasoning", "sub-category": "Paralinguistics", "sub-sub-category": "Speaker traits",
     "linguistics_sub_discipline": "Paralinguistics"},
]

BBA_ROWS = [
    {"file_name": "data/question_0.mp3", "category": "formal_fallacies", "official_answer": "invalid", "id": 0},
    {"file_name": "data\\/question_250.mp3", "category": "navigate", "official_answer": "Yes", "id": 250},
    {"file_name": "data/question_500.mp3", "category": "object_counting", "official_answer": "18", "id": 500},
    {"file_name": "data/question_750.mp3", "category": "web_of_lies", "official_answer": "No", "id": 750},
]


def write_mmau(root: Path, rows=MMAU_ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mmau-test-mini.json").write_text(json.dumps(rows, indent=1))
    for i, row in enumerate(rows):
        write_wav(root / row["audio_id"], 300 + 100 * i)
    return root


def write_mmsu(root: Path, rows=MMSU_ROWS) -> Path:
    (root / "question").mkdir(parents=True, exist_ok=True)
    (root / "question" / "mmsu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i, row in enumerate(rows):
        write_wav(root / row["audio_path"], 500 + 50 * i)
    return root


def write_bba(root: Path, rows=BBA_ROWS, questions: bool = True) -> Path:
    """metadata.jsonl + data/question_<id>.mp3 (real mp3 files, as the dataset ships them)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for row in rows:
        path = root / row["file_name"].replace("\\/", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(600), RATE, format="MP3")
    if questions:
        (root / "questions.jsonl").write_text(json.dumps(
            {"id": 500, "question": "I have four oranges, a peach, ... How many fruits do I have?"}) + "\n")
    return root


def _audio(hz: float) -> dict:
    return {"bytes": wav_bytes(hz), "path": f"{int(hz)}.wav"}


def _arrow():
    """pyarrow and pyarrow.parquet; the parquet benchmarks' tests skip without them."""
    pa = pytest.importorskip("pyarrow")
    return pa, pytest.importorskip("pyarrow.parquet")


def write_spoken_mqa(root: Path) -> Path:
    pa, pq = _arrow()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    digit_type = pa.struct([("text", pa.string())])
    list_type = pa.struct([("text", pa.list_(pa.string()))])
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    splits = {
        "short_digit": ("Calculate five hundred ninety-two plus four hundred ten.", {"text": "1002"}, digit_type),
        "long_digit": ("Calculate a long sum.", {"text": "80.9421"}, digit_type),
        "single_step_reasoning": ("Tom has seventy-nine apples.", {"text": ["79"]}, list_type),
        "multi_step_reasoning": ("He earns seventy thousand.", {"text": ["#### 70000"]}, list_type),
    }
    for i, (split, (transcript, answer, answer_type)) in enumerate(splits.items()):
        schema = pa.schema([("context", audio_type), ("context_transcript", pa.string()),
                            ("instruction", pa.struct([("text", pa.string())])), ("answer", answer_type)])
        table = pa.Table.from_pylist([{"context": _audio(300 + 50 * i), "context_transcript": transcript,
                                       "instruction": {"text": "Answer the math question."}, "answer": answer}],
                                     schema=schema)
        pq.write_table(table, data / f"{split}-00000-of-00001.parquet")
    return root


WILDSPEECH_ROWS = [
    {"taskType": "prosodical", "additional_info": "stuttering-repeat", "modification_type": "clean",
     "user_query": "W-w-what is the capital of France?", "checklist": "- Names Paris.", "conversation_hash": "h1"},
    {"taskType": "Information Inquiry", "additional_info": "", "modification_type": "natural_noise",
     "user_query": "How far is the moon?", "checklist": "- About 384,000 km.", "conversation_hash": "h2"},
    {"taskType": "Text Creation", "additional_info": "", "modification_type": "human_noise",
     "user_query": "Write a haiku about rain.", "checklist": "- Three lines.", "conversation_hash": "h3"},
]


def write_wildspeech(root: Path, rows=WILDSPEECH_ROWS) -> Path:
    pa, pq = _arrow()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(r, audio=_audio(400 + 40 * i)) for i, r in enumerate(rows)])
    pq.write_table(table, data / "train-00000-of-00001.parquet")
    return root

"""Manifest schema, validation messages (FILE:LINE), loading and atomic writing."""

import json
import logging
from pathlib import Path

import pytest

from mgrd.data.manifest import Item, ManifestError, check_manifest, load_manifest, write_manifest


def _row(i: int = 0, **over) -> dict:
    row = {"id": f"pitch-{i:06d}", "task": "pitch_compare", "audio": [f"audio/{i}.wav"],
           "question": "Which of the two tones is higher?", "choices": ["the first", "the second"],
           "answer": "the second", "reasoning": "The second is 523 Hz. The answer is the second.",
           "reasoning_style": "grounded", "reasonings": {"grounded": "The second is 523 Hz. The answer is the second."},
           "meta": {"f0_hz": [311.1, 523.3]}}
    row.update(over)
    return row


def _suite(tmp_path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """A manifest with an audio file for every row; raw_lines replaces given 1-based lines verbatim."""
    (tmp_path / "audio").mkdir(exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    for r in rows:
        for rel in r.get("audio") or []:
            (tmp_path / rel).write_bytes(b"RIFF-not-really-but-non-empty")
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_manifest_loads_with_resolved_audio_and_blank_lines_ignored(tmp_path):
    path = _suite(tmp_path, [_row(0), _row(1)])
    path.write_text(path.read_text().replace("\n", "\n\n", 1))  # a blank line between rows
    report = check_manifest(path)
    assert report.ok and report.n_rows == 2 and report.errors == []
    items = load_manifest(path)
    assert [it.id for it in items] == ["pitch-000000", "pitch-000001"]
    assert items[0].audio == [(tmp_path / "audio/0.wav").resolve()]
    assert items[1].source == f"{path}:3"
    assert items.n_skipped == 0


@pytest.mark.parametrize("bad, message", [
    ({"answer": 2}, "'answer' must be a string (got int 2; quote it)"),
    ({"id": ""}, "'id' must be a non-empty string"),
    ({"task": None}, "'task' must be a non-empty string"),
    ({"audio": "audio/0.wav"}, "'audio' must be a list of paths"),
    ({"choices": ["only one"]}, "'choices' must be a list of at least 2 strings"),
    ({"choices": ["x", "x"], "answer": "x"}, "'choices' must be distinct"),
    ({"answer": "the third"}, "'answer' 'the third' is not one of 'choices'"),
    # The check is exact: graders compare verbatim, so a case or spacing variant is not the choice.
    ({"answer": "The second"}, "'answer' 'The second' is not one of 'choices'"),
    ({"answer": "the second "}, "'answer' 'the second ' is not one of 'choices'"),
    ({"reasoning_style": "vibes"}, "'reasoning_style' must be one of"),
    ({"reasoning": None}, "'reasoning_style' is set but 'reasoning' is null"),
    ({"reasonings": {"grounded": "something else"}}, "'reasoning' differs from reasonings['grounded']"),
    ({"meta": [1, 2]}, "'meta' must be an object"),
    ({"question": None}, "exactly one of 'question' and 'messages'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the second"}]},
     "exactly one of 'question' and 'messages'"),
    ({"audio": ["audio/missing.wav"]}, "audio file not found: audio/missing.wav"),
])
def test_each_bad_row_is_reported_with_file_and_line(tmp_path, bad, message):
    rows = [_row(0), _row(1), _row(2)]
    path = _suite(tmp_path, rows)
    rows[1].update(bad)
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(rows[1])
    path.write_text("\n".join(lines) + "\n")
    report = check_manifest(path)
    assert not report.ok and report.bad_lines == [2] and report.n_rows == 3
    assert any(e.startswith(f"{path}:2: ") and message in e for e in report.errors), report.errors
    with pytest.raises(ManifestError, match=":2: "):
        load_manifest(path)


def test_invalid_json_non_objects_empty_audio_and_duplicate_ids(tmp_path):
    path = _suite(tmp_path, [_row(0), _row(1), _row(2), _row(3), _row(0)],
                  raw_lines={2: '{"id": "broken",', 3: "[1, 2]"})
    (tmp_path / "audio/3.wav").write_bytes(b"")
    report = check_manifest(path)
    assert report.bad_lines == [2, 3, 4, 5]
    text = "\n".join(report.errors)
    assert f"{path}:2: invalid JSON" in text
    assert f"{path}:3: a row must be a JSON object, got list" in text
    assert f"{path}:4: audio file is empty: audio/3.wav" in text
    assert f"{path}:5: duplicate id 'pitch-000000' (first on line 1)" in text


def test_non_strict_load_skips_bad_rows_and_says_how_many(tmp_path, caplog):
    path = _suite(tmp_path, [_row(0), _row(1, answer=3), _row(2)])
    with caplog.at_level(logging.WARNING, logger="mgrd.data.manifest"):
        items = load_manifest(path, strict=False)
    assert [it.id for it in items] == ["pitch-000000", "pitch-000002"]
    assert items.n_skipped == 1 and items.report.bad_lines == [2]
    assert "skipped 1 bad row(s) of 3" in caplog.text


def test_unknown_keys_are_kept_and_warned_once_per_key(tmp_path):
    path = _suite(tmp_path, [_row(0, difficulty="easy"), _row(1, difficulty="hard")])
    report = check_manifest(path)
    assert report.ok
    assert report.warnings == [f"{path}:1: unknown key 'difficulty' in 2 row(s); kept in Item.extra"]
    assert [it.extra for it in load_manifest(path)] == [{"difficulty": "easy"}, {"difficulty": "hard"}]


def test_conversation_rows(tmp_path):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "audio", "audio": "audio/0.wav"},
                                             {"type": "text", "text": "How many beeps?"}]},
                {"role": "assistant", "content": "There are 3 beeps."}]
    good = _row(0, messages=messages, choices=None, answer="There are 3 beeps.", reasoning="I count 3.",
                reasoning_style="text", reasonings={"text": "I count 3."})
    del good["question"]
    path = _suite(tmp_path, [good])
    assert check_manifest(path).ok
    item = load_manifest(path)[0]
    assert item.question is None
    assert item.messages[1]["content"][0]["audio"] == str((tmp_path / "audio/0.wav").resolve())

    for bad, message in [
        (messages[:2], "the last message must be the assistant's target reply"),
        (messages[:2] + [{"role": "assistant", "content": "3"}], "'answer' must equal the last"),
        (messages[:1] + [{"role": "robot", "content": "x"}] + messages[2:], "messages[1] must be an object"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "audio/nope.wav"}]}, messages[2]],
         "audio file not found: audio/nope.wav"),
    ]:
        path.write_text(json.dumps(dict(good, messages=bad)) + "\n")
        errors = check_manifest(path).errors
        assert any(e.startswith(f"{path}:1: ") and message in e for e in errors), errors


def test_missing_path_folder_and_empty_file_are_clear_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        check_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="is a folder"):
        load_manifest(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert check_manifest(empty).errors == [f"{empty}: manifest has no rows"]


def test_not_utf8_line_is_reported(tmp_path):
    path = _suite(tmp_path, [_row(0), _row(1)])
    path.write_bytes(path.read_bytes() + b'{"id": "\xff"}\n')
    assert check_manifest(path).errors[0].startswith(f"{path}:3: not UTF-8 text")


def test_binary_file_is_refused_before_reading_lines(tmp_path):
    path = _suite(tmp_path, [_row(0)])
    path.write_bytes(path.read_bytes() + b"\x00" * 3)  # a NUL anywhere in the first 8 KiB
    with pytest.raises(ManifestError, match=r"binary data \(a NUL byte at offset \d+\), not a JSON Lines manifest"):
        check_manifest(path)
    with pytest.raises(ManifestError, match="binary data"):
        load_manifest(path, strict=False)


def test_write_manifest_round_trips_rows_and_items(tmp_path):
    rows = [_row(0), _row(1, choices=None, answer="12", question="Solve it.", reasoning=None,
                              reasoning_style=None, reasonings={})]
    _suite(tmp_path, rows)
    out = write_manifest(rows, tmp_path / "manifest.jsonl")
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    items = load_manifest(out)
    copy = tmp_path / "copy" / "m.jsonl"  # items re-written elsewhere keep pointing at the same audio
    write_manifest(items, copy)
    assert json.loads(copy.read_text().splitlines()[0])["audio"] == ["../audio/0.wav"]
    assert [it.audio for it in load_manifest(copy)] == [it.audio for it in items]
    assert isinstance(items[0], Item)


def test_write_manifest_is_atomic_and_refuses_bad_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest([_row(0)], path)
    before = path.read_bytes()
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: 'answer' must be a string"):
        write_manifest([_row(0), _row(1, answer=None)], path)
    with pytest.raises(ManifestError, match="duplicate id"):
        write_manifest([_row(0), _row(0)], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temp files left behind

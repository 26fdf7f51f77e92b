"""The suite writer: layout, determinism, round-robin spread, and refusing bad input without half-writing."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgrd.data.synth import DEFAULT_FAMILIES, FAMILIES
from mgrd.data.synth.base import Family
from mgrd.data.synth.writer import SynthError, synthesize

ROW_KEYS = ["id", "task", "audio", "question", "choices", "answer", "reasoning", "reasoning_style", "reasonings",
            "meta"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("suite") / "out", n=30, seed=7, progress=False)


def test_layout_rows_and_wavs(suite):
    assert suite.name == "manifest.jsonl"
    rows = _rows(suite)
    assert len(rows) == 30
    for row in rows:
        assert list(row) == ROW_KEYS
        assert row["audio"] == [f"audio/{row['id']}.wav"]
        info = sf.info(str(suite.parent / row["audio"][0]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert row["reasoning"] == row["reasonings"]["grounded"] and row["reasoning_style"] == "grounded"
        assert set(row["reasonings"]) == {"grounded", "text_substitute"}
    wavs = sorted(p.name for p in (suite.parent / "audio").iterdir())
    assert wavs == sorted(f"{row['id']}.wav" for row in rows)


def test_round_robin_over_families(suite):
    rows = _rows(suite)
    families = DEFAULT_FAMILIES
    assert [row["task"] for row in rows] == [families[j % len(families)] for j in range(30)]
    assert [row["id"] for row in rows[: len(families)]] == [f"{name}-000000" for name in families]
    assert rows[len(families)]["id"] == f"{families[0]}-000001"
    summary = json.loads((suite.parent / "suite.json").read_text())
    counts = {f["name"]: f["count"] for f in summary["families"]}
    assert summary["seed"] == 7 and summary["split"] == "train" and summary["n"] == 30
    assert sum(counts.values()) == 30 and max(counts.values()) - min(counts.values()) <= 1
    assert {f["name"]: f["grader"] for f in summary["families"]} == {n: FAMILIES[n].grader for n in families}


def test_meta_floats_are_rounded(suite):
    def floats(value):
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return [value] if isinstance(value, float) else []

    for row in _rows(suite):
        for value in floats(row["meta"]):
            assert value == round(value, 3)


def test_same_seed_gives_identical_bytes(suite, tmp_path):
    again = synthesize(tmp_path / "again", n=30, seed=7, progress=False)
    assert _files(again.parent) == _files(suite.parent)


def test_different_seed_differs(suite, tmp_path):
    other = synthesize(tmp_path / "other", n=30, seed=8, progress=False)
    assert other.read_bytes() != suite.read_bytes()
    first = "audio/pitch_compare-000000.wav"
    assert (other.parent / first).read_bytes() != (suite.parent / first).read_bytes()


def test_item_depends_only_on_seed_family_split_index(suite, tmp_path):
    alone = synthesize(tmp_path / "alone", n=3, seed=7, families=["timbre"], progress=False)
    for k in range(2):  # the 30-item default suite holds timbre-000000 and timbre-000001
        name = f"audio/timbre-{k:06d}.wav"
        assert (alone.parent / name).read_bytes() == (suite.parent / name).read_bytes()
    other_split = synthesize(tmp_path / "test", n=3, seed=7, families=["timbre"], split="test", progress=False)
    first = "audio/timbre-000000.wav"
    assert (other_split.parent / first).read_bytes() != (alone.parent / first).read_bytes()


@pytest.mark.integration
def test_worker_count_does_not_change_the_bytes(tmp_path):
    one = synthesize(tmp_path / "one", n=40, seed=3, workers=1, progress=False)
    two = synthesize(tmp_path / "two", n=40, seed=3, workers=2, progress=False)
    assert _files(one.parent) == _files(two.parent)


@pytest.mark.parametrize("kwargs, message", [
    ({"families": ["pitch_compare", "no_such_family"]}, "unknown family 'no_such_family'"),
    ({"families": []}, "no families"),
    ({"n": 0}, "n (number of items) must be an integer >= 1"),
    ({"n": -5}, "must be an integer >= 1"),
    ({"n": 2.5}, "must be an integer >= 1"),
    ({"n": True}, "must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"split": "valid"}, "unknown split 'valid'"),
    ({"workers": 0}, "workers must be an integer >= 1"),
])
def test_bad_arguments_raise_before_writing(tmp_path, kwargs, message):
    args = {"n": 4, "seed": 0, "progress": False, **kwargs}
    with pytest.raises(SynthError, match=message.replace("(", r"\(").replace(")", r"\)")):
        synthesize(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_synth_error_is_a_value_error():
    assert issubclass(SynthError, ValueError)


def test_non_empty_target_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SynthError, match="not empty.*--overwrite"):
        synthesize(out, n=2, seed=0, progress=False)
    assert (out / "keep.txt").read_text() == "precious" and _leftovers(tmp_path) == []
    manifest = synthesize(out, n=2, seed=0, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and len(_rows(manifest)) == 2 and _leftovers(tmp_path) == []


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    assert len(_rows(synthesize(tmp_path / "out", n=2, seed=0, progress=False))) == 2


def test_unwritable_targets(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SynthError, match="not a folder"):
        synthesize(blocker, n=2, seed=0, progress=False)
    with pytest.raises(SynthError, match="cannot write the output folder"):
        synthesize(blocker / "inside", n=2, seed=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def _broken_make(rng, split):
    raise RuntimeError("generator failed on purpose")


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(FAMILIES, "broken", Family("broken", "acoustic", "choice", _broken_make))
    with pytest.raises(RuntimeError, match="on purpose"):
        synthesize(tmp_path / "out", n=5, seed=0, families=["timbre", "broken"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_clips_read_back_match_the_items(suite):
    row = _rows(suite)[0]
    clip, rate = sf.read(str(suite.parent / row["audio"][0]), dtype="float32")
    # The documented per-item seed: [seed, crc32(family), split index, index in family].
    rng = np.random.default_rng([7, zlib.crc32(row["task"].encode()), 0, 0])
    item = FAMILIES[row["task"]].make(rng, "train")
    assert rate == 16000 and clip.size == item.audio[0].size
    assert np.max(np.abs(clip - item.audio[0])) <= 1.0 / 32768 + 1e-6  # only 16-bit quantisation apart


def test_rows_are_written_through_the_manifest_schema(suite):
    """One row schema: loading the suite with `mgrd.data.manifest` and writing each item back gives the same rows."""
    from mgrd.data.manifest import load_manifest

    items = load_manifest(suite)
    assert [item.to_row(suite.parent) for item in items] == _rows(suite)

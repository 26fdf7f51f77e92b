"""Each benchmark's loader on a tiny folder in its official layout; bad folders fail with file and line."""

import json

import pytest

from mgrd.eval.benchmarks import BENCHMARKS, DataError, get_benchmark
from mgrd.tasks import get_task
from . import fixtures as fx


def test_mmau_reads_the_official_array_and_the_list_category(tmp_path):
    loaded = get_benchmark("mmau").load(fx.write_mmau(tmp_path / "mmau"))
    assert [i.id for i in loaded.items] == ["f-001", "f-002", "f-003", "f-004"]
    assert loaded.items[2].fields["categories"] == {"task": "speech", "difficulty": "hard", "category": "Reasoning",
                                                    "sub-category": "Multi Speaker Role Mapping"}
    assert len(loaded.fingerprints["mmau-test-mini.json"]) == 64
    text = get_task("mmau").prompt(loaded.items[1].row)[0]["content"]
    # the report's MCQ prompt: text first, then the audio
    assert text[0]["text"] == ("Which word appears first\nPlease choose the answer from the following options, do not "
                               "provide any additional explanations or content: \nA. wind\nB. wharf\n")
    assert text[1]["type"] == "audio" and text[1]["audio"].endswith("f-002.wav")


def test_mmau_missing_audio_is_counted_listed_and_excluded(tmp_path):
    root = fx.write_mmau(tmp_path / "mmau")
    (root / "test-mini-audios" / "f-003.wav").unlink()
    loaded = get_benchmark("mmau").load(root)
    assert [i.id for i in loaded.items] == ["f-001", "f-002", "f-004"]
    assert len(loaded.missing_audio) == 1
    assert "mmau-test-mini.json:3: id f-003: audio not found" in loaded.missing_audio[0]


def test_mmau_row_without_choices_names_file_and_line(tmp_path):
    rows = [dict(r) for r in fx.MMAU_ROWS]
    del rows[1]["choices"]
    with pytest.raises(DataError, match=r"mmau-test-mini.json:2: missing key 'choices'"):
        get_benchmark("mmau").load(fx.write_mmau(tmp_path / "mmau", rows))


def test_wrong_folder_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="mmau-test-mini.json"):
        get_benchmark("mmau").load(tmp_path)
    with pytest.raises(DataError, match="metadata.jsonl"):
        get_benchmark("big_bench_audio").load(tmp_path)
    with pytest.raises(DataError, match="question/mmsu.jsonl"):
        get_benchmark("mmsu").load(tmp_path)
    with pytest.raises(DataError, match="parquet"):
        get_benchmark("spoken_mqa").load(tmp_path)


def test_mmsu_coerces_numeric_choices_to_text(tmp_path):
    loaded = get_benchmark("mmsu").load(fx.write_mmsu(tmp_path / "mmsu"))
    item = loaded.items[1]
    assert item.fields["choices"] == ["1", "2", "3", "4"] and item.fields["answer"] == "2"
    assert item.row["audio"][0].endswith("audio/counting/mmsu-2.wav")
    assert item.fields["categories"]["category"] == "Reasoning"


def test_mmsu_bad_json_line_names_file_and_line(tmp_path):
    root = fx.write_mmsu(tmp_path / "mmsu")
    path = root / "question" / "mmsu.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"mmsu.jsonl:3: invalid JSON"):
        get_benchmark("mmsu").load(root)


def test_bba_accepts_escaped_file_names_and_the_question_sidecar(tmp_path):
    loaded = get_benchmark("big_bench_audio").load(fx.write_bba(tmp_path / "bba"))
    assert [i.id for i in loaded.items] == ["0", "250", "500", "750"]
    assert loaded.items[1].row["audio"][0].endswith("data/question_250.mp3")
    assert loaded.items[2].fields["question"].startswith("I have four oranges")
    assert loaded.items[0].fields["question"] == ""
    prompt = get_task("big_bench_audio").prompt(loaded.items[0].row)[0]["content"]
    assert prompt[0]["type"] == "audio" and prompt[1]["text"].startswith("仅用 \"valid\" 或 \"invalid\"")


def test_bba_without_sidecar_warns(tmp_path):
    loaded = get_benchmark("big_bench_audio").load(fx.write_bba(tmp_path / "bba", questions=False))
    assert any("question slot is left empty" in w for w in loaded.warnings)


def test_spoken_mqa_reads_every_split_and_cleans_references(tmp_path):
    loaded = get_benchmark("spoken_mqa").load(fx.write_spoken_mqa(tmp_path / "mqa"))
    got = {i.id: i.fields["answer"] for i in loaded.items}
    assert got == {"short_digit-00000": "1002", "long_digit-00000": "80.9421", "single_step_reasoning-00000": "79",
                   "multi_step_reasoning-00000": "70000"}
    row = loaded.items[0].row
    assert isinstance(row["audio"][0], bytes) and row["audio"][0][:4] == b"RIFF"
    assert get_task("spoken_mqa").prompt(row)[0]["content"][0]["text"] == "Solve the given math question step by step."


def test_wildspeech_categories_and_audio_only_prompt(tmp_path):
    loaded = get_benchmark("wildspeech").load(fx.write_wildspeech(tmp_path / "ws"))
    cats = [i.fields["categories"] for i in loaded.items]
    assert cats == [{"taskType": "prosodical/stuttering", "noise": "clean"},
                    {"taskType": "Information Inquiry", "noise": "natural_noise"},
                    {"taskType": "Text Creation", "noise": "human_noise"}]
    content = get_task("wildspeech").prompt(loaded.items[0].row)[0]["content"]
    assert [p["type"] for p in content] == ["audio"]


def test_synthetic_reads_a_suite_and_lists_bad_rows(tmp_path):
    from mgrd.data.synth.writer import synthesize

    manifest = synthesize(tmp_path / "suite", n=4, seed=0, families=["pitch_compare", "beep_count"], split="test",
                          progress=False)
    first = json.loads(manifest.read_text().splitlines()[0])
    (manifest.parent / first["audio"][0]).unlink()
    loaded = get_benchmark("synthetic").load(manifest.parent)
    assert len(loaded.items) == 3 and len(loaded.missing_audio) == 1
    assert "manifest.jsonl:1:" in loaded.missing_audio[0]
    assert loaded.items[0].fields["categories"] == {"family": "beep_count", "kind": "acoustic"}


def test_every_benchmark_prompts_through_a_registered_task():
    for name in ("mmau", "mmsu", "big_bench_audio", "spoken_mqa", "wildspeech"):
        assert get_task(name).name == name
    assert set(BENCHMARKS) == {"mmau", "mmsu", "big_bench_audio", "spoken_mqa", "wildspeech", "synthetic"}


def test_mmsu_parquet_with_embedded_audio(tmp_path):
    pa, pq = fx._arrow()

    root = tmp_path / "mmsu" / "data"
    root.mkdir(parents=True)
    text_keys = ("choice_a", "choice_b", "choice_c", "choice_d", "answer_gt")  # parquet columns have one type
    rows = [{k: (str(v) if k in text_keys else v) for k, v in r.items() if k != "audio_path"} for r in fx.MMSU_ROWS]
    pq.write_table(pa.Table.from_pylist([dict(r, audio={"bytes": fx.wav_bytes(), "path": "x.wav"}) for r in rows]),
                   root / "train-00000-of-00001.parquet")
    loaded = get_benchmark("mmsu").load(tmp_path / "mmsu")
    assert [i.id for i in loaded.items] == ["mmsu-1", "mmsu-2"] and loaded.items[0].row["audio"][0][:4] == b"RIFF"


def test_mmau_test_split_without_answers_loads(tmp_path):
    root = tmp_path / "mmau"
    rows = [{k: v for k, v in r.items() if k != "answer"} | {"audio_id": r["audio_id"].replace("test-mini", "test"),
                                                            "split": "test"} for r in fx.MMAU_ROWS[:2]]
    root.mkdir()
    (root / "mmau-test.json").write_text(json.dumps(rows))
    for r in rows:
        fx.write_wav(root / r["audio_id"])
    loaded = get_benchmark("mmau").load(root, split="test")
    assert [i.fields["answer"] for i in loaded.items] == ["", ""]

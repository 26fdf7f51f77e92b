"""One path from item to prompt to sample to score (issue 6, "What it must show").

From synthetic items written to disk and loaded back, an SFT batch (`Task.encode_example` + `collate_sft`), a
generation prompt (`Task.encode_prompt`), a rollout batch (`mgrd.rollout.rollout` on the tiny model) and the
evaluation records (`records_from_rollout`, scored by `Task.grade`) are built, and must agree on the prompt
tokens and audio features. Three items (audio with choices, text with choices, a conversation) have different
lengths, so the generation batch is left-padded and the SFT batch right-padded.
"""

import pytest
import torch

from mgrd.chat import OFFICIAL_PART_JOIN, render_chat
from mgrd.data.collate import IGNORE_INDEX, collate_prompts, collate_sft
from mgrd.data.manifest import load_manifest
from mgrd.data.records import read_records, records_from_rollout, write_records
from mgrd.data.synth.writer import synthesize
from mgrd.generate import SamplingConfig
from mgrd.models import build_model
from mgrd.models.presets import tiny
from mgrd.rollout import rollout
from mgrd.tasks import get_task
from mgrd.tasks.base import clip_features

FAMILIES = ["pitch_compare", "text_compare", "conversation"]
K = 2


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "suite"
    manifest = synthesize(out, n=len(FAMILIES), seed=0, families=FAMILIES, workers=1, progress=False)
    loaded = load_manifest(manifest)
    assert [i.task for i in loaded] == FAMILIES
    return loaded


@pytest.fixture(scope="module")
def model(tok, ids):
    return build_model(tiny(len(tok), ids), seed=0).eval()


@pytest.mark.integration  # writes a suite and samples the tiny model (~10 s on a shared 2-core machine)
def test_sft_generation_rollout_and_evaluation_share_the_prompt(tok, model, items, tmp_path):
    audio_config = model.config.audio
    pad_id = model.config.special_ids.pad
    tasks = [get_task(item.task) for item in items]

    prompts = [t.encode_prompt(item, tok, audio_config) for t, item in zip(tasks, items)]
    # SFT examples from clip features computed once per item: the same ids and mels as decoding again
    features = [clip_features(item, audio_config) for item in items]
    examples = [t.encode_example(item, tok, audio_config=audio_config, features=f)
                for t, item, f in zip(tasks, items, features)]
    sft = collate_sft(examples, pad_id)
    batch = rollout(model, prompts, SamplingConfig(max_new_tokens=6, seed=0), num_samples=K, tokenizer=tok)
    records = records_from_rollout(batch, items, model_name="tiny", iteration=0)

    for i, (task, item, prompt) in enumerate(zip(tasks, items, prompts)):
        # (a) SFT: the tokens before the first label are the generation prompt
        first_label = int((sft.labels[i] != IGNORE_INDEX).nonzero()[0])
        assert sft.input_ids[i, :first_label].tolist() == prompt.input_ids
        # (c) rollout: each of the K rows of this prompt, padding removed, is the generation prompt
        for r in range(i * K, (i + 1) * K):
            assert int(batch.group_ids[r]) == i
            assert batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist() == prompt.input_ids
        # (d) evaluation: the record keeps the same ids, the rendered prompt, and the task's grade of each sample
        record = records[i]
        assert (record.item_id, record.task, record.iteration) == (item.id, item.task, 0)
        assert record.prompt_ids == prompt.input_ids
        assert record.prompt == render_chat(task.prompt(item), part_join=OFFICIAL_PART_JOIN)
        assert [c.text for c in record.completions] == batch.texts[i * K:(i + 1) * K]
        for c in record.completions:
            assert c.scores["correct"]["score"] == task.grade(item, c.text)
            assert c.n_tokens == len(c.token_ids) >= 1

    # the choices are shown, lettered, in the prompt the model sees
    shown = tok.decode(prompts[0].input_ids)
    assert all(f"{chr(65 + j)}. {c}" in shown for j, c in enumerate(items[0].choices))
    # the audio features: one clip, computed once by the encoder, identical on both paths
    gen = collate_prompts(prompts, pad_id)
    assert gen.mels is not None and gen.mels.shape[0] == 1
    assert torch.equal(sft.mels, gen.mels) and torch.equal(sft.mel_lens, gen.mel_lens)
    # and the records survive the file round trip
    write_records(tmp_path / "eval.jsonl", records)
    assert read_records(tmp_path / "eval.jsonl") == records

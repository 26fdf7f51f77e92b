"""Model config: the official config.json schema, special ids and stop ids, presets' released values."""

import copy
import json

import pytest

from mgrd.models import ConfigError, ModelConfig, SpecialTokenIds, preset_config
from mgrd.models.presets import tiny


def official_dict() -> dict:
    """A released-style nested config (values of the Step-Audio-R1 release, reference §4)."""
    return {
        "architectures": ["StepAudio2ForCausalLM"],
        "model_type": "step_audio_2",
        "audio_encoder_config": {"n_mels": 128, "n_audio_ctx": 1500, "n_audio_state": 1280, "n_audio_head": 20,
                                 "n_audio_layer": 32, "n_codebook_size": 4096, "llm_dim": 5120, "kernel_size": 3,
                                 "adapter_stride": 2},
        "text_config": {"hidden_size": 5120, "intermediate_size": 27648, "num_attention_heads": 40,
                        "num_key_value_heads": 8, "num_hidden_layers": 64, "vocab_size": 158720,
                        "rms_norm_eps": 1e-5, "rope_theta": 1e6, "max_position_embeddings": 65536,
                        "eos_token_id": [151643, 151645, 151665], "pad_token_id": 151643},
        "audio_token_ids": {"audio_start": 151688, "audio_end": 151689, "audio_patch": 151690},
        "dtype": "bfloat16",
    }


def test_config_json_keeps_the_official_audio_token_ids_key():
    config = ModelConfig.from_dict(official_dict())
    assert config.special_ids == SpecialTokenIds(151688, 151689, 151690)
    out = config.to_dict()
    assert out["audio_token_ids"] == {"audio_start": 151688, "audio_end": 151689, "audio_patch": 151690}
    assert "special_ids" not in out
    assert out == official_dict()  # unknown keys (n_codebook_size, dtype) written back unchanged


def test_a_tokenizers_full_ids_write_only_the_audio_ids(ids):
    config = tiny(512, ids)
    assert json.loads(json.dumps(config.to_dict()))["audio_token_ids"] == ids.audio_ids
    assert ModelConfig.from_dict(config.to_dict()).special_ids == SpecialTokenIds(**ids.audio_ids)


def test_stop_ids_are_eot_then_every_eos_id():
    d = official_dict()
    config = ModelConfig.from_dict(d)
    assert config.stop_ids() == (151643, 151645, 151665)  # no tokenizer seen: <|EOT|> not known
    config.special_ids = SpecialTokenIds(151688, 151689, 151690, eot=151665)
    assert config.stop_ids() == (151665, 151643, 151645)  # EOT first, no repeats
    single = copy.deepcopy(d)
    single["text_config"]["eos_token_id"] = 151643
    assert ModelConfig.from_dict(single).stop_ids() == (151643,)
    del single["text_config"]["eos_token_id"]
    del single["audio_token_ids"]
    assert ModelConfig.from_dict(single).stop_ids() == ()


def test_tiny_config_records_the_tokenizers_eos_and_pad(ids):
    config = tiny(512, ids)
    assert config.text["eos_token_id"] == ids.eos and config.text["pad_token_id"] == ids.pad
    assert config.stop_ids() == (ids.eot, ids.eos) == (508, 506)
    assert "eos_token_id" not in tiny(64, SpecialTokenIds(60, 61, 62)).text


def test_released_presets_carry_the_released_ids():
    for name in ("step-audio-2-mini", "step-audio-r1"):
        config = preset_config(name)
        assert config.special_ids == SpecialTokenIds(151688, 151689, 151690)
        assert config.stop_ids() == (151643, 151645, 151665)  # the eos list the official config class builds
        assert config.text["pad_token_id"] == 151643


def test_bad_audio_token_ids_key_is_one_clear_error():
    d = official_dict()
    d["audio_token_ids"] = {"audio_start": 1}
    with pytest.raises(ConfigError, match="audio_token_ids must map audio_start, audio_end and audio_patch"):
        ModelConfig.from_dict(d)


def test_token_rule_is_written_only_when_not_hf():
    config = ModelConfig.from_dict(official_dict())
    assert config.audio.token_rule == "hf" and "token_rule" not in config.to_dict()["audio_encoder_config"]
    config.audio.token_rule = "vllm"
    again = ModelConfig.from_dict(config.to_dict())
    assert again.audio.token_rule == "vllm" and again.to_dict()["audio_encoder_config"]["token_rule"] == "vllm"
    assert (config.audio.token_count(52), ModelConfig.from_dict(official_dict()).audio.token_count(52)) == (7, 6)
    d = official_dict()
    d["audio_encoder_config"]["token_rule"] = "official"
    with pytest.raises(ConfigError, match="token_rule must be one of hf, vllm, got 'official'"):
        ModelConfig.from_dict(d)


def test_token_count_uses_the_configs_adapter_kernel_and_stride():
    config = ModelConfig.from_dict(official_dict())
    config.audio.kernel_size, config.audio.adapter_stride = 5, 4
    assert config.audio.token_count(1002) == (250 + 2 - 5) // 4 + 1 == 62


def tiny_nested() -> dict:
    return tiny(64, SpecialTokenIds(60, 61, 62)).to_dict()


def tiny_flat() -> dict:
    """The same tiny model in the flat internal layout of the R1.1 files (config_origin.json)."""
    nested = tiny_nested()
    text = dict(nested["text_config"])
    text["max_seq_len"] = text.pop("max_position_embeddings")  # the internal name of the context length
    text.pop("num_key_value_heads")  # the official configs carry num_attention_groups
    extra = {k: v for k, v in nested.items() if k not in ("architectures", "model_type", "text_config")}
    return {"architectures": ["StepAudioForCausalLMV2"], "model_type": "step_audio_qwen2", **text, **extra}


def test_flat_step_audio_qwen2_config_loads_like_the_nested_one():
    flat, nested = ModelConfig.from_dict(tiny_flat()), ModelConfig.from_dict(tiny_nested())
    assert flat.audio == nested.audio and flat.special_ids == nested.special_ids
    assert flat.qwen2_config().to_dict() == nested.qwen2_config().to_dict()
    assert flat.qwen2_config().num_key_value_heads == 2 and flat.text["max_position_embeddings"] == 4096
    saved = flat.to_dict()  # written back in the nested official layout
    assert saved["model_type"] == "step_audio_2" and saved["architectures"] == ["StepAudio2ForCausalLM"]
    assert "hidden_size" not in saved and saved["text_config"]["hidden_size"] == 128
    from mgrd.models import build_model

    shapes = {k: v.shape for k, v in build_model(flat, device="meta").state_dict().items()}
    assert shapes == {k: v.shape for k, v in build_model(nested, device="meta").state_dict().items()}


def test_flat_config_keeps_the_released_eos_ids():
    flat = tiny_flat()
    flat["eos_token_id"] = [151643, 151645, 151665]
    assert ModelConfig.from_dict(flat).stop_ids() == (151643, 151645, 151665)


def test_unknown_model_type_names_both_layouts():
    d = tiny_nested()
    d["model_type"] = "qwen2_audio"
    with pytest.raises(ConfigError, match="expected 'step_audio_2' \\(or the flat 'step_audio_qwen2'\\)"):
        ModelConfig.from_dict(d)


def test_step_audio_2_mini_has_the_released_context_length():
    assert preset_config("step-audio-2-mini").text["max_position_embeddings"] == 16384
    assert preset_config("step-audio-r1").text["max_position_embeddings"] == 65536

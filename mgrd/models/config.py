"""Model configuration in the official `step_audio_2` `config.json` schema.

`ModelConfig` mirrors the released Step-Audio 2 / Step-Audio-R1 `config.json`: `model_type: step_audio_2`,
a nested `audio_encoder_config` (Whisper-style encoder + adapter sizes) and a nested `text_config` (the
keyword arguments of a transformers `Qwen2Config`). Keys we do not use are kept and written back unchanged,
so a loaded checkpoint saves to the same layout. The flat internal layout of the Step-Audio-R1.1 files
(`model_type: step_audio_qwen2`, `config_origin.json`: the text keys at the top level) loads too, and is saved
in the nested official layout. This module parses and validates; it builds no modules.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from mgrd.audio import TOKEN_RULES, audio_token_count
from mgrd.tokenizer import SpecialTokenIds

MODEL_TYPE = "step_audio_2"
FLAT_MODEL_TYPE = "step_audio_qwen2"  # Step-Audio-R1.1's internal flat config (config_origin.json)
# Top-level keys of a flat config that belong to the text model (those the official configuration code moves into
# text_config), and the internal name of the context length.
FLAT_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_attention_groups", "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range",
    "rms_norm_eps", "rope_theta", "rope_scaling", "eos_token_id", "pad_token_id",
)  # fmt: skip
FLAT_ALIASES = {"max_seq_len": "max_position_embeddings"}
ADAPTER_HIDDEN = 2048  # hard-coded in the official modeling code; not in the official config


class ConfigError(ValueError):
    """A config.json that does not describe a step_audio_2 model."""


def read_json_object(path: Path) -> dict:
    """The JSON object in `path` (a `config.json`); ConfigError when it is missing, not JSON or not an object."""
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


@dataclass
class AudioEncoderConfig:
    """The audio side: encoder (Whisper-style, 25 Hz out) and adapter (stride 2, 12.5 Hz out)."""

    n_mels: int = 128
    n_audio_ctx: int = 1500  # positions after conv2: 1500 covers 29.98 s
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 32
    llm_dim: int = 5120  # adapter output width = the LLM's hidden size
    kernel_size: int = 3  # adapter conv kernel
    adapter_stride: int = 2
    adapter_hidden: int = ADAPTER_HIDDEN
    key_mask_rule: str = "step_audio"  # "qwen2_audio" for an encoder taken from a Qwen2-Audio checkpoint
    token_rule: str = "hf"  # audio-token count and key mask: "hf" (the HF code, fixture) or "vllm" (official server)
    extra: dict = field(default_factory=dict)  # unused official keys (e.g. n_codebook_size), kept as-is

    def __post_init__(self):
        if self.token_rule not in TOKEN_RULES:
            rules = ", ".join(TOKEN_RULES)
            raise ConfigError(f"audio_encoder_config.token_rule must be one of {rules}, got {self.token_rule!r}")

    def token_count(self, mel_frames: int) -> int:
        """Audio tokens a chunk of `mel_frames` mel frames becomes in this model (`mgrd.audio.audio_token_count`)."""
        return audio_token_count(mel_frames, rule=self.token_rule, kernel_size=self.kernel_size, stride=self.adapter_stride)

    @classmethod
    def from_dict(cls, d: dict) -> "AudioEncoderConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "extra"}
        extra = {k: v for k, v in d.items() if k not in cls.__dataclass_fields__}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        unofficial = ("extra", "adapter_hidden", "key_mask_rule", "token_rule")
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in unofficial}
        if self.adapter_hidden != ADAPTER_HIDDEN:  # only non-official settings need writing down
            out["adapter_hidden"] = self.adapter_hidden
        if self.key_mask_rule != "step_audio":
            out["key_mask_rule"] = self.key_mask_rule
        if self.token_rule != "hf":
            out["token_rule"] = self.token_rule
        out.update(self.extra)
        return out


@dataclass
class ModelConfig:
    """A whole model: audio side + Qwen2 text config + the special token ids (placeholders, turn ends)."""

    audio: AudioEncoderConfig
    text: dict  # Qwen2Config keyword arguments, as in the official `text_config`
    special_ids: SpecialTokenIds | None = None  # config.json stores the audio ids; a tokenizer fills the rest
    extra: dict = field(default_factory=dict)  # other top-level keys (architectures, torch_dtype, ...)

    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end generation: `<|EOT|>` (when known), then every id of `text_config.eos_token_id`.

        Returns:
            Distinct ids in that order, e.g. `(151665, 151643, 151645)` for a released config with its tokenizer.
        """
        eos = self.text.get("eos_token_id")
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        eot = [] if self.special_ids is None or self.special_ids.eot is None else [self.special_ids.eot]
        return tuple(dict.fromkeys(int(i) for i in eot + eos))

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ModelConfig":
        """Parse a `config.json` dict, nested (`step_audio_2`) or flat (`step_audio_qwen2`).

        Raises:
            ConfigError: another model type, a missing or malformed part, bad `audio_token_ids`.
        """
        model_type = d.get("model_type")
        if model_type == FLAT_MODEL_TYPE and "text_config" not in d:
            d = _nest_flat(d)
        elif model_type not in (MODEL_TYPE, FLAT_MODEL_TYPE):
            raise ConfigError(
                f"{source}: model_type is {model_type!r}, expected {MODEL_TYPE!r} (or the flat {FLAT_MODEL_TYPE!r}) "
                "(a Step-Audio 2 / Step-Audio-R1 checkpoint). To combine a Qwen2-Audio encoder and a "
                "Qwen2.5 LLM use mgrd.models.build_from_parts."
            )
        for key in ("audio_encoder_config", "text_config"):
            if not isinstance(d.get(key), dict):
                raise ConfigError(f"{source}: missing or malformed {key!r}")
        ids = d.get("audio_token_ids")
        if ids is not None and (not isinstance(ids, dict) or set(ids) != {"audio_start", "audio_end", "audio_patch"}):
            raise ConfigError(f"{source}: audio_token_ids must map audio_start, audio_end and audio_patch to ids, got {ids!r}")
        extra = {k: v for k, v in d.items() if k not in ("model_type", "audio_encoder_config", "text_config", "audio_token_ids")}
        return cls(
            audio=AudioEncoderConfig.from_dict(d["audio_encoder_config"]),
            text=copy.deepcopy(d["text_config"]),
            special_ids=SpecialTokenIds(**ids) if ids else None,
            extra=extra,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        return cls.from_dict(read_json_object(path), source=str(path))

    def to_dict(self) -> dict:
        out = {"architectures": ["StepAudio2ForCausalLM"], "model_type": MODEL_TYPE}
        out.update(self.extra)
        out["audio_encoder_config"] = self.audio.to_dict()
        out["text_config"] = copy.deepcopy(self.text)
        if self.special_ids is not None:
            out["audio_token_ids"] = self.special_ids.audio_ids
        return out

    def qwen2_config(self):
        """The transformers `Qwen2Config` of the language model."""
        from transformers import Qwen2Config

        kwargs = {k: v for k, v in self.text.items() if k not in ("architectures", "model_type")}
        if "num_attention_groups" in kwargs:  # the official configs' name for the KV heads
            kwargs.setdefault("num_key_value_heads", kwargs["num_attention_groups"])
        kwargs.setdefault("tie_word_embeddings", False)
        return Qwen2Config(**kwargs)


def _nest_flat(d: dict) -> dict:
    """The nested form of a flat `step_audio_qwen2` config: text keys into `text_config`, official names on top."""
    text = {k: copy.deepcopy(d[k]) for k in FLAT_TEXT_KEYS if k in d}
    for internal, name in FLAT_ALIASES.items():
        if internal in d:
            text.setdefault(name, d[internal])
    moved = set(FLAT_TEXT_KEYS) | set(FLAT_ALIASES) | {"model_type", "architectures"}
    nested = {k: v for k, v in d.items() if k not in moved}
    nested.update(model_type=MODEL_TYPE, architectures=["StepAudio2ForCausalLM"], text_config=text)
    return nested

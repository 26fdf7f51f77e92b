"""The model: audio encoder -> adapter -> Qwen2 decoder (Step-Audio 2 / Step-Audio-R1 layout).

encoder.py and adapter.py hold the audio side, reasoner.py the composition, checkpoint.py the official
file layout (and the Qwen2-Audio + Qwen2.5 parts), presets.py the named sizes.
"""

from mgrd.models.checkpoint import CheckpointError, build_from_parts, load_pretrained, save_pretrained
from mgrd.models.config import AudioEncoderConfig, ConfigError, ModelConfig
from mgrd.models.presets import PRESETS, build_model, parameter_counts, preset_config
from mgrd.models.reasoner import AudioPlaceholderError, AudioReasoner, ReasonerOutput
from mgrd.tokenizer import SpecialTokenIds

__all__ = [
    "AudioEncoderConfig", "AudioPlaceholderError", "AudioReasoner", "CheckpointError", "ConfigError",
    "ModelConfig", "PRESETS", "ReasonerOutput", "SpecialTokenIds", "build_from_parts", "build_model",
    "load_pretrained", "parameter_counts", "preset_config", "save_pretrained",
]

"""mgrd: build, train, evaluate and serve audio-language models that reason in sound.

The Step-Audio-R1 architecture (frozen 25 Hz audio encoder -> stride-2 adapter -> Qwen2.5 decoder) and the
Modality-Grounded Reasoning Distillation recipe. See README.md for the map.
"""

__version__ = "0.1.0"

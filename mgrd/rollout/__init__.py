"""Rollouts: K sampled completions per prompt as tensors (`RolloutBatch`), from a `Rollout` engine.

`rollout()` / `TorchRollout` run the model in-process: on the fast path (`fast.py`: static KV cache and a lean
decoding step; `slots.py`: slots with continuous refill) when the model is a plain `AudioReasoner`, else through
`model(...)` alone (`engine.py`). Another engine (a vLLM server, say) implements the same `Rollout` protocol.
`mgrd.generate.generate` is the list-of-`Completion` view.
"""

from mgrd.rollout.batch import FinishReason, RolloutBatch
from mgrd.rollout.engine import (
    Rollout, TorchRollout, decode_steps, fit_context, resolve_stop_ids, response_logprobs, rollout, stream_tokens,
)

__all__ = ["FinishReason", "Rollout", "RolloutBatch", "TorchRollout", "decode_steps", "fit_context",
           "resolve_stop_ids", "response_logprobs", "rollout", "stream_tokens"]

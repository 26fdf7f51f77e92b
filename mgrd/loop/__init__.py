"""The MGRD loop (Step-Audio-R1 §4.2; DESIGN.md §6): iterate self-distillation with grounded filters.

- `mgrd.loop.filters`: the four candidate filters (correctness, acoustic grounding with verified claims,
  coherence, self-cognition), each verdict with its reason in the sample-record JSONL, and an optional LLM
  judge behind them;
- `mgrd.loop.select`: D_audio-cot (candidates passing every filter, at most M per item) and the pass@K band
  of the RL set, mixed with text tasks.

Submodules are imported where they are used, so importing `mgrd.loop` costs nothing.
"""

"""Training: cold-start SFT (`sft`), RL with verifiable rewards (`rl`), and what both stand on.

- `config`: the shared config sections (run, optimiser, model setup), typed dataclasses with a help line per field;
- `run`: the run folder `runs/<name>/` (metrics.jsonl, TensorBoard, progress bar, atomic checkpoints, final model);
- `optim`: which parameters train (frozen encoder; adapter + LLM, or LoRA through peft), AdamW, cosine schedule;
- `data`: the SFT mixture of sources, encoded through the shared path (`Task.encode_example`, `collate_sft`);
- `sft`: `mgrd sft` (setup -> loop -> save in one file).

Nothing is imported here, so `import mgrd.train` stays cheap.
"""

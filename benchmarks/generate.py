"""Benchmark: generation with the KV cache against loops without one, and encoding audio at its own length.

1. Decoding, tokens per second, greedy, exactly `--new-tokens` tokens (no stop ids), batch 1 and 8, one 5 s
   clip per prompt, three ways:
   - `generate` with the KV cache (prefill once, then one token per step);
   - `generate(use_cache=False)`: the whole sequence, audio included, runs through `model(...)` every step,
     and only the last position gets logits (our own reference loop);
   - the official transformers path: the Step-Audio 2 / R1 HF forward drops the cache, so `generate` calls
     the full forward (ids + audio -> encoder, adapter, LLM, lm_head over every position) at every step.
2. Encoding: a 5 s clip encoded at its own length against the same clip padded to 30 s (3000 mel frames, the
   fixed input the transformers Qwen2-Audio encoder requires).
3. Streaming text: turning `--stream-tokens` ids (the tiny tokenizer's, mixed text with multi-byte characters)
   into text pieces with `text_deltas` (a short window per token) against decoding the whole prefix every step
   (the former loop, quadratic), with the model out of the picture.

Each measurement is warmed up once (decoding: with a 16-token run), then the median of `--repeats` runs is
reported; the variants are timed in turn within each round. Torch threads are left at their default.
Run: `python benchmarks/generate.py` (about 30 min on 2 cores) or `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import platform
import statistics
import time

import numpy as np
import torch

from mgrd.audio import audio_token_count, log_mel, pad_mels
from mgrd.generate import Prompt, SamplingConfig, decode_text, generate, text_deltas
from mgrd.models import AudioEncoderConfig, ModelConfig, SpecialTokenIds, build_model

VOCAB = 8192
AUDIO_IDS = SpecialTokenIds(audio_start=VOCAB - 3, audio_end=VOCAB - 2, audio_patch=VOCAB - 1)
# Small enough for a CPU, big enough that the model, not Python, dominates a full forward.
DIMS = dict(enc_layers=4, enc_width=384, enc_heads=6, llm_layers=8, llm_width=512, llm_heads=8, llm_kv_heads=2,
            llm_mlp=1536, vocab=VOCAB)
TEXT_TOKENS = 16  # text tokens after the audio block in each prompt


def bench_config() -> ModelConfig:
    d = DIMS
    audio = AudioEncoderConfig(n_mels=128, n_audio_ctx=1500, n_audio_state=d["enc_width"], n_audio_head=d["enc_heads"],
                               n_audio_layer=d["enc_layers"], llm_dim=d["llm_width"], adapter_hidden=2048)
    text = dict(vocab_size=d["vocab"], hidden_size=d["llm_width"], intermediate_size=d["llm_mlp"],
                num_hidden_layers=d["llm_layers"], num_attention_heads=d["llm_heads"],
                num_key_value_heads=d["llm_kv_heads"], max_position_embeddings=4096, rms_norm_eps=1e-6,
                rope_theta=1_000_000.0, tie_word_embeddings=False)
    return ModelConfig(audio=audio, text=text, special_ids=AUDIO_IDS)


def sine_mels(freq_hz: float, seconds: float) -> torch.Tensor:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return log_mel((0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32))


def make_prompts(batch: int, seconds: float = 5.0) -> list[Prompt]:
    gen = torch.Generator().manual_seed(0)
    prompts = []
    for i in range(batch):
        mels = sine_mels(220.0 * (1 + i), seconds)
        n_audio = audio_token_count(mels.shape[-1])
        text = torch.randint(0, VOCAB - 3, (TEXT_TOKENS,), generator=gen).tolist()
        ids = [AUDIO_IDS.audio_start] + [AUDIO_IDS.audio_patch] * n_audio + [AUDIO_IDS.audio_end] + text
        prompts.append(Prompt(input_ids=ids, mels=[mels]))
    return prompts


def median_times(fns: dict, repeats: int, warmups: dict | None = None) -> dict:
    """Warm each function up once (with `warmups[name]` if given, a shorter run of the same code), then time
    `repeats` rounds that call them in turn, so that load from other processes on the machine hits every
    variant alike. Returns {name: (median seconds, last result)}."""
    for name, fn in fns.items():
        (warmups or fns)[name]()
    results = {}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


@torch.no_grad()
def official_loop(model, prompts: list[Prompt], new_tokens: int) -> list[list[int]]:
    """Greedy decoding the way transformers `generate` drives a forward that returns no cache: every step feeds
    the whole left-padded sequence with its audio, so the encoder, adapter, LLM and lm_head (all positions) run
    again. Returns the new token ids per prompt."""
    width = max(len(p.input_ids) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p.input_ids)) + list(p.input_ids) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in prompts])
    mels, lens = pad_mels([m for p in prompts for m in p.mels])
    for _ in range(new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(ids, mask, mels, lens, position_ids=positions).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
    return ids[:, width:].tolist()


def bench_decoding(model, batch: int, new_tokens: int, repeats: int, clip_seconds: float) -> dict:
    prompts = make_prompts(batch, clip_seconds)
    # The only stop id is an audio id, which generation never samples: exactly new_tokens each.
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0, stop_ids=(AUDIO_IDS.audio_patch,))
    short = dataclasses.replace(cfg, max_new_tokens=min(16, new_tokens))

    def ours(sampling: SamplingConfig, use_cache: bool) -> list[list[int]]:
        return [c[0].token_ids for c in generate(model, prompts, sampling, use_cache=use_cache)]

    variants = {
        "cache": functools.partial(ours, cfg, True),
        "recompute": functools.partial(ours, cfg, False),
        "official": functools.partial(official_loop, model, prompts, new_tokens),
    }
    # The loops without a cache take minutes at batch 8; a 16-token run warms up the same code.
    warmups = {
        "cache": functools.partial(ours, short, True),
        "recompute": functools.partial(ours, short, False),
        "official": functools.partial(official_loop, model, prompts, short.max_new_tokens),
    }
    runs = median_times(variants, repeats, warmups)
    tokens = {name: out for name, (_, out) in runs.items()}
    assert all(len(row) == new_tokens for row in tokens["cache"])
    secs = {name: t for name, (t, _) in runs.items()}
    return dict(
        batch=batch,
        prompt_len=len(prompts[0].input_ids),
        tps={name: batch * new_tokens / t for name, t in secs.items()},
        vs_official=secs["official"] / secs["cache"],
        vs_recompute=secs["recompute"] / secs["cache"],
        same_tokens=tokens["cache"] == tokens["recompute"] == tokens["official"],
    )


def bench_encoder(model, repeats: int, seconds: float = 5.0) -> dict:
    mels = sine_mels(440.0, seconds)
    own, lens = pad_mels([mels])
    padded = torch.nn.functional.pad(own, (0, 3000 - own.shape[-1]))  # 30 s of frames, as Qwen2-Audio pads
    with torch.no_grad():
        variants = {"own": functools.partial(model.encode_audio, own, lens),
                    "pad": functools.partial(model.encode_audio, padded, lens)}
        runs = median_times(variants, repeats)
    (t_own, out_own), (t_pad, _) = runs["own"], runs["pad"]
    return dict(frames=own.shape[-1], tokens=out_own[0].shape[0], own_ms=1e3 * t_own, padded_ms=1e3 * t_pad,
                ratio=t_pad / t_own)


def prefix_deltas(token_ids: list[int], decode) -> list[str]:
    """The former streaming loop: decode every id so far at each step (quadratic in the length)."""
    ids, emitted, pieces = [], "", []
    for tok in token_ids:
        ids.append(tok)
        text = decode(ids)
        if not text.endswith("\ufffd") and len(text) > len(emitted):
            pieces.append(text[len(emitted) :])
            emitted = text
    text = decode(ids)
    return pieces + ([text[len(emitted) :]] if len(text) > len(emitted) else [])


def bench_streaming(n_tokens: int) -> dict:
    from mgrd.tokenizer import build_tiny_tokenizer, tiny_corpus

    tok = build_tiny_tokenizer()
    text = " ".join(tiny_corpus()) + " é€😀 "
    ids = []
    while len(ids) < n_tokens:
        ids += tok.encode(text, add_special_tokens=False)
    ids = ids[:n_tokens]
    decode = functools.partial(decode_text, tok)
    variants = {"window": lambda: list(text_deltas(iter(ids), decode)), "prefix": lambda: prefix_deltas(ids, decode)}
    runs = median_times(variants, 1)
    full = decode(ids)
    return dict(tokens=n_tokens, window_s=runs["window"][0], prefix_s=runs["prefix"][0],
                same=("".join(runs["window"][1]) == "".join(runs["prefix"][1]) == full))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 new tokens, 1 repeat")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="audio per decoding prompt (<= 25)")
    parser.add_argument("--skip-encoder", action="store_true", help="skip the encoder timing")
    parser.add_argument("--skip-decoding", action="store_true", help="skip the decoding timing")
    parser.add_argument("--stream-tokens", type=int, default=8000, help="ids turned into streamed text (0 skips)")
    args = parser.parse_args()
    new_tokens, repeats = (32, 1) if args.quick else (args.new_tokens, args.repeats)

    if args.stream_tokens:
        r = bench_streaming(args.stream_tokens if not args.quick else 1000)
        print(f"streaming text for {r['tokens']} tokens: window {r['window_s']:.2f} s, whole prefix "
              f"{r['prefix_s']:.2f} s ({r['prefix_s'] / r['window_s']:.0f}x); same text: {r['same']}\n", flush=True)
    model = build_model(bench_config(), seed=0).eval()
    d = DIMS
    print(f"machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"model: LLM {d['llm_layers']} layers x {d['llm_width']} ({d['llm_heads']} heads, {d['llm_kv_heads']} KV "
          f"heads, MLP {d['llm_mlp']}), vocab {d['vocab']}; encoder {d['enc_layers']} layers x {d['enc_width']}")
    print(f"decoding: {args.clip_seconds:g} s clip + {TEXT_TOKENS} text tokens per prompt, {new_tokens} new tokens "
          f"(greedy, no stop), warm-up + median of {repeats}\n")
    print("| batch | prompt tokens | KV cache tok/s | no-cache recompute tok/s | official loop tok/s "
          "| speed-up vs official | speed-up vs recompute | same tokens |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for batch in [] if args.skip_decoding else args.batches:
        r = bench_decoding(model, batch, new_tokens, repeats, args.clip_seconds)
        tps = r["tps"]
        print(f"| {r['batch']} | {r['prompt_len']} | {tps['cache']:.1f} | {tps['recompute']:.1f} | "
              f"{tps['official']:.1f} | {r['vs_official']:.1f}x | {r['vs_recompute']:.1f}x | "
              f"{'yes' if r['same_tokens'] else 'no'} |", flush=True)
    if args.skip_encoder:
        return
    e = bench_encoder(model, max(repeats, 5))
    print("\n| encoder input | mel frames | time (ms) |")
    print("|---|---:|---:|")
    print(f"| 5 s clip at its length | {e['frames']} | {e['own_ms']:.1f} |")
    print(f"| 5 s clip padded to 30 s | 3000 | {e['padded_ms']:.1f} |")
    print(f"\nencoder speed-up: {e['ratio']:.1f}x ({e['tokens']} audio tokens either way)")


if __name__ == "__main__":
    main()

"""Benchmark: generation with the KV cache against loops without one, and encoding audio at its own length.

1. Decoding, tokens per second, greedy, exactly `--new-tokens` tokens (no stop ids), batch 1 and 8, one 5 s
   clip per prompt, four ways:
   - `generate` on the fast path (`mgrd.rollout.fast`: static KV cache, lean decoding step);
   - `generate(fast=False)` with the transformers KV cache (prefill once, then one `model(...)` call per step);
   - `generate(use_cache=False)`: the whole sequence, audio included, runs through `model(...)` every step,
     and only the last position gets logits (our own reference loop);
   - the official transformers path: the Step-Audio 2 / R1 HF forward drops the cache, so `generate` calls
     the full forward (ids + audio -> encoder, adapter, LLM, lm_head over every position) at every step.
   Beside them, the memory roofline measured in the same run: the bytes of the decoder weights one step reads
   (every layer and `lm_head`; the embedding reads one row) over the fastest read of a large fp32 matrix (a
   mat-vec, the mat-vec split over the threads, a sum: `measure_bandwidth`), and the fraction of it each cached
   path reaches per decoding step (step time = the difference between a `--new-tokens` run and a 16-token run,
   over the extra tokens, so prefill drops out). Then the fast path's step alone (no sampling, no loop) for each
   matrix layout of `mgrd.rollout.fast` this machine runs (split, MKL-packed, oneDNN-packed), and which one the
   fast path takes here by default.
2. Rollouts with mixed stop lengths (`--rollout`): K = 8 samples of 8 prompts (temperature 1) on 16 slots, the
   stop ids a fixed set of tokens that ends a row at each step with probability about 1/128 (lengths spread
   from a few tokens to the 384-token budget), continuous refill against static waves of 16 rows; useful
   (generated) tokens per second and the ratio, and the same run in bf16 against fp32 at batch 1 and 8.
3. Encoding: a 5 s clip encoded at its own length against the same clip padded to 30 s (3000 mel frames, the
   fixed input the transformers Qwen2-Audio encoder requires).
4. Streaming text: turning `--stream-tokens` ids (the tiny tokenizer's, mixed text with multi-byte characters)
   into text pieces with `text_deltas` (a short window per token) against decoding the whole prefix every step
   (the former loop, quadratic), with the model out of the picture.

Each measurement is warmed up once (decoding: with a 16-token run), then the median of `--repeats` runs is
reported; the variants are timed in turn within each round. Torch threads are left at their default.
Run: `python benchmarks/generate.py` (about 30 min on 2 cores) or `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
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
from mgrd.rollout import rollout
from mgrd.rollout.fast import LAYOUTS, FastDecoder, StaticKV, _can_pack, default_layout

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


def decoder_bytes(model) -> int:
    """Bytes one decoding step reads from the weights: every decoder layer, the final norm and `lm_head` (the
    embedding contributes one row per token, negligible)."""
    params = list(model.model.layers.parameters()) + list(model.model.norm.parameters()) + [model.lm_head.weight]
    return sum(p.numel() * p.element_size() for p in params)


def measure_bandwidth(repeats: int = 10) -> dict[str, float]:
    """Read rates in bytes/s over a 256 MB fp32 matrix (far larger than the caches), the median of `repeats`
    calls of each of three kernels: a mat-vec (the access pattern of a batch-1 decoding step), the same mat-vec
    split by output columns over the torch threads (as the fast path multiplies at batch 1), and a plain sum.
    The roofline takes the fastest: on one CPU the mat-vec alone streams at the full rate, on another one thread
    of it reads at half the rate a sum does (an AMD EPYC: mat-vec 23, split 31-41, sum 45-48 GB/s)."""
    matrix, vector = torch.randn(16384, 4096), torch.randn(4096)
    parts = torch.get_num_threads()
    split = torch.stack(matrix.t().chunk(parts, dim=1)).contiguous()  # [n, in, out / n]
    kernels = {"mat-vec": lambda: matrix @ vector,
               "split mat-vec": lambda: torch.bmm(vector.expand(parts, 1, -1), split),
               "sum": lambda: matrix.sum()}
    rates = {}
    for name, fn in kernels.items():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rates[name] = matrix.numel() * 4 / statistics.median(times)
    return rates


def bench_decoding(model, batch: int, new_tokens: int, repeats: int, clip_seconds: float,
                   baselines: bool = True) -> dict:
    prompts = make_prompts(batch, clip_seconds)
    # The only stop id is an audio id, which generation never samples: exactly new_tokens each.
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0, stop_ids=(AUDIO_IDS.audio_patch,))
    short = dataclasses.replace(cfg, max_new_tokens=min(16, new_tokens))

    def ours(sampling: SamplingConfig, use_cache: bool, fast: bool = True) -> list[list[int]]:
        return [c[0].token_ids for c in generate(model, prompts, sampling, use_cache=use_cache, fast=fast)]

    variants = {
        "fast": functools.partial(ours, cfg, True),
        "cache": functools.partial(ours, cfg, True, False),
        "recompute": functools.partial(ours, cfg, False),
        "official": functools.partial(official_loop, model, prompts, new_tokens),
        # the same prompts for 16 tokens: subtracted to get the time of one decoding step
        "fast_short": functools.partial(ours, short, True),
        "cache_short": functools.partial(ours, short, True, False),
    }
    if not baselines:  # the loops without a cache take many minutes at batch 8
        del variants["recompute"], variants["official"]
    # a 16-token run warms up the same code
    warmups = {name: fn for name, fn in dict(variants, recompute=functools.partial(ours, short, False),
               official=functools.partial(official_loop, model, prompts, short.max_new_tokens)).items()
               if name in variants}
    runs = median_times(variants, repeats, warmups)
    tokens = {name: out for name, (_, out) in runs.items() if not name.endswith("_short")}
    assert all(len(row) == new_tokens for row in tokens["cache"])
    secs = {name: t for name, (t, _) in runs.items()}
    extra = new_tokens - short.max_new_tokens
    nan = float("nan")
    return dict(
        batch=batch,
        prompt_len=len(prompts[0].input_ids),
        tps={name: batch * new_tokens / secs[name] if name in secs else nan
             for name in ("fast", "cache", "recompute", "official")},
        step_ms={name: 1e3 * (secs[name] - secs[f"{name}_short"]) / extra for name in ("fast", "cache")},
        vs_official=secs["official"] / secs["fast"] if baselines else nan,
        vs_cache=secs["cache"] / secs["fast"],
        same_tokens=all(t == tokens["fast"] for t in tokens.values()),
    )


@torch.no_grad()
def bench_layouts(model, rows: int, steps: int, repeats: int, context: int = 140) -> dict[str, float]:
    """Milliseconds per `FastDecoder.step` alone (no sampling, no loop) for each matrix layout this machine can
    run (`mgrd.rollout.fast.LAYOUTS`), `rows` slots attending to `context` columns; variants in turn per round,
    the median of `repeats` rounds of `steps` steps."""
    weight = model.lm_head.weight
    layouts = [name for name in LAYOUTS if name == "split" or _can_pack(weight, name)]
    kv = StaticKV.allocate(rows, context + steps + 1, model)
    tokens = torch.zeros(rows, dtype=torch.long)

    def run(decoder):
        kv.valid[:, :context] = True
        kv.length[:], kv.position[:], kv.host_length = context, context, [context] * rows
        for _ in range(steps):
            decoder.step(kv, tokens)

    fns = {name: functools.partial(run, FastDecoder(model, rows=rows, layout=name)) for name in layouts}
    return {name: 1e3 * t / steps for name, (t, _) in median_times(fns, repeats).items()}


def mixed_stop_config(max_new_tokens: int, share: float = 1 / 128, seed: int = 0) -> SamplingConfig:
    """Sampling (temperature 1) whose stop ids are a random `share` of the text vocabulary: a random model's
    near-flat distribution then ends a row at each step with probability about `share`, so lengths spread from
    a few tokens to the budget, as in a real rollout."""
    gen = torch.Generator().manual_seed(seed)
    stops = torch.randperm(VOCAB - 3, generator=gen)[: int(share * VOCAB)].tolist()
    return SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, stop_ids=tuple(stops), seed=seed)


def bench_rollout(model, repeats: int, prompts: int = 8, k: int = 8, slots: int = 16, max_new: int = 384) -> dict:
    """Continuous refill against static waves on the same slots: generated tokens per second of each."""
    batch = make_prompts(prompts, 5.0)
    cfg = mixed_stop_config(max_new)

    def run(refill: bool):
        out = rollout(model, batch, cfg, num_samples=k, max_rows=slots, refill=refill)
        return out.response_lengths

    runs = median_times({"refill": functools.partial(run, True), "static": functools.partial(run, False)}, repeats)
    result = {}
    for name, (secs, lengths) in runs.items():
        result[name] = dict(tps=int(lengths.sum()) / secs, secs=secs, tokens=int(lengths.sum()),
                            mean_len=float(lengths.float().mean()), max_len=int(lengths.max()))
    result["ratio"] = result["refill"]["tps"] / result["static"]["tps"]
    return result


def bench_dtype(model, repeats: int, new_tokens: int) -> dict:
    """Fast-path greedy decoding tokens/s in fp32 and in bf16 (the same weights cast), batch 1 and 8."""
    half = copy.deepcopy(model).to(torch.bfloat16)
    half.reset_rotary()
    out = {}
    for batch in (1, 8):
        prompts = make_prompts(batch, 5.0)
        cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0, stop_ids=(AUDIO_IDS.audio_patch,))
        fns = {name: functools.partial(generate, m, prompts, cfg) for name, m in (("fp32", model), ("bf16", half))}
        runs = median_times(fns, repeats)
        out[batch] = {name: batch * new_tokens / t for name, (t, _) in runs.items()}
    return out


def bench_compile(model, new_tokens: int) -> dict:
    """Batch-1 fast-path decoding with the step compiled by inductor: compile time and tokens/s after it."""
    prompts = make_prompts(1, 5.0)
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0, stop_ids=(AUDIO_IDS.audio_patch,))
    start = time.perf_counter()
    generate(model, prompts, dataclasses.replace(cfg, max_new_tokens=2), compile=True)
    compile_s = time.perf_counter() - start
    fns = {"eager": functools.partial(generate, model, prompts, cfg),
           "compiled": functools.partial(generate, model, prompts, cfg, compile=True)}
    runs = median_times(fns, 3)
    return dict(compile_s=compile_s, **{name: new_tokens / t for name, (t, _) in runs.items()})


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


def print_decoding(model, args, new_tokens: int, repeats: int) -> None:
    """The decoding table and the roofline lines."""
    rates, weights = measure_bandwidth(), decoder_bytes(model)
    bandwidth = max(rates.values())
    roofline_ms = 1e3 * weights / bandwidth
    read = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in rates.items())
    print(f"memory bandwidth (fp32 reads of 256 MB, GB/s: {read}; the fastest counts): {bandwidth / 1e9:.1f} GB/s; "
          f"decoder weights read per step: {weights / 1e6:.1f} MB; roofline: {roofline_ms:.2f} ms per step at "
          "batch 1\n")
    print("| batch | prompt tokens | fast tok/s | transformers-cache tok/s | no-cache recompute tok/s | official loop "
          "tok/s | fast vs official | fast vs transformers cache | fast step (roofline fraction) | transformers-cache"
          " step (roofline fraction) | same tokens |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for batch in args.batches:
        r = bench_decoding(model, batch, new_tokens, repeats, args.clip_seconds,
                           baselines=batch <= args.baselines_up_to)
        tps, ms = r["tps"], r["step_ms"]
        print(f"| {r['batch']} | {r['prompt_len']} | {tps['fast']:.1f} | {tps['cache']:.1f} | {tps['recompute']:.1f} | "
              f"{tps['official']:.1f} | {r['vs_official']:.1f}x | {r['vs_cache']:.2f}x | {ms['fast']:.2f} ms "
              f"({roofline_ms / ms['fast']:.0%}) | {ms['cache']:.2f} ms ({roofline_ms / ms['cache']:.0%}) | "
              f"{'yes' if r['same_tokens'] else 'no'} |", flush=True)
    weight = model.lm_head.weight
    print("\n| batch | the step alone, by matrix layout (ms per step, roofline fraction) | default here |")
    print("|---:|---|---|")
    for batch in args.batches:
        steps = bench_layouts(model, batch, 32 if args.quick else 200, repeats)
        cells = ", ".join(f"{name} {ms:.2f} ({roofline_ms / ms:.0%})" for name, ms in steps.items())
        print(f"| {batch} | {cells} | {default_layout(weight, batch)} |", flush=True)


def print_rollout(model, repeats: int, quick: bool) -> None:
    """The refill-vs-static table and the fp32-vs-bf16 line."""
    r = bench_rollout(model, repeats, prompts=2 if quick else 8, max_new=64 if quick else 384)
    print("\n| rollout (K = 8, 16 slots, mixed stops) | generated tokens | mean / longest row | time | tok/s |")
    print("|---|---:|---:|---:|---:|")
    for name in ("static", "refill"):
        x = r[name]
        print(f"| {name} | {x['tokens']} | {x['mean_len']:.0f} / {x['max_len']} | {x['secs']:.1f} s | "
              f"{x['tps']:.1f} |")
    print(f"\ncontinuous refill vs static waves: {r['ratio']:.2f}x", flush=True)
    d = bench_dtype(model, repeats, 32 if quick else 128)
    for batch, tps in d.items():
        print(f"fast path, batch {batch}: fp32 {tps['fp32']:.1f} tok/s, bf16 {tps['bf16']:.1f} tok/s "
              f"(bf16 / fp32 = {tps['bf16'] / tps['fp32']:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 new tokens, 1 repeat, short rollouts")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="audio per decoding prompt (<= 25)")
    parser.add_argument("--skip-encoder", action="store_true", help="skip the encoder timing")
    parser.add_argument("--skip-decoding", action="store_true", help="skip the decoding timing")
    parser.add_argument("--skip-rollout", action="store_true", help="skip the refill and fp32/bf16 timings")
    parser.add_argument("--baselines-up-to", type=int, default=64,
                        help="time the no-cache and official loops only for batches up to this (they take minutes)")
    parser.add_argument("--compile", action="store_true",
                        help="also time batch-1 decoding with the step compiled by inductor (minutes to compile)")
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
    if not args.skip_decoding:
        print_decoding(model, args, new_tokens, repeats)
    if not args.skip_rollout:
        print_rollout(model, repeats, args.quick)
    if args.compile:
        c = bench_compile(model, new_tokens)
        print(f"\ninductor: compiled in {c['compile_s']:.0f} s; batch 1: {c['compiled']:.1f} tok/s compiled, "
              f"{c['eager']:.1f} tok/s eager ({c['compiled'] / c['eager']:.2f}x)", flush=True)
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

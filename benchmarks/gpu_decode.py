"""Benchmark: fast-path decoding of a 0.5B-class random model on a GPU, against its memory roofline.

The decoder has Qwen2.5-0.5B's shapes (24 layers x 896, 14 heads, 2 KV heads, MLP 4864, vocab 151,936, tied
embeddings) with random weights, in bf16; the encoder is a small stand-in (prompts are text only: decoding speed
does not depend on it). For batch 1, 8 and 64 (text prompts of `--prompt-tokens`), greedy, exactly `--new-tokens`
tokens, it prints tokens/s of the fast path (`mgrd.rollout.fast`; with `--compile`, the step under
`torch.compile`, CUDA graphs on a GPU) and of the transformers-cache loop (`fast=False`), the time of one
decoding step (a `--new-tokens` run minus a 16-token run, over the extra tokens) and its fraction of the
roofline: the bytes of the decoder weights one step reads over the bandwidth of a large mat-vec or sum (the
faster) in the same dtype, measured in the same run.

Run on a GPU: `python benchmarks/gpu_decode.py` (about 2 min on an H100 class GPU, plus compile time with
`--compile`). Smoke run anywhere: `python benchmarks/gpu_decode.py --device cpu --small --new-tokens 24`.
Nothing is downloaded: the model and tokens are random.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mgrd.generate import Prompt, SamplingConfig, generate
from mgrd.models import AudioEncoderConfig, ModelConfig, SpecialTokenIds, build_model

QWEN25_05B = dict(layers=24, width=896, heads=14, kv_heads=2, mlp=4864, vocab=151_936)
SMALL = dict(layers=4, width=256, heads=4, kv_heads=2, mlp=768, vocab=4096)  # the CPU smoke run


def model_config(d: dict) -> ModelConfig:
    vocab = d["vocab"]
    ids = SpecialTokenIds(audio_start=vocab - 3, audio_end=vocab - 2, audio_patch=vocab - 1)
    audio = AudioEncoderConfig(n_mels=128, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                               llm_dim=d["width"], adapter_hidden=128)
    text = dict(vocab_size=vocab, hidden_size=d["width"], intermediate_size=d["mlp"], num_hidden_layers=d["layers"],
                num_attention_heads=d["heads"], num_key_value_heads=d["kv_heads"], max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True)
    return ModelConfig(audio=audio, text=text, special_ids=ids)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up, with the device drained around each call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth(device: torch.device, dtype: torch.dtype) -> float:
    """Bytes/s at which weights stream: the faster of a mat-vec and a sum over a 1 GiB matrix (256 MiB on a CPU)
    in `dtype` (a mat-vec kernel alone may read below the rate the memory gives, as on some CPUs)."""
    rows = 1 << (19 if device.type == "cuda" else 17)
    matrix = torch.randn(rows, 1024, device=device, dtype=dtype)
    vector = torch.randn(1024, device=device, dtype=dtype)
    seconds = min(timed(lambda: matrix @ vector, device, 20), timed(lambda: matrix.sum(), device, 20))
    return matrix.numel() * matrix.element_size() / seconds


def weight_bytes(model) -> int:
    """Bytes a decoding step reads: the decoder layers, the final norm and the (tied) output matrix."""
    params = list(model.model.layers.parameters()) + list(model.model.norm.parameters()) + [model.lm_head.weight]
    return sum(p.numel() * p.element_size() for p in params)


def prompts_for(batch: int, length: int, vocab: int) -> list[Prompt]:
    gen = torch.Generator().manual_seed(batch)
    return [Prompt(torch.randint(0, vocab - 3, (length,), generator=gen).tolist(), []) for _ in range(batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="weights")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64], help="batch sizes")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per row")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="tokens per (text) prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    parser.add_argument("--small", action="store_true", help="a 4-layer model instead of the 0.5B shapes")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    dims = SMALL if args.small else QWEN25_05B
    model = build_model(model_config(dims), device=device, dtype=dtype, seed=0).eval()
    model.reset_rotary()
    bw, nbytes = bandwidth(device, dtype), weight_bytes(model)
    roof_ms = 1e3 * nbytes / bw
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {args.dtype}")
    print(f"decoder: {dims}; weights read per step {nbytes / 1e6:.0f} MB; bandwidth {bw / 1e9:.0f} GB/s; "
          f"roofline {roof_ms:.3f} ms per step\n")
    variants = {"fast": dict(), "transformers cache": dict(fast=False)}
    if args.compile:
        variants["fast + compile"] = dict(compile=True)
    print("| batch | path | tok/s | step | roofline fraction |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batches:
        prompts = prompts_for(batch, args.prompt_tokens, dims["vocab"])
        for label, engine in variants.items():
            def run(n: int, engine=engine):
                cfg = SamplingConfig(max_new_tokens=n, temperature=0, stop_ids=(dims["vocab"] - 1,))
                return generate(model, prompts, cfg, **engine)

            long_s = timed(lambda: run(args.new_tokens), device, args.repeats)
            short_s = timed(lambda: run(16), device, args.repeats)
            step_ms = 1e3 * (long_s - short_s) / (args.new_tokens - 16)
            print(f"| {batch} | {label} | {batch * args.new_tokens / long_s:.0f} | {step_ms:.3f} ms | "
                  f"{roof_ms / step_ms:.0%} |", flush=True)


if __name__ == "__main__":
    main()

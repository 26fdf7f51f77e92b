"""`mgrd <command>`: the command line. Only parsing and dispatch live here; the work is in the modules.

Commands:
    demo      build the tiny model, make a clip, stream a generation (the README's first command)
    init      write a freshly initialised checkpoint for a preset
    inspect   print a checkpoint's (or preset's) config, parameter counts and special tokens
    generate  stream the model's thinking and answer for audio + a prompt
    data      make the synthetic suite (`data synth`) and validate manifests (`data check`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgrd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_init(sub)
    _add_inspect(sub)
    _add_generate(sub)
    from mgrd.data.cli import add_parser as add_data_parser

    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the command; returns the exit code (see `run`)."""
    return run(build_parser().parse_args(argv))


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, `docker stop`, Slurm), raised where Ctrl-C would be so the same clean-up runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run(args: argparse.Namespace) -> int:
    """Run a parsed command: 0 success, 1 a failed check, 2 bad input (one `error: ...` line on stderr),
    130 Ctrl-C, 143 SIGTERM, 141 when the reader of stdout went away (`mgrd ... | head`), printed quietly."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except (ValueError, FileNotFoundError, OSError) as err:  # our errors are ValueErrors with clear messages
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the broken pipe again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ------------------------------------------------------------------------------------------------ sampling flags
def _add_sampling_flags(p: argparse.ArgumentParser, max_new_tokens: int = 512) -> None:
    g = p.add_argument_group("sampling (YAML: --config FILE; any SamplingConfig field: --set key=value)")
    g.add_argument("--config", type=Path, help="YAML file with SamplingConfig fields (temperature, top_p, ...)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one SamplingConfig field; repeatable")
    g.add_argument("--max-new-tokens", type=int, default=None, help=f"tokens to generate at most (default {max_new_tokens})")
    g.add_argument("--temperature", type=float, default=None, help="softmax temperature; 0 = greedy (default 0.7, as the R1 examples)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens; 0 = all (default 0)")
    g.add_argument("--repetition-penalty", type=float, default=None, help="CTRL-style penalty; 1 = off (default 1.0)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed, for reproducible samples")
    p.set_defaults(default_max_new_tokens=max_new_tokens)


def _sampling_config(args, stop_ids: list[int]):
    """Command defaults, then the YAML file, then --set, then the explicit flags (later wins)."""
    from mgrd.config import load_config
    from mgrd.generate import SamplingConfig

    flags = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
             "top_k": args.top_k, "repetition_penalty": args.repetition_penalty, "seed": args.seed}
    overrides = list(args.set) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    defaults = {"max_new_tokens": args.default_max_new_tokens, "temperature": 0.7}
    cfg = load_config(SamplingConfig, args.config, overrides, defaults=defaults)
    if not cfg.stop_ids:
        cfg.stop_ids = tuple(stop_ids)
    return cfg


# ------------------------------------------------------------------------------------------------------ generate
def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="stream thinking and answer for audio + prompt",
                       description="Load a checkpoint folder (official layout + tokenizer), encode the audio "
                       "(any length: cut into 25 s chunks), and stream the reasoning, then the answer.")
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--audio", type=Path, action="append", default=[], help="audio file (wav/flac/ogg/mp3); repeatable, in order")
    p.add_argument("--prompt", default="", help="the user's text, placed after the audio")
    p.add_argument("--system", default=None, help="optional system prompt")
    p.add_argument("--samples", type=int, default=1, help="K samples for the prompt (audio encoded once); >1 prints each, no streaming")
    p.add_argument("--json", action="store_true", help="print the completions as JSON instead of streaming text")
    _add_device_flags(p)
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_generate)


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype; auto = the checkpoint's torch_dtype on a GPU, float32 on the CPU")


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _user_messages(audio: list[Path], prompt: str, system: str | None) -> list[dict]:
    content = [{"type": "audio", "audio": str(a)} for a in audio]
    if prompt:
        content.append({"type": "text", "text": prompt})
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": content}]


def cmd_generate(args) -> int:
    import torch

    from mgrd.chat import encode_chat
    from mgrd.generate import generate, stream
    from mgrd.models import load_pretrained
    from mgrd.tokenizer import load_tokenizer, special_token_ids

    if not args.audio and not args.prompt:
        raise ValueError("give --audio and/or --prompt")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    tokenizer = load_tokenizer(args.model)
    model = load_pretrained(args.model, tokenizer=tokenizer, dtype=args.dtype, device=_device(args.device))
    cfg = _sampling_config(args, special_token_ids(tokenizer).stop_ids)
    prompt = encode_chat(tokenizer, _user_messages(args.audio, args.prompt, args.system), audio_config=model.config.audio)
    with torch.inference_mode():
        if args.samples == 1 and not args.json:
            _print_stream(stream(model, prompt, cfg, tokenizer))
            return 0
        completions = generate(model, [prompt], cfg, num_samples=args.samples, tokenizer=tokenizer)[0]
    for i, c in enumerate(completions):
        record = {"sample": i, "reasoning": c.reasoning, "answer": c.answer, "finish_reason": c.finish_reason, "tokens": len(c.token_ids)}
        print(json.dumps(record, ensure_ascii=False) if args.json else f"--- sample {i} ({c.finish_reason}) ---\n{c.text}")
    return 0


def _print_stream(deltas) -> str:
    """Print the reasoning under a 'thinking' header and the answer under an 'answer' header as they arrive."""
    from mgrd.chat import THINK_END

    print("── thinking ──", flush=True)
    text, shown, in_answer = "", 0, False
    for delta in deltas:
        text += delta
        if not in_answer and THINK_END in text:
            cut = text.index(THINK_END)
            print(text[shown:cut], flush=True)
            print("── answer ──", flush=True)
            in_answer, shown = True, cut + len(THINK_END)
            while shown < len(text) and text[shown] == "\n":
                shown += 1
        # Hold back a possible partial "</think>" so the marker is never printed in pieces.
        safe = len(text) if in_answer else max(shown, len(text) - len(THINK_END) + 1)
        print(text[shown:safe], end="", flush=True)
        shown = max(shown, safe)
    print(text[shown:], flush=True)
    if not in_answer:
        print("── (no answer: the output ended before </think>) ──")
    return text


# ------------------------------------------------------------------------------------------------- init/inspect
# The names of `mgrd.models.presets.PRESETS`, here so that `mgrd --help` need not import torch (a test keeps
# the two equal).
PRESET_NAMES = ("tiny", "step-audio-2-mini", "step-audio-r1")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _preset(name: str) -> str:
    if name not in PRESET_NAMES:
        raise argparse.ArgumentTypeError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return name


def _add_init(sub) -> None:
    p = sub.add_parser("init", help="write a freshly initialised (random-weight) checkpoint for a preset",
                       description="Write a checkpoint with random weights in the official layout, with its "
                       "tokenizer. The memory it needs is estimated first; a build that cannot fit is refused.")
    p.add_argument("--preset", default="tiny", type=_preset, metavar="{" + ",".join(PRESET_NAMES) + "}",
                   help="model size (default tiny; the released sizes need --tokenizer)")
    p.add_argument("--out", type=Path, required=True, help="folder to write; must be absent or empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                   help="weights dtype (default float32; bfloat16 halves the memory and the files)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (needed for the released sizes)")
    p.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    from mgrd.atomic import check_target

    check_target(args.out, args.overwrite)  # before minutes of work, and never over a file or someone's folder
    if args.preset != "tiny" and args.tokenizer is None:
        raise ValueError(f"--preset {args.preset} needs its tokenizer: pass --tokenizer DIR (a folder with tokenizer.json)")
    import torch

    from mgrd.models.presets import init_checkpoint, preset_config

    dtype = getattr(torch, args.dtype)
    check_memory(preset_config(args.preset), dtype, f"building {args.preset} in {args.dtype}")
    out = init_checkpoint(args.preset, args.out, seed=args.seed, tokenizer_dir=args.tokenizer, dtype=dtype,
                          overwrite=args.overwrite)
    print(f"wrote {args.preset} checkpoint ({args.dtype}, random weights) to {out}")
    return 0


def model_bytes(config, dtype) -> int:
    """Bytes of a model's parameters and buffers in `dtype`, counted on the meta device (nothing allocated)."""
    from mgrd.models import build_model

    model = build_model(config, device="meta")
    n = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    return n * dtype.itemsize


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup v2 limit; None if unknown."""
    found = []
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        found.append(int(next(line for line in lines if line.startswith("MemAvailable:")).split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    return min(found) if found else None


def check_memory(config, dtype, what: str) -> None:
    """Refuse, with the numbers and the fix, a build whose weights alone exceed the memory available."""
    need, have = model_bytes(config, dtype), available_memory()
    if have is not None and need > have:
        smaller = "; try --dtype bfloat16" if dtype.itemsize > 2 else ""
        raise ValueError(f"{what} needs about {need / 1e9:.1f} GB of memory but {have / 1e9:.1f} GB is "
                         f"available{smaller}, or use a machine with more memory")


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print config, parameter counts and special tokens; check the weights",
                       description="Inspect a checkpoint folder or a preset. Parameters are counted on the "
                       "meta device, so even the 33B preset needs no memory. For a folder, the weight files' "
                       "headers are checked against config.json as `generate` would (exit 1 when it would refuse).")
    p.add_argument("path", type=Path, nargs="?", help="checkpoint folder")
    p.add_argument("--preset", default=None, type=_preset, metavar="{" + ",".join(PRESET_NAMES) + "}",
                   help="inspect a preset instead of a folder")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from mgrd.models import ModelConfig, build_model, parameter_counts, preset_config

    if (args.path is None) == (args.preset is None):
        raise ValueError("give a checkpoint folder or --preset NAME")
    if args.path is not None and not args.path.is_dir():
        raise ValueError(f"checkpoint folder not found: {args.path}")
    config = preset_config(args.preset) if args.preset else ModelConfig.from_file(args.path / "config.json")
    counts = parameter_counts(build_model(config, device="meta"))
    print(json.dumps(config.to_dict(), indent=2))
    print("\nparameters:")
    for name, n in counts.items():
        print(f"  {name:<10} {n:>16,}  ({n / 1e9:.3f} B)")
    if args.path is None:
        if config.special_ids:
            print(f"\naudio token ids: {config.special_ids.audio_ids}")
        return 0
    _print_tokens(args.path, config)
    return _report_weights(args.path, config)


def _report_weights(path: Path, config) -> int:
    """Print the weight files' tensor count; warn about (and return 1 for) anything `generate` would refuse."""
    from mgrd.models.checkpoint import CheckpointError, check_checkpoint, tensor_shapes, weight_files

    try:
        print(f"\n{len(tensor_shapes(path))} tensors in {len(weight_files(path))} file(s)")
    except CheckpointError:
        pass  # reported below with the other problems
    problems = check_checkpoint(path, config)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if problems:
        print(f"warning: `mgrd generate` would refuse {path} ({len(problems)} problem(s) above)", file=sys.stderr)
    return 1 if problems else 0


def _print_tokens(path: Path, config) -> None:
    try:
        from mgrd.tokenizer import load_tokenizer, special_token_ids

        tok = load_tokenizer(path)
        print(f"tokenizer: {len(tok)} tokens; special: {vars(special_token_ids(tok))}")
    except (FileNotFoundError, ValueError) as err:
        print(f"tokenizer: {err}")
        if config.special_ids:
            print(f"audio token ids (config): {config.special_ids.audio_ids}")


# ----------------------------------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="tiny model + generated clip -> streamed generation (no downloads)",
                       description="Builds the tiny preset (random weights, offline BPE tokenizer) unless the "
                       "folder already holds it, writes a two-tone clip, and streams a generation. Random "
                       "weights speak noise: the demo shows the pipeline, training gives the sense.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (default runs/demo)")
    p.add_argument("--model", type=Path, default=None, help="use this checkpoint instead of building the tiny one")
    p.add_argument("--prompt", default="Which of the two tones is higher?", help="question asked about the clip")
    _add_sampling_flags(p, max_new_tokens=64)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import soundfile as sf

    from mgrd.models.presets import init_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or args.out / "model"
    if args.model is None and not (model_dir / "config.json").is_file():
        t = time.perf_counter()
        init_checkpoint("tiny", model_dir, seed=0)
        print(f"built the tiny model in {time.perf_counter() - t:.1f} s -> {model_dir}")
    clip = args.out / "two_tones.wav"
    sf.write(clip, _two_tones(), 16000, subtype="PCM_16")
    print(f"clip: {clip} (a 330 Hz tone, then a 523 Hz tone)")
    args.model, args.audio, args.system, args.samples, args.json = model_dir, [clip], None, 1, False
    args.device, args.dtype = "cpu", "float32"
    t = time.perf_counter()
    cmd_generate(args)
    print(f"\ngenerated in {time.perf_counter() - t:.1f} s")
    return 0


def _two_tones(sr: int = 16000) -> np.ndarray:
    t = np.arange(int(0.8 * sr)) / sr
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    tone = lambda f: 0.4 * np.sin(2 * np.pi * f * t) * fade  # noqa: E731
    gap = np.zeros(int(0.2 * sr))
    return np.concatenate([tone(330.0), gap, tone(523.3)]).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())

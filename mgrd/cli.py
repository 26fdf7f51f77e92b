"""`mgrd <command>`: the command line. Parsing, checking cheap inputs, printing and exit codes live here; the
work is in the modules (it builds no model, prompt or sampling logic of its own).

Commands: `demo`, `init`, `inspect`, `generate`, `data` (`mgrd.data.cli`); `mgrd --help` is the user's summary.
Exit codes (`run`): 0 success, 1 a failed check, 2 bad input with one `error: ...` line, 130 Ctrl-C, 143 SIGTERM
(handled like Ctrl-C, so temporary folders are removed), 141 when stdout's reader has gone (`| head`).
The sampling flags are generated from `mgrd.generate.SamplingConfig`, so the command line and Python share
one set of defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np


SUMMARY = """\
Audio-language models that reason in sound: the Step-Audio-R1 architecture and the MGRD training recipe.

Start here (all offline, on a CPU):
  mgrd demo                                     `mgrd speedrun`'s model answers listening questions (else
                                                a random-weight tiny model, said so, streams about a clip)
  mgrd init --out runs/tiny                     write a fresh tiny checkpoint (--preset for the released sizes)
  mgrd inspect runs/tiny                        its config, parameter counts, special tokens, weight check
  mgrd generate --model runs/tiny --audio clip.wav --prompt "What do you hear?"
  mgrd data synth --out data/synth --n 1000     the synthetic listening suite (manifest + wavs)
"""


# Commands whose parser needs torch (module with `add_parser` -> {command: the line `mgrd --help` shows})
HEAVY_COMMANDS = {
    "mgrd.loop.cli": {
        "loop": "the MGRD loop: sample, filter, distil (SFT), RL, evaluate, report; resumable",
        "speedrun": "synthesise data, cold-start the tiny model, run a short MGRD loop, print the report (CPU minutes)",
    },
    "mgrd.train.sft": {"sft": "supervised fine-tuning on the cold-start mixture (task CoT, conversation, audio QA)"},
    "mgrd.train.rl": {"rl": "reinforcement learning with verifiable rewards (PPO as in the report, or GRPO)"},
    "mgrd.serve.chat": {"chat": "interactive terminal chat with a checkpoint or a server (audio in, thinking dimmed)"},
    "mgrd.train.memory": {
        "memory": "per-GPU training memory of a preset or checkpoint (weights, grads, AdamW, activations; no allocation)",
    },
}


def build_parser(command: str | None = "all") -> argparse.ArgumentParser:
    """The `mgrd` argument parser.

    Args:
        command: the command about to run (None: no command given). The sampling flags are generated from
            `SamplingConfig`, whose module imports torch (seconds), so they are added only to that command's
            parser; "all" builds every flag (for tests and documentation).
    """
    from mgrd import __version__

    parser = argparse.ArgumentParser(prog="mgrd", description=SUMMARY,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `mgrd COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"mgrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub, sampling=command in ("all", "demo"))
    _add_init(sub)
    _add_inspect(sub)
    _add_generate(sub, sampling=command in ("all", "generate"))
    from mgrd.data.cli import add_parser as add_data_parser
    from mgrd.eval.cli import add_parser as add_eval_parser
    from mgrd.serve.cli import add_parser as add_serve_parser

    add_data_parser(sub)
    add_eval_parser(sub)
    add_serve_parser(sub)
    for module, commands in HEAVY_COMMANDS.items():
        if command == "all" or command in commands:
            importlib.import_module(module).add_parser(sub)
        else:  # listed in `mgrd --help` without importing torch; `mgrd NAME ...` builds the real parser
            for name, help_line in commands.items():
                sub.add_parser(name, help=help_line, add_help=False)
    return parser



def _command_of(argv: list[str]) -> str | None:
    """The command word: the first argument that is not an option (top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the command; returns the exit code (see `run`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run(build_parser(_command_of(argv)).parse_args(argv))


def run_stage(add_parser, command: str, argv: list[str] | None = None) -> int:
    """Run one stage's command without the top-level parser (`python -m mgrd.eval.cli ...`, a stage's `main`),
    with the same exit codes, SIGTERM and broken-pipe handling as `mgrd COMMAND ...`.

    Args:
        add_parser: the stage's `add_parser(subparsers)`.
        command: the command word it adds ("data", "eval", "sft", ...).
        argv: the arguments after the command word (None: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(prog="mgrd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)]))


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
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
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


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. max_new_tokens capped to the context) as one `warning: ...` line, without source lines."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the broken pipe again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ------------------------------------------------------------------------------------------------ sampling flags
def _add_sampling_flags(p: argparse.ArgumentParser, **command_defaults) -> None:
    """`--config`, `--set` and one flag per `SamplingConfig` field: name, type and help come from the field, so
    the command line and Python share one set of defaults. `command_defaults` overrides a few for one command."""
    import dataclasses
    import typing

    from mgrd.config import named_configs
    from mgrd.generate import SamplingConfig

    g = p.add_argument_group("sampling", "Defaults are mgrd.generate.SamplingConfig's; later wins: --config, "
                             "then --set, then the flags below.")
    g.add_argument("--config", metavar="NAME|FILE", help="YAML file of sampling fields, or a config shipped with "
                   f"mgrd by name ({', '.join(named_configs())}); works from any folder")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set one sampling field (YAML value, e.g. stop_ids=[7,9]); repeatable")
    hints = typing.get_type_hints(SamplingConfig)
    for f in dataclasses.fields(SamplingConfig):
        kind, nargs = _flag_type(f.name, hints[f.name])
        default = command_defaults.get(f.name, f.default)
        shown = (" ".join(map(str, default)) or "none") if isinstance(default, tuple) else default
        metavar = "ID" if nargs else {int: "N", float: "X"}.get(kind, "VALUE")
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, nargs=nargs, default=None,
                       metavar=metavar, help=f"{f.metadata['help']} (default {shown})")
    fields = [f.name for f in dataclasses.fields(SamplingConfig)]
    p.set_defaults(sampling_defaults=command_defaults, sampling_fields=fields)


def _flag_type(name: str, hint) -> tuple[type, str | None]:
    """argparse type and nargs for a field type: int, float, `int | None`, `tuple[int, ...]`."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    if hint in (int, float, str):
        return hint, None
    if typing.get_origin(hint) is tuple and len(args) == 1:
        return args[0], "+"
    if len(args) == 1 and args[0] in (int, float, str):  # X | None
        return args[0], None
    raise TypeError(f"SamplingConfig.{name}: no command-line flag for type {hint}")


def _sampling_config(args):
    """The command's defaults, then --config, then --set, then the flags given (later wins); validated."""
    import dataclasses

    from mgrd.config import load_config
    from mgrd.generate import SamplingConfig

    cfg = load_config(SamplingConfig, args.config, args.set, defaults=args.sampling_defaults)
    flags = {name: getattr(args, name) for name in args.sampling_fields if getattr(args, name) is not None}
    return dataclasses.replace(cfg, **flags)  # __post_init__ checks the flags' values


# ------------------------------------------------------------------------------------------------------ generate
def _add_generate(sub, sampling: bool = True) -> None:
    p = sub.add_parser("generate", help="stream thinking and answer for audio + prompt",
                       description="Load a checkpoint folder (official layout + tokenizer), encode the audio "
                       "(any length: cut into 25 s chunks), and stream the reasoning, then the answer. The "
                       "audio, prompt and settings are checked before the weights are loaded.")
    p.add_argument("--model", type=Path, required=True,
                   help="checkpoint folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--audio", type=Path, action="append", default=[],
                   help="audio file (wav/flac/ogg/mp3); repeatable, in order")
    p.add_argument("--prompt", default="", help="the user's text, placed after the audio")
    p.add_argument("--system", default=None, help="optional system prompt")
    p.add_argument("--samples", type=int, default=1,
                   help="K samples for the prompt (audio encoded once); >1 prints each, no streaming")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document in the OpenAI/vLLM chat-completion shape (choices[].message."
                   "content / reasoning_content, finish_reason, usage) instead of streaming text")
    _add_device_flags(p)
    if sampling:
        _add_sampling_flags(p)
    p.set_defaults(func=cmd_generate)


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES],
                   help="weights dtype; auto = the checkpoint's torch_dtype on a GPU, float32 on the CPU")


def _device(name: str | None) -> str:
    """A usable torch device name, or a one-line error that says why not."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU visible"
            raise ValueError(f"--device {name}: CUDA is not available here ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: not supported; use cpu, cuda or cuda:N")
    return str(device)


def _user_messages(audio: list[Path], prompt: str, system: str | None) -> list[dict]:
    content = [{"type": "audio", "audio": str(a)} for a in audio]
    if prompt:
        content.append({"type": "text", "text": prompt})
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": content}]


def _model_config_and_tokenizer(folder: Path):
    """config.json and the tokenizer of a checkpoint folder: the cheap part, read before any weights."""
    from mgrd.models import ModelConfig
    from mgrd.tokenizer import load_tokenizer

    if not folder.is_dir():
        raise ValueError(f"model folder not found: {folder}")
    return ModelConfig.from_file(folder / "config.json"), load_tokenizer(folder)


def cmd_generate(args) -> int:
    import dataclasses

    import torch

    from mgrd.chat import OFFICIAL_PART_JOIN, encode_chat
    from mgrd.generate import generate, stream
    from mgrd.models import load_pretrained
    from mgrd.rollout import fit_context

    if not args.audio and not args.prompt:
        raise ValueError("give --audio and/or --prompt")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    # Everything cheap first (settings, device, files, audio decoding): a mistake costs seconds, not a 33B load.
    cfg = _sampling_config(args)
    device = _device(args.device)
    config, tokenizer = _model_config_and_tokenizer(args.model)
    messages = _user_messages(args.audio, args.prompt, args.system)
    prompt = encode_chat(tokenizer, messages, audio_config=config.audio, part_join=OFFICIAL_PART_JOIN)
    # A prompt past the context is refused, and max_new_tokens capped (one warning), before the weights too.
    cfg = dataclasses.replace(cfg, max_new_tokens=fit_context(config, [prompt], cfg.max_new_tokens))
    model = load_pretrained(args.model, tokenizer=tokenizer, dtype=args.dtype, device=device)
    with torch.inference_mode():
        if args.samples == 1 and not args.json:
            _print_stream(stream(model, prompt, cfg, tokenizer))
            return 0
        completions = generate(model, [prompt], cfg, num_samples=args.samples, tokenizer=tokenizer)[0]
    if args.json:
        from mgrd.serve.protocol import chat_completion  # the server's response document, one shape for both

        doc = chat_completion(completions, len(prompt.input_ids), str(args.model))
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    for i, c in enumerate(completions):
        print(f"── sample {i} ({c.finish_reason}, {len(c.token_ids)} tokens) ──\n{c.text}")
    return 0


def _print_stream(deltas) -> None:
    """Print the reasoning under a 'thinking' header and the answer under an 'answer' header as they arrive."""
    from mgrd.chat import ReasoningStream

    split = ReasoningStream()
    print("── thinking ──", flush=True)
    shown_answer = False
    for reasoning, answer in _pieces(split, deltas):
        print(reasoning, end="", flush=True)
        if split.has_answer and not shown_answer:
            print("\n── answer ──", flush=True)
            shown_answer = True
        print(answer, end="", flush=True)
    print(flush=True)
    if not split.has_answer:
        print("── (no answer: the output ended before </think>) ──")


def _pieces(split, deltas):
    """(reasoning, answer) pieces of a stream of deltas, as they become final, the rest at the end."""
    for delta in deltas:
        yield split.feed(delta)
    yield split.finish()


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
    p.add_argument("--out", type=Path, required=True,
                   help="folder to write; must be absent or empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                   help="weights dtype (default float32; bfloat16 halves the memory and the files)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (needed for the released sizes)")
    p.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    from mgrd.atomic import check_target

    check_target(args.out, args.overwrite)  # before minutes of work, and never over a file or someone's folder
    if args.tokenizer is not None and not args.tokenizer.is_dir():
        raise ValueError(f"tokenizer folder not found: {args.tokenizer}")
    if args.preset != "tiny" and args.tokenizer is None:
        raise ValueError(f"--preset {args.preset} needs its tokenizer: "
                         "pass --tokenizer DIR (a folder with tokenizer.json)")
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
    if have is None or need <= have:
        return
    half = need * 2 // dtype.itemsize
    if dtype.itemsize > 2 and half <= have:
        fix = f"try --dtype bfloat16 ({half / 1e9:.1f} GB)"
    else:
        fix = "use a machine with more memory" + (f" (bfloat16: {half / 1e9:.1f} GB)" if dtype.itemsize > 2 else "")
    raise ValueError(f"{what} needs about {need / 1e9:.1f} GB of memory but {have / 1e9:.1f} GB is available; {fix}")


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
def _add_demo(sub, sampling: bool = True) -> None:
    p = sub.add_parser("demo", help="the speedrun's model answers listening questions (else a random tiny model)",
                       description="With a trained model (--model, or runs/speedrun/final once `mgrd speedrun` has "
                       "run here) it asks a few fresh synthetic listening questions and prints the thinking, the "
                       "answer and whether it is correct (greedy, up to 96 new tokens, unless the sampling flags "
                       "say otherwise). Without one it builds the tiny preset (random weights, offline BPE "
                       "tokenizer) unless --out already holds it, writes a two-tone clip and streams a generation, "
                       "saying that the weights are untrained: that shows the pipeline; `mgrd speedrun` trains a "
                       "model that gives it sense. No downloads.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (default runs/demo)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="the checkpoint to show (default: runs/speedrun/final when it exists, else a fresh "
                        "random-weight tiny model in OUT/model)")
    p.add_argument("--questions", type=int, default=4, metavar="N",
                   help="synthetic questions a trained model answers (default 4)")
    p.add_argument("--prompt", default="Which of the two tones is higher?",
                   help="question asked about the clip (the untrained model's demo)")
    if sampling:
        _add_sampling_flags(p, max_new_tokens=64)
    p.set_defaults(func=cmd_demo)


UNTRAINED_NOTE = """\
note: this model is untrained: its weights are random, so what it writes below is noise, not an answer.
      The demo shows the pipeline working end to end (clip -> log-mel features -> audio encoder ->
      adapter -> language model -> streamed thinking and answer), offline and on a CPU.
      `mgrd speedrun` trains one (minutes on a CPU); `mgrd demo` then shows that model instead."""

TRAINED_SAMPLING = {"temperature": 0.0, "max_new_tokens": 96}  # a trained model's demo: its best answer, whole

NEXT_STEPS = """\
next steps:
  mgrd inspect {model}   # what was built: config, parameters, special tokens
  mgrd data synth --out data/synth --n 1000   # the synthetic listening suite that training will use
  mgrd generate --model DIR --audio FILE --prompt "..."   # a trained checkpoint, e.g. Step-Audio-R1's"""


def cmd_demo(args) -> int:
    """A trained model's graded answers (`_demo_trained`) when there is one, else the random model's stream."""
    from mgrd.demo import speedrun_model

    trained = args.model or speedrun_model()
    if trained is not None:
        return _demo_trained(args, trained)
    import soundfile as sf

    from mgrd.models.presets import init_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.out / "model"
    if not (model_dir / "config.json").is_file():
        if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
            raise ValueError(f"{model_dir} exists and holds no checkpoint; choose another --out (nothing was changed)")
        t = time.perf_counter()
        init_checkpoint("tiny", model_dir, seed=0)
        print(f"built the tiny model in {time.perf_counter() - t:.1f} s -> {model_dir}")
    clip = args.out / "two_tones.wav"
    sf.write(clip, _two_tones(), 16000, subtype="PCM_16")
    print(f"clip: {clip} (a 330 Hz tone, then a 523 Hz tone)")
    print(UNTRAINED_NOTE)
    args.model, args.audio, args.system, args.samples, args.json = model_dir, [clip], None, 1, False
    args.device, args.dtype = "cpu", "float32"
    t = time.perf_counter()
    cmd_generate(args)
    print(f"\ngenerated in {time.perf_counter() - t:.1f} s")
    print("(random weights: the text above is noise by design; `mgrd speedrun` trains a model that gives it sense)")
    print(NEXT_STEPS.format(model=model_dir))
    return 0


def _demo_trained(args, model: Path) -> int:
    """A checkpoint answers `--questions` synthetic questions (`mgrd.demo`), greedy unless the flags say otherwise."""
    from mgrd.demo import answer_questions

    if not (model / "config.json").is_file():
        raise ValueError(f"--model {model} is not a checkpoint folder (no config.json there)")
    if args.questions < 1:
        raise ValueError(f"--questions must be >= 1, got {args.questions}")
    print(f"model: {model} ({'given with --model' if args.model else 'trained by `mgrd speedrun`'})")
    args.sampling_defaults = {**args.sampling_defaults, **TRAINED_SAMPLING}
    t = time.perf_counter()
    for line in answer_questions(model, args.questions, _sampling_config(args)):
        print(line)
    print(f"\nanswered in {time.perf_counter() - t:.1f} s")
    return 0


def _two_tones(sr: int = 16000) -> np.ndarray:
    t = np.arange(int(0.8 * sr)) / sr
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    tone = lambda f: 0.4 * np.sin(2 * np.pi * f * t) * fade  # noqa: E731
    gap = np.zeros(int(0.2 * sr))
    return np.concatenate([tone(330.0), gap, tone(523.3)]).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())

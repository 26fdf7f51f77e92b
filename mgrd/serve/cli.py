"""`mgrd serve`: an OpenAI-compatible server for a checkpoint folder (flags named as `vllm serve` names them).

Only parsing lives here; `mgrd.serve.app.load_server` loads the model and starts the batching scheduler, uvicorn
serves `mgrd.serve.app.create_app`. The server binds 127.0.0.1 unless told otherwise; with `--api-key` (or the
`MGRD_API_KEY` environment variable) every `/v1` route needs `Authorization: Bearer KEY`.

    mgrd serve --model runs/tiny                                   # CPU, http://127.0.0.1:8000
    mgrd serve --model /ckpt/Step-Audio-R1 --device cuda --served-model-name Step-Audio-R1 --port 9999 \\
        --max-model-len 16384 --max-num-seqs 32

`python -m mgrd.serve.cli --model DIR` runs the same command without the top-level `mgrd`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `serve` command to a top-level argparse subparsers object."""
    p = subparsers.add_parser(
        "serve", help="OpenAI-compatible chat server: audio in, reasoning split out, streaming, speech out",
        description="Serve a checkpoint folder over HTTP: POST /v1/chat/completions (text and input_audio parts, "
        "reasoning_content apart from content, stream: true for Server-Sent Events, modalities [text, audio] for "
        "a spoken answer), GET /v1/models, GET /health, /openapi.json and a playground page at /. Concurrent "
        "requests share decoding steps (continuous batching).")
    p.add_argument("--model", type=Path, required=True,
                   help="checkpoint folder (config.json, *.safetensors, tokenizer)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "0.0.0.0 exposes the server, so set --api-key)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get("MGRD_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $MGRD_API_KEY, else none)")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send and /v1/models lists (default: the --model path as given)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="positions a prompt and its completion may fill (default: the model's max_position_embeddings)")
    p.add_argument("--max-num-seqs", type=int, default=32,
                   help="rows decoded together at most; a request waits until its n rows fit (default 32; "
                   "1 turns batching off)")
    p.add_argument("--max-waiting", type=int, default=64,
                   help="requests waiting at most; more get 429 (default 64)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MiB; larger get 413 "
                   "(default 64)")
    p.add_argument("--max-audio-seconds", type=float, default=600.0,
                   help="seconds of audio per request, all parts together (default 600)")
    p.add_argument("--max-audio-parts", type=int, default=64, help="input_audio parts per request (default 64; the "
                   "official client sends one per 25 s)")
    p.add_argument("--max-n", type=int, default=8, help="choices (n) per request at most (default 8)")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help="completion budget when a request sets none (default: what the context leaves, as vLLM)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype; auto = the checkpoint's torch_dtype on a GPU, float32 on the CPU")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 is fastest for small models on a busy CPU")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info)")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args) -> int:
    import uvicorn

    from mgrd.cli import _device
    from mgrd.serve.app import create_app, load_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    device = _device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    server = load_server(args.model, device=device, dtype=args.dtype, served_model_name=args.served_model_name,
                         max_model_len=args.max_model_len, api_key=args.api_key, max_num_seqs=args.max_num_seqs,
                         max_waiting=args.max_waiting, max_body_mb=args.max_body_mb,
                         max_audio_seconds=args.max_audio_seconds, max_audio_parts=args.max_audio_parts,
                         max_n=args.max_n, default_max_tokens=args.default_max_tokens)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    print(f"serving {server.name!r} on http://{args.host}:{args.port} ({device}; "
          f"context {server.limits.max_model_len}, "
          f"{server.scheduler.max_rows} rows per step)", flush=True)
    try:
        uvicorn.run(create_app(server), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        server.scheduler.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `mgrd serve ...` without the top-level CLI: `main(["--model", "runs/tiny"])`."""
    parser = argparse.ArgumentParser(prog="mgrd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    from mgrd.cli import run  # the same exit codes and SIGTERM handling as the other commands

    return run(args)


if __name__ == "__main__":
    sys.exit(main())

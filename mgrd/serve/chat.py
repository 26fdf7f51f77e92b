"""`mgrd chat`: an interactive terminal client that streams the thinking (dimmed) and the answer of each turn.

Two backends behind one method, `Backend.reply(messages) -> iterator of (reasoning_piece, answer_piece)`:
- `LocalBackend` (`--model DIR`): loads the checkpoint once and streams through the shared path, `encode_chat`
  with the official part join, `mgrd.generate.stream`, split by `ReasoningStream` (as `mgrd generate` does);
- `EndpointBackend` (`--endpoint URL`): the `openai` client against `mgrd serve` (or any server that sends
  `delta.reasoning_content` beside `delta.content`, as vLLM's reasoning parsers do), audio sent as base64
  `input_audio` parts.

Input, one line at a time: a line is a question; `/audio PATH` attaches an audio file to the next question
(repeatable: several files go in order, before the text); `/reset` forgets the conversation; `/quit` (or end of
input) leaves with 0, Ctrl-C with 130. The history is kept across turns with each assistant turn stored as its
answer only, without the thinking, so the context does not fill with old reasoning (the convention of
reasoning chat templates such as DeepSeek-R1's; the official Step-Audio-R1 examples are single-turn and state no
rule, reference §9.2). A bad turn (a missing or undecodable audio file, a prompt past the context, a server error)
prints one `error: ...` line and the session goes on, with the history unchanged.

Thinking is dimmed (ANSI) when stdout is a terminal; otherwise the two parts are labelled `thinking:` and
`answer:` so a transcript stays readable. Torch is imported only when a command runs, not at import.

    mgrd chat --model runs/tiny --temperature 0
    mgrd chat --endpoint http://127.0.0.1:8000/v1 --api-key sesame
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Iterator, Protocol

DIM, RESET = "\033[2m", "\033[0m"
HELP = "/audio PATH: attach an audio file to the next question   /reset: forget the conversation   /quit: leave"
Pieces = Iterator[tuple[str, str]]  # (reasoning piece, answer piece), either possibly ""


class Backend(Protocol):
    def reply(self, messages: list[dict]) -> Pieces:
        """Stream the next assistant turn for `messages` (audio parts as `{"type": "audio", "audio": path}`)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `chat` command (its sampling flags come from `SamplingConfig`, so building it imports torch)."""
    from mgrd.cli import _add_device_flags, _add_sampling_flags

    p = subparsers.add_parser(
        "chat", help="interactive terminal chat with a checkpoint or a server: audio in, thinking dimmed",
        description="Chat in the terminal with a checkpoint folder (--model) or an OpenAI-compatible server "
        "(--endpoint, e.g. `mgrd serve`). Commands: " + "; ".join(HELP.split("   ")) + ". The thinking streams dimmed, the answer plainly; earlier "
        "turns are kept (answers only, without their thinking). Ctrl-D or /quit leaves.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, metavar="DIR", help="checkpoint folder to load here (config.json, *.safetensors, "
                     "tokenizer)")
    src.add_argument("--endpoint", metavar="URL", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None, help="with --endpoint: the server's key (default $OPENAI_API_KEY, "
                   "else none)")
    p.add_argument("--model-name", default=None, help="with --endpoint: the model to ask for (default: the "
                   "first one /v1/models lists)")
    p.add_argument("--system", default=None, help="optional system prompt, kept across /reset")
    _add_device_flags(p)
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_chat)
    return p


def cmd_chat(args) -> int:
    cfg = _sampling_config(args)
    if args.endpoint is None and (args.api_key or args.model_name):
        raise ValueError("--api-key and --model-name go with --endpoint")
    backend = LocalBackend(args, cfg) if args.model is not None else EndpointBackend(args, cfg)
    return Session(backend, system=args.system).run(sys.stdin, sys.stdout)


def _sampling_config(args):
    from mgrd.cli import _sampling_config as config_of

    return config_of(args)


# ------------------------------------------------------------------------------------------------------ session
class Session:
    """The conversation and the read-reply loop.

    Attributes:
        history: the messages sent with the next question: the system prompt, then user turns (audio parts as
            `{"type": "audio", "audio": path}`, then the text) and assistant turns (the answer only).
        pending_audio: paths attached with `/audio` for the next question.
    """

    def __init__(self, backend: Backend, system: str | None = None):
        self.backend = backend
        self.system = system
        self.history: list[dict] = []
        self.pending_audio: list[Path] = []
        self.reset()

    def reset(self) -> None:
        self.history = [{"role": "system", "content": self.system}] if self.system else []
        self.pending_audio = []

    def run(self, stdin, stdout) -> int:
        """Read lines until `/quit` or the end of input; returns 0 (Ctrl-C propagates: `mgrd.cli.run` gives 130)."""
        interactive = stdin.isatty() and stdout.isatty()
        if interactive:
            print(HELP, file=stdout, flush=True)
        while True:
            line = _read_line(stdin, stdout, interactive)
            if line is None or line.strip() == "/quit":
                return 0
            try:
                self.handle(line.strip(), stdout, dim=stdout.isatty())
            except ValueError as err:  # one bad turn costs nothing else
                print(f"error: {err}", file=sys.stderr, flush=True)

    def handle(self, line: str, out, dim: bool) -> None:
        """One input line: a command, or a question answered by streaming into `out`."""
        if not line:
            return
        if line == "/reset":
            self.reset()
            print("(conversation reset)", file=out, flush=True)
        elif line == "/help":
            print(HELP, file=out, flush=True)
        elif line == "/audio" or line.startswith("/audio "):
            self.attach(line[len("/audio"):].strip())
        elif line.startswith("/"):
            raise ValueError(f"unknown command {line.split()[0]!r}; {HELP}")
        else:
            self.ask(line, out, dim)

    def attach(self, path_text: str) -> None:
        if not path_text:
            raise ValueError("/audio needs a file path, e.g. /audio clip.wav")
        path = Path(path_text).expanduser()
        if not path.is_file():
            raise ValueError(f"audio file not found: {path}")
        self.pending_audio.append(path)

    def ask(self, text: str, out, dim: bool) -> None:
        """Send the history plus this question; on success both turns join the history, on error neither (the
        attached audio is used up either way, so one bad file does not fail every later question)."""
        content = [{"type": "audio", "audio": str(p)} for p in self.pending_audio] + [{"type": "text", "text": text}]
        question = {"role": "user", "content": content}
        self.pending_audio = []
        answer = show_reply(self.backend.reply([*self.history, question]), out, dim)
        self.history += [question, {"role": "assistant", "content": answer}]


def _read_line(stdin, stdout, interactive: bool) -> str | None:
    """The next line, None at the end of input; a `> ` prompt (with line editing) only in a terminal."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            print(file=stdout)
            return None
    line = stdin.readline()
    return line or None


def show_reply(pieces: Pieces, out, dim: bool) -> str:
    """Print a streamed reply: the thinking dimmed (`dim`) or after `thinking:`, then the answer plainly (after
    `answer:` when not dimmed). Returns the answer text ("" when the reply ended before `</think>`)."""
    answer_parts: list[str] = []
    state = "start"  # then "thinking", then "answer"
    try:
        for reasoning, answer in pieces:
            if reasoning:
                if state == "start":
                    out.write(DIM if dim else "thinking: ")
                    state = "thinking"
                out.write(reasoning)
            if answer:
                if state == "thinking":
                    out.write(RESET + "\n" if dim else "\n")
                if state != "answer":
                    out.write("" if dim else "answer: ")
                    state = "answer"
                out.write(answer)
                answer_parts.append(answer)
            out.flush()
    finally:  # also on Ctrl-C or a broken stream: never leave the terminal dimmed
        if dim and state == "thinking":
            out.write(RESET)
    if state == "thinking":
        out.write("\n")
    if state != "answer":
        out.write("(no answer: the reply ended before </think>)")
    out.write("\n")
    out.flush()
    return "".join(answer_parts)


# ----------------------------------------------------------------------------------------------------- backends
class LocalBackend:
    """A checkpoint loaded in this process; each turn is encoded and streamed through the shared path."""

    def __init__(self, args, cfg):
        from mgrd.cli import _device, _model_config_and_tokenizer
        from mgrd.models import load_pretrained

        device = _device(args.device)
        self.config, self.tokenizer = _model_config_and_tokenizer(args.model)
        self.cfg = cfg
        self.model = load_pretrained(args.model, tokenizer=self.tokenizer, dtype=args.dtype, device=device)
        self.last_prompt_tokens = 0

    def reply(self, messages: list[dict]) -> Pieces:
        import dataclasses

        import torch

        from mgrd.chat import OFFICIAL_PART_JOIN, ReasoningStream, encode_chat
        from mgrd.cli import _pieces
        from mgrd.generate import stream
        from mgrd.rollout import fit_context

        # Encoded (audio decoded, context checked) before the first piece, so a bad turn fails before printing.
        prompt = encode_chat(self.tokenizer, messages, audio_config=self.config.audio, part_join=OFFICIAL_PART_JOIN)
        cfg = dataclasses.replace(self.cfg, max_new_tokens=fit_context(self.config, [prompt], self.cfg.max_new_tokens))
        self.last_prompt_tokens = len(prompt.input_ids)

        def pieces():
            with torch.inference_mode():
                yield from _pieces(ReasoningStream(), stream(self.model, prompt, cfg, self.tokenizer))

        return pieces()


class EndpointBackend:
    """An OpenAI-compatible server, asked with streaming chat.completions; reasoning from
    `delta.reasoning_content`, the answer from `delta.content`."""

    def __init__(self, args, cfg):
        import openai

        from mgrd.generate import SamplingConfig

        self.client = openai.OpenAI(base_url=args.endpoint, api_key=args.api_key or _env_key(), max_retries=0)
        try:
            self.model = args.model_name or self.client.models.list().data[0].id
        except (openai.APIError, IndexError) as err:
            raise ValueError(f"cannot list the models of {args.endpoint}: {err or 'none served'}") from None
        # Only the settings the user changed are sent; the rest stay the server's defaults (its context budget).
        default = SamplingConfig()
        self.request = {name: getattr(cfg, field) for field, name in _REQUEST_FIELDS.items()
                        if getattr(cfg, field) != getattr(default, field)}
        self.last_prompt_tokens = 0

    def reply(self, messages: list[dict]) -> Pieces:
        import openai

        sent = [_with_input_audio(m) for m in messages]  # files read (and missing ones refused) before the request
        body = dict(self.request)
        extra_body = {k: body.pop(k) for k in ("top_k", "repetition_penalty", "stop_token_ids") if k in body}
        try:
            chunks = self.client.chat.completions.create(
                model=self.model, messages=sent, stream=True, stream_options={"include_usage": True},
                extra_body=extra_body or None, **body)
        except openai.APIError as err:
            raise ValueError(f"the server refused the turn: {_api_message(err)}") from None

        def pieces():
            try:
                for chunk in chunks:
                    if chunk.usage is not None:
                        self.last_prompt_tokens = chunk.usage.prompt_tokens
                    for choice in chunk.choices:
                        delta = choice.delta
                        yield getattr(delta, "reasoning_content", None) or "", delta.content or ""
            except openai.APIError as err:
                raise ValueError(f"the stream broke off: {_api_message(err)}") from None

        return pieces()


# SamplingConfig field -> chat.completions request field (top_k, repetition_penalty, stop_token_ids are vLLM's)
_REQUEST_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                   "repetition_penalty": "repetition_penalty", "stop_ids": "stop_token_ids", "seed": "seed"}
_FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg"}


def _env_key() -> str:
    import os

    return os.environ.get("OPENAI_API_KEY") or "none"  # the client insists on some key; a keyless server ignores it


def _with_input_audio(message: dict) -> dict:
    """A history message with each `{"type": "audio", "audio": path}` part as an OpenAI `input_audio` part."""
    if isinstance(message["content"], str):
        return message
    parts = []
    for part in message["content"]:
        if part["type"] == "audio":
            path = Path(part["audio"])
            try:
                data = base64.b64encode(path.read_bytes()).decode()
            except OSError as err:
                raise ValueError(f"cannot read audio file {path}: {err.strerror}") from None
            part = {"type": "input_audio", "input_audio": {"data": data, "format": _FORMATS.get(path.suffix.lower(),
                                                                                                  "wav")}}
        parts.append(part)
    return {**message, "content": parts}


def _api_message(err) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(err)


def main(argv: list[str] | None = None) -> int:
    """`python -m mgrd.serve.chat ARGS`: `mgrd chat ARGS` without the top-level parser."""
    from mgrd.cli import run_stage

    return run_stage(add_parser, "chat", argv)


if __name__ == "__main__":
    sys.exit(main())

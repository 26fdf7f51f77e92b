"""The model under test: a local checkpoint (batched through `mgrd.rollout`) or an OpenAI-compatible endpoint.

Both take `Job`s (a prompt row, the task that prompts it) and yield `Output`s in batches as they finish, so the
harness can append each batch to `samples.jsonl` at once (a killed run loses at most one batch).

- `LocalModel`: `Task.encode_prompt` (the official "\\n" part join, the `<think>\\n` generation prompt, 25 s
  chunks) for each job, `rollout()` over `batch_size` prompts at a time. A forced thinking budget
  (`think_budget`) lets the model think for at most N tokens; when it has not closed its think block by then,
  `\\n</think>\\n` is appended and the answer generated from there (0 = no thinking at all).
- `Endpoint`: the `openai` client's chat completions with the prompt's audio as `input_audio` parts (WAV,
  base64), one per <= 25 s chunk as the official client sends it; `think_prefix` adds the official client's
  assistant prefix `<think>\\n` with vLLM's `continue_final_message` (for a Step-Audio-R1 behind vLLM). The
  client retries timeouts, 429 and 5xx with backoff (`max_retries`); an item that still fails comes back
  with its error, which the harness records as an error (never as a wrong answer) and asks again on resume.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import mgrd.eval.benchmarks.prompts  # noqa: F401  (registers the benchmarks' tasks that prompts come from)
from mgrd.audio import AudioError, load_audio, split_chunks
from mgrd.chat import THINK_END
from mgrd.eval.variants import apply, wav_bytes
from mgrd.eval.variants import think_budget as variant_budget
from mgrd.generate import SamplingConfig, decode_text
from mgrd.rollout.engine import DEFAULT_MAX_POSITIONS
from mgrd.tasks import get_task

STEP_STOP_ID = 151665  # the official client's stop_token_ids (reference §1.2)
FORCED_CLOSE = f"\n{THINK_END}\n"


@dataclass
class Job:
    """One prompt to answer: its key in the run (item id, audio variant), the row the task prompts from (clean
    audio; the backend builds the variant's audio when it builds the prompt), and the task name."""

    key: tuple[str, str]  # (item id, variant)
    row: dict
    task: str


@dataclass
class Output:
    """A model's answer to a job: raw text (think block included), generated tokens, finish reason, and the
    reasoning's length in tokens when known; `error` set (text None) when no answer came."""

    key: tuple[str, str]
    text: str | None
    n_tokens: int = 0
    finish_reason: str = "stop"
    think_tokens: int | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------- local


class LocalModel:
    """A checkpoint folder run in-process; `generate(jobs)` yields one list of outputs per batch."""

    def __init__(self, model_dir: str | Path, sampling: SamplingConfig, *, device: str = "cpu",
                 dtype: str = "auto", batch_size: int = 8, think_budget: int | None = None,
                 answer_tokens: int = 64):
        from mgrd.models import load_pretrained
        from mgrd.tokenizer import load_tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if think_budget is not None and think_budget < 0:
            raise ValueError(f"think_budget must be >= 0 tokens, got {think_budget}")
        self.name = str(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_pretrained(model_dir, tokenizer=self.tokenizer, dtype=dtype, device=device)
        self.model.eval()
        self.sampling, self.batch_size = sampling, batch_size
        self.max_positions = int(self.model.config.text.get("max_position_embeddings", DEFAULT_MAX_POSITIONS))
        self.think_budget, self.answer_tokens = think_budget, answer_tokens

    def generate(self, jobs: Sequence[Job]) -> Iterator[list[Output]]:
        """Batches of `batch_size` jobs; jobs of a `think<N>` variant are batched with their own budget."""
        groups: dict[int | None, list[Job]] = {}
        for job in jobs:
            budget = variant_budget(job.key[1])
            groups.setdefault(self.think_budget if budget is None else budget, []).append(job)
        for budget, group in groups.items():
            for start in range(0, len(group), self.batch_size):
                yield self._batch(group[start:start + self.batch_size], budget)

    def _batch(self, jobs: Sequence[Job], budget: int | None) -> list[Output]:
        prompts, ready, failed = [], [], []
        for job in jobs:
            try:
                row = apply(job.row, job.key[1])  # the variant's audio, made only now (memory)
                prompt = get_task(job.task).encode_prompt(row, self.tokenizer, audio_config=self.model.config.audio)
                if len(prompt.input_ids) >= self.max_positions:  # would fail the whole batch in rollout
                    raise ValueError(f"prompt of {len(prompt.input_ids)} tokens does not fit the model's "
                                     f"{self.max_positions} positions")
                prompts.append(prompt)
                ready.append(job)
            except (AudioError, ValueError) as err:  # a clip that cannot be read is this item's error only
                failed.append(Output(job.key, None, error=f"prompt: {err}"))
        if not prompts:
            return failed
        texts, ids, reasons = self._sample(prompts, budget)
        outputs = [Output(job.key, text, len(row), reason, self._think_tokens(row, text))
                   for job, text, row, reason in zip(ready, texts, ids, reasons)]
        return outputs + failed

    def _sample(self, prompts: list, budget: int | None) -> tuple[list[str], list[list[int]], list[str]]:
        """Texts, generated ids and finish reasons; with a thinking budget, think (up to `budget` tokens),
        then close the think block where the model has not, and answer."""
        from mgrd.generate import Prompt
        from mgrd.rollout import rollout

        if budget is None:
            batch = rollout(self.model, prompts, self.sampling, tokenizer=self.tokenizer)
            return batch.texts, [batch.row_tokens(i) for i in range(len(prompts))], batch.finish_reasons
        texts, ids, reasons = [""] * len(prompts), [[] for _ in prompts], ["length"] * len(prompts)
        force = list(range(len(prompts)))
        if budget > 0:
            cfg = dataclasses.replace(self.sampling, max_new_tokens=budget)
            batch = rollout(self.model, prompts, cfg, tokenizer=self.tokenizer)
            texts, reasons = list(batch.texts), list(batch.finish_reasons)
            ids = [batch.row_tokens(i) for i in range(len(prompts))]
            force = [i for i, r in enumerate(reasons) if r == "length" and THINK_END not in texts[i]]
        if force:
            close = self.tokenizer.encode(FORCED_CLOSE, add_special_tokens=False)
            follow = [Prompt(list(prompts[i].input_ids) + ids[i] + close, list(prompts[i].mels)) for i in force]
            cfg = dataclasses.replace(self.sampling, max_new_tokens=self.answer_tokens)
            batch = rollout(self.model, follow, cfg, tokenizer=self.tokenizer)
            for row, i in enumerate(force):
                texts[i] += FORCED_CLOSE + batch.texts[row]
                ids[i] = ids[i] + close + batch.row_tokens(row)
                reasons[i] = batch.finish_reasons[row]
        return texts, ids, reasons

    def _think_tokens(self, ids: list[int], text: str) -> int:
        """Generated tokens up to and including the one that completes `</think>` (all of them when the think
        block never closed): the smallest prefix whose decoded text holds `</think>`, by bisection."""
        if THINK_END not in text:
            return len(ids)
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if THINK_END in decode_text(self.tokenizer, ids[:mid]):
                hi = mid
            else:
                lo = mid + 1
        return lo


# ---------------------------------------------------------------------------------------------- endpoint


def audio_parts(source, chunk_seconds: float = 25.0) -> list[dict]:
    """OpenAI `input_audio` parts for one clip (path or file bytes): 16 kHz WAV, one per <= 25 s chunk."""
    wave = load_audio(source if isinstance(source, bytes) else str(source))
    return [{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes(chunk)).decode("ascii"),
                                                    "format": "wav"}}
            for chunk in split_chunks(wave, chunk_seconds)]


def openai_messages(messages: list[dict]) -> list[dict]:
    """Task messages (audio parts as paths or bytes) -> OpenAI chat messages with `input_audio` parts."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                parts += audio_parts(part["audio"]) if part.get("type") == "audio" else [part]
            content = parts
        out.append({"role": message["role"], "content": content})
    return out


class Endpoint:
    """An OpenAI-compatible chat endpoint; `generate(jobs)` yields outputs as they complete (`concurrency` at once)."""

    def __init__(self, url: str, sampling: SamplingConfig, *, api_key: str = "EMPTY", model: str = "default",
                 timeout_s: float = 600.0, max_retries: int = 3, concurrency: int = 4, think_prefix: bool = False):
        try:
            import openai
        except ImportError as err:
            raise ValueError(f"--endpoint needs the openai package (pip install openai): {err}") from None
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.name = f"{model}@{url}"
        self.client = openai.OpenAI(base_url=url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.model, self.sampling, self.concurrency, self.think_prefix = model, sampling, concurrency, think_prefix

    def generate(self, jobs: Sequence[Job]) -> Iterator[list[Output]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, job) for job in jobs]
            for future in as_completed(futures):
                yield [future.result()]

    def _request(self, job: Job) -> dict:
        messages = openai_messages(get_task(job.task).prompt(apply(job.row, job.key[1])))
        s = self.sampling
        body = {"model": self.model, "messages": messages, "temperature": s.temperature, "top_p": s.top_p,
                "max_tokens": s.max_new_tokens}
        extra = {}
        if s.repetition_penalty != 1.0:
            extra["repetition_penalty"] = s.repetition_penalty
        if s.seed is not None:
            body["seed"] = s.seed
        if self.think_prefix:  # the official client: an open assistant turn "<think>\n", continued by the server
            messages.append({"role": "assistant", "content": "<think>\n"})
            extra.update(continue_final_message=True, add_generation_prompt=False, skip_special_tokens=False,
                         stop_token_ids=[STEP_STOP_ID])
        if extra:
            body["extra_body"] = extra
        return body

    def _one(self, job: Job) -> Output:
        import openai

        if variant_budget(job.key[1]) is not None:
            return Output(job.key, None, error="a forced thinking budget (think<N>) needs a local --model")
        try:
            body = self._request(job)
        except (AudioError, ValueError) as err:
            return Output(job.key, None, error=f"prompt: {err}")
        try:
            reply = self.client.chat.completions.create(**body)
        except openai.APIStatusError as err:
            return Output(job.key, None, error=f"endpoint HTTP {err.status_code}: {str(err)[:200]}")
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            return Output(job.key, None, error=f"endpoint {type(err).__name__}: {str(err)[:200]}")
        if not getattr(reply, "choices", None):
            return Output(job.key, None, error=f"endpoint reply without choices: {str(reply)[:200]}")
        choice = reply.choices[0]
        text = raw_text(choice.message.content, getattr(choice.message, "reasoning_content", None)
                        or getattr(choice.message, "reasoning", None))
        tokens = reply.usage.completion_tokens if reply.usage else 0
        reason = "length" if choice.finish_reason == "length" else "stop"
        return Output(job.key, text, tokens, reason)


def raw_text(content: str | None, reasoning: str | None) -> str:
    """One raw output from a chat reply: `reasoning\\n</think>\\nanswer` when the server split the reasoning
    off (`reasoning_content`), else the content as it came (which may hold its own think block)."""
    if reasoning is not None:
        return f"{reasoning}{FORCED_CLOSE}{content}" if content is not None else reasoning
    return content or ""

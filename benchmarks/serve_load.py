"""Benchmark: `mgrd serve` latency to the first audio packet, and throughput with batching on against off.

Servers run as separate processes (`python -m mgrd.serve.cli`), so the clients here do not share their
interpreter; everything is on localhost.

1. Speech: the scripted tiny checkpoint (`tests/serve/scripted.py`: a real model whose weights make it write a
   fixed thinking, `</think>`, and a two-sentence answer) answers streaming requests with
   `"modalities": ["text", "audio"]`. Per request: time from sending to the first byte, the first reasoning
   token, the first answer token, the first audio packet (first sentence spoken by espeak-ng) and the end;
   medians over `--speech-requests`. Also espeak-ng alone on the first sentence, the floor of the audio part.
2. Load: `--clients` concurrent clients on the random tiny checkpoint for `--seconds`, each sending greedy
   requests of exactly `--tokens` tokens (a prompt the model does not stop on early), once with batching
   (`--max-num-seqs 32`), once with batching on the scheduler's fallback path (steps through `model(...)` and
   a transformers cache merged and cut as jobs come and go, as before the fast path; forced by a wrapper that
   reports no model as covered), and once without batching (`--max-num-seqs 1`, one request decoded at a
   time): requests and tokens per second, p50/p95 latency, p50 time to first token, errors, and the
   throughput ratios.

Run: `python benchmarks/serve_load.py` (about 4 min on 2 shared cores), `--quick` for a smoke run.
The numbers are for the tiny model on this CPU: they measure the server (scheduling, streaming, speech), not a
33B model's speed; on a GPU pass `--device cuda`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the scripted checkpoint builder lives with the server's tests


THREADS: list[str] = []  # `--threads N` for the servers, from the command line
# `python -m mgrd.serve.cli`, with the scheduler told that no model is covered by the fast path
FALLBACK = ("import sys, mgrd.serve.scheduler as s; s.supports_fast_path = lambda model: False; "
            "from mgrd.serve.cli import main; sys.exit(main())")


def start_server(model: Path, *extra: str, device: str = "cpu", fallback: bool = False
                 ) -> tuple[subprocess.Popen, str]:
    """Start `mgrd serve` on a free port (on the scheduler's fallback path with `fallback`); returns it and its URL."""
    entry = ["-c", FALLBACK] if fallback else ["-m", "mgrd.serve.cli"]
    proc = subprocess.Popen([sys.executable, *entry, "--model", str(model), "--port", "0",
                             "--device", device, "--served-model-name", "m", "--log-level", "info", *THREADS,
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            return proc, found.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def timed_stream(url: str, payload: dict) -> dict:
    """Send one streaming request; seconds from sending to each first event, and the end."""
    marks, start = {}, time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json={**payload, "stream": True}, timeout=300) as r:
        if r.status_code != 200:
            return {"error": f"{r.status_code} {r.read()[:300].decode(errors='replace')}"}
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            now = time.perf_counter() - start
            marks.setdefault("first_byte", now)
            if line == "data: [DONE]":
                break
            for choice in json.loads(line[6:]).get("choices", []):
                delta = choice.get("delta", {})
                for key, mark in (("reasoning_content", "first_reasoning"), ("content", "first_answer"),
                                  ("audio", "first_audio")):
                    if delta.get(key):
                        marks.setdefault(mark, now)
                        marks.setdefault("first_token", now) if key != "audio" else None
    marks["total"] = time.perf_counter() - start
    return marks


def speech(model: Path, requests: int, device: str) -> None:
    from mgrd.serve import tts
    from serve.scripted import ANSWER

    proc, url = start_server(model, device=device)
    try:
        payload = {"model": "m", "max_tokens": 64, "temperature": 0, "modalities": ["text", "audio"],
                   "audio": {"voice": "alloy", "format": "pcm16"},
                   "messages": [{"role": "user", "content": "Which tone is higher?"}]}
        timed_stream(url, payload)  # warm up
        runs = [timed_stream(url, payload) for _ in range(requests)]
        text_only = [timed_stream(url, {k: v for k, v in payload.items() if k not in ("modalities", "audio")})
                     for _ in range(requests)]
    finally:
        stop_server(proc)
    first_sentence = tts.SentenceChunker().feed(ANSWER + " ")[0]
    espeak = []
    for _ in range(requests):
        t = time.perf_counter()
        tts.speak(first_sentence)
        espeak.append(time.perf_counter() - t)
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print(f"\n## speech out (scripted tiny model, {requests} streaming requests, medians)")
    print("| | first byte | first reasoning token | first answer token | first audio packet | end |")
    print("|---|---|---|---|---|---|")
    for name, rows in (("text + audio", runs), ("text only", text_only)):
        cells = [f"{1000 * med(rows, k):.0f} ms" if k in rows[0] else "-"
                 for k in ("first_byte", "first_reasoning", "first_answer", "first_audio", "total")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    gap = med(runs, "first_audio") - med(runs, "first_answer")
    print(f"\nespeak-ng alone on the first sentence ({first_sentence!r}): {1000 * statistics.median(espeak):.0f} ms; "
          f"first answer token -> first audio packet: {1000 * gap:.0f} ms")


def load(model: Path, clients: int, seconds: float, tokens: int, device: str) -> None:
    payload = {"model": "m", "max_tokens": tokens, "temperature": 0,
               "messages": [{"role": "user", "content": "Hello"}]}  # the random tiny model runs on after it
    results = {}
    runs = (("batching on", 32, False), ("batching on, fallback path", 32, True), ("batching off", 1, False))
    for name, rows, fallback in runs:
        proc, url = start_server(model, "--max-num-seqs", str(rows), "--max-waiting", "256", device=device,
                                 fallback=fallback)
        try:
            timed_stream(url, {**payload, "max_tokens": 4})  # warm up
            results[name] = run_clients(url, payload, clients, seconds)
        finally:
            stop_server(proc)
    print(f"\n## load ({clients} concurrent clients, {seconds:g} s, greedy {tokens}-token requests, random tiny model)")
    print("| | requests/s | tokens/s | p50 latency | p95 latency | p50 time to first token | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.2f} | {r['tps']:.0f} | {r['p50']:.2f} s | {r['p95']:.2f} s | "
              f"{1000 * r['ttft']:.0f} ms | {r['errors']} |")
    for name, r in results.items():
        if r["first_error"]:
            print(f"first error ({name}): {r['first_error']}")
    on, off, old = results["batching on"], results["batching off"], results["batching on, fallback path"]
    print(f"\nthroughput ratio (batching on / off): {on['tps'] / off['tps']:.2f}x; "
          f"(batching on / on the fallback path): {on['tps'] / old['tps']:.2f}x")


def run_clients(url: str, payload: dict, clients: int, seconds: float) -> dict:
    stop_at = time.perf_counter() + seconds

    def client(_):
        done = []
        while time.perf_counter() < stop_at:
            done.append(timed_stream(url, payload))
        return done

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        runs = [r for rows in pool.map(client, range(clients)) for r in rows]
    wall = time.perf_counter() - start
    ok = [r for r in runs if "error" not in r]
    latencies = sorted(r["total"] for r in ok)
    return {"rps": len(ok) / wall, "tps": len(ok) * payload["max_tokens"] / wall,
            "p50": statistics.median(latencies), "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "ttft": statistics.median(r.get("first_token", r["total"]) for r in ok), "errors": len(runs) - len(ok),
            "first_error": next((r["error"] for r in runs if "error" in r), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the load test (default 8)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each load run (default 30)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per load request (default 64)")
    parser.add_argument("--speech-requests", type=int, default=10, help="streaming speech requests (default 10)")
    parser.add_argument("--device", default="cpu", help="the servers' device (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per server (default 1: on a shared CPU, OpenMP threads waiting on each "
                        "other made the tiny model 7-40x slower with 2; 0 = torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 speech requests, 8 s load runs")
    args = parser.parse_args()
    if args.threads:
        THREADS[:] = ["--threads", str(args.threads)]
    if args.quick:
        args.speech_requests, args.seconds = 3, 8.0
    from mgrd.models.presets import init_checkpoint
    from serve.scripted import scripted_checkpoint

    print(f"# mgrd serve latency ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}, torch threads per server: {args.threads or 'default'})")
    with tempfile.TemporaryDirectory() as tmp:
        scripted = scripted_checkpoint(Path(tmp) / "scripted")
        tiny = init_checkpoint("tiny", Path(tmp) / "tiny", seed=0)
        speech(scripted, args.speech_requests, args.device)
        load(tiny, args.clients, args.seconds, args.tokens, args.device)


if __name__ == "__main__":
    main()

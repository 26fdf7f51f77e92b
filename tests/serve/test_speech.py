"""Speech out: espeak-ng speaks the answer (never the thinking), whole or sentence by sentence while streaming."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import openai
import pytest
import soundfile as sf

from mgrd.serve import tts

from .scripted import ANSWER, REASONING

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_sentences_are_cut_at_their_ends_and_long_runs_at_a_space():
    chunker = tts.SentenceChunker(max_chars=20)
    assert chunker.feed("Second hig") == []
    assert chunker.feed("her. Up") == ["Second higher."]
    assert chunker.feed(" a fifth!") == []  # "!" at the very end: the next delta may continue it ("!!", "!)")
    assert chunker.feed(" And\nthen") == ["Up a fifth!", "And"]
    assert chunker.feed(" words without any stop at all") == ["then words without"]
    assert chunker.flush() == ["any stop at all"] and chunker.flush() == []


def test_speak_gives_audio_of_a_plausible_length():
    wave = tts.speak("Second higher. Up a fifth!", "alloy")
    seconds = len(wave) / tts.RATE
    assert wave.dtype == np.float32 and 1.0 < seconds < 4.0 and 0.05 < np.abs(wave).max() <= 1.0
    data, rate = sf.read(io.BytesIO(tts.wav_bytes(wave)))
    assert rate == tts.RATE and len(data) == len(wave)
    assert len(tts.pcm16_bytes(wave)) == 2 * len(wave)
    assert len(tts.speak("   ")) == 0
    with pytest.raises(ValueError, match="unknown voice 'robot'; choose from alloy"):
        tts.speak("hi", "robot")


def test_text_that_looks_like_an_option_is_spoken_not_parsed():
    assert len(tts.speak("--help -v xx")) > tts.RATE // 2


def _client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def test_the_answer_is_spoken_in_one_wav(scripted_live):
    out = _client(scripted_live).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Which?"}], max_tokens=64,
        modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    message = out.choices[0].message
    assert message.content == ANSWER and message.reasoning_content == REASONING
    assert message.audio.transcript == ANSWER  # the answer, not the thinking
    wave, rate = sf.read(io.BytesIO(base64.b64decode(message.audio.data)))
    assert rate == 24_000 and 1.0 < len(wave) / rate < 4.0


def test_streamed_speech_comes_sentence_by_sentence(scripted_live):
    stream = _client(scripted_live).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Which?"}], max_tokens=64, stream=True,
        modalities=["text", "audio"], audio={"voice": "nova", "format": "pcm16"})
    order, transcripts, pcm = [], [], b""
    for chunk in stream:
        for choice in chunk.choices:
            audio = getattr(choice.delta, "audio", None)
            if audio:
                transcripts.append(audio.transcript)
                pcm += base64.b64decode(audio.data)
                order.append("a")
            elif choice.delta.content:
                order.append("c")
            if choice.finish_reason:
                order.append("f")
    assert transcripts == ["Second higher.", "Up a fifth!"]
    assert order[-1] == "f" and order.index("a") > order.index("c")  # audio after its text, finish after audio
    assert 1.0 < len(pcm) / 2 / 24_000 < 5.0

"""The playground page in headless Chromium (Debian's `chromium`, driven by Playwright): load it, upload a wav,
ask, and see the thinking and the answer stream apart, with the spoken answer arriving as audio chunks.

Chromium is found at `$MGRD_CHROMIUM`, else `chromium` / `chromium-browser` on the PATH; without it the test is
skipped (install it with `apt-get install -y chromium`). The screenshot is kept in `$MGRD_TEST_ARTIFACTS`
(default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from .helpers import tone
from .scripted import ANSWER, REASONING

pytestmark = pytest.mark.integration


def chromium_path() -> str | None:
    return os.environ.get("MGRD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found: apt-get install -y chromium (or set MGRD_CHROMIUM to its path)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True,
                                     args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def test_upload_ask_and_watch_thinking_and_answer(browser, scripted_live, tmp_path):
    clip = tmp_path / "tone.wav"
    sf.write(clip, tone(440.0, 1.0), 16_000, subtype="PCM_16")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(scripted_live.url + "/")
    page.wait_for_function("document.getElementById('model-name').textContent === 'scripted'")
    page.set_input_files("#audio-file", str(clip))
    page.wait_for_function("document.getElementById('audio-status').textContent === 'tone.wav'")
    page.fill("#question", "Which tone is higher?")
    page.check("#speak")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').dataset.done === '1'", timeout=60_000)
    assert page.text_content("#reasoning") == REASONING
    assert page.text_content("#answer") == ANSWER
    assert page.get_attribute("#speech", "data-chunks") == "2"  # one WAV per sentence of the answer
    assert int(page.get_attribute("#usage", "data-prompt-tokens")) > 12  # 1 s of audio: 12 tokens + its markers
    assert page.evaluate("document.getElementById('thinking').open") is False  # folded once the answer began
    assert not errors
    artifacts = Path(os.environ.get("MGRD_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "playground.png"), full_page=True)
    assert (artifacts / "playground.png").stat().st_size > 1000
    page.close()

"""The Image -> speech page in a real browser: it opens without exceptions with its clip
player, a bad upload gets an error box and a good WAV is taken, and a one-epoch run
started with the Train button ends with the students' results (screenshots in
artifacts/screenshots/speech-*.png)."""

from __future__ import annotations

import numpy as np
import pytest
from test_browser import IDLE, SHOTS, _no_exception, _open, _scroll_to

from kd_core import audio

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _tone_wav(seconds: float = 0.6, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return audio.to_wav_bytes((0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def _upload(page, name: str, mime: str, data: bytes) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}]
    )
    page.wait_for_timeout(800)
    page.wait_for_selector(IDLE, timeout=120_000)


def test_the_speech_page_opens_checks_uploads_and_trains(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/speech?epochs=1")
    _no_exception(page)
    assert page.get_by_text("Image → speech").first.is_visible()
    assert page.locator("[data-testid='stAudio']").count() >= 1
    page.screenshot(path=str(SHOTS / "speech.png"))
    page.screenshot(path=str(SHOTS / "speech-full.png"), full_page=True)

    _scroll_to(page.get_by_text("3. Your own voice").first)
    _upload(page, "digit.mp3", "audio/mpeg", b"ID3\x03" + b"\x00" * 400)
    err = page.locator("[data-testid='stAlertContentError']")
    err.first.wait_for(timeout=60_000)
    assert "digit.mp3" in err.first.inner_text() and "not a .wav file" in err.first.inner_text()
    _no_exception(page)
    _upload(page, "seven.wav", "audio/wav", _tone_wav())
    page.get_by_text("Train the students above first").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stAlertContentError']").count() == 0

    page.get_by_role("button", name="▶ Train").click()
    page.get_by_text("Finished.").first.wait_for(timeout=400_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.get_by_text("Cross-modal student: confusion on unseen voices").count() >= 1
    page.get_by_text("Finished.").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / "speech-results.png"))
    page.screenshot(path=str(SHOTS / "speech-results-full.png"), full_page=True)

    # now the students listen to an uploaded recording: espeak-ng saying "seven" in a voice
    # variant no training clip uses, at 16 kHz
    said = audio.synthesise(audio.Voice("en", "f3", 150, 45, 100, 30.0), 7)
    _upload(page, "seven.wav", "audio/wav", audio.to_wav_bytes(audio.resample(said, audio.SAMPLE_RATE, 16000), 16000))
    page.get_by_text("The cross-modal student hears").first.wait_for(timeout=60_000)
    _no_exception(page)
    page.get_by_text("3. Your own voice").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / "speech-own-voice.png"))
    page.close()

"""Image -> speech (kd_core.audio): features, WAV checks, the espeak-ng synthesis path, the
pairing that keeps audio labels away from the cross-modal student, training, CLI, jobs."""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from kd_core import audio
from kd_core.__main__ import main

SR = audio.SAMPLE_RATE


def tone(freq: float, seconds: float = 0.5, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(wave: np.ndarray, rate: int = SR, bits: int = 16, channels: int = 1) -> bytes:
    """A PCM WAV written here by hand (independent of audio.to_wav_bytes)."""
    import struct

    x = np.repeat(np.asarray(wave, dtype=np.float64)[:, None], channels, 1).reshape(-1)
    if bits == 16:
        pcm = np.round(x * 32767).astype("<i2").tobytes()
    else:
        pcm = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + 16 + 8 + len(pcm))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 6000.0])
def test_a_tone_lands_in_the_mel_band_of_its_frequency(freq):
    spec = audio.log_mel(tone(freq))  # (n_mels, frames)
    assert spec.shape[0] == audio.N_MELS
    band = int(spec.mean(1).argmax())
    centres = audio.mel_centres_hz()
    assert band == int(np.argmin(np.abs(centres - freq))), (band, centres[band], freq)
    # and the energy is concentrated there: the loudest band is far above the median band
    assert float(spec.mean(1)[band] - spec.mean(1).median()) > 5.0


def test_mel_filterbank_is_triangles_on_the_mel_scale():
    fb = audio.mel_filterbank()
    assert fb.shape == (audio.N_MELS, audio.N_FFT // 2 + 1)
    assert float(fb.min()) >= 0.0 and float(fb.max()) <= 1.0
    centres = audio.mel_centres_hz()
    spacing = np.diff(audio.hz_to_mel(centres))
    assert np.allclose(spacing, spacing[0])  # equally spaced in mel
    bin_hz = SR / audio.N_FFT
    for m in (0, 10, 39):  # each peaks at its own centre frequency (to one FFT bin)
        assert abs(float(fb[m].argmax()) * bin_hz - centres[m]) <= bin_hz


def test_features_are_normalised_log_mel_images_and_ignore_loudness():
    x = np.stack([tone(440.0, 1.0, amp=0.05), tone(440.0, 1.0, amp=0.5)])
    f = audio.features(x)
    assert f.shape[:3] == (2, 1, audio.N_MELS)
    assert torch.allclose(f[0], f[1], atol=1e-3)
    assert abs(float(f[0].mean())) < 1e-4 and abs(float(f[0].std()) - 1) < 1e-3


def test_crossmodal_loss_matches_a_hand_written_loop():
    torch.manual_seed(0)
    s, z = torch.randn(6, 10), torch.randn(6, 10) * 3
    T = 3.0
    p = torch.softmax(z / T, 1)
    want = 0.0
    for i in range(6):
        q = torch.softmax(s[i] / T, 0)
        want += sum(float(p[i, c]) * (np.log(float(p[i, c])) - np.log(float(q[c]))) for c in range(10))
    want = T * T * want / 6
    assert float(audio.crossmodal_loss(s, p, T)) == pytest.approx(want, rel=1e-4)


# ---------------------------------------------------------------- uploads


def test_a_good_wav_becomes_a_clip_like_the_corpus():
    for rate, bits, ch in ((16000, 16, 1), (44100, 16, 2), (8000, 8, 1), (SR, 16, 1)):
        clip = audio.check_upload(wav(tone(500.0, 0.6, rate), rate, bits, ch), "me.wav")
        assert clip.shape == (audio.CLIP_SAMPLES,) and clip.dtype == np.float32
        assert 0.3 < float(np.abs(clip).max()) <= 0.6


def test_parse_wav_reads_back_what_to_wav_bytes_wrote():
    x = tone(300.0, 0.2)
    y, rate = audio.parse_wav(audio.to_wav_bytes(x))
    assert rate == SR and np.allclose(x, y, atol=1 / 16000)


@pytest.mark.parametrize(
    "name,data,says",
    [
        ("digit.mp3", wav(tone(500, 0.5)), "not a .wav file"),
        ("digit.wav", b"ID3\x03\x00\x00\x00" + b"\x00" * 200, "not a WAV file"),
        ("digit.wav", b"", "empty"),
        ("digit.wav", wav(tone(500, 0.5))[:3000], "truncated"),
        ("digit.wav", wav(tone(500, 0.5))[:30], "truncated"),
        ("digit.wav", wav(tone(500, 0.5, 4000), 4000), "sample rate 4,000 Hz"),
        ("digit.wav", wav(tone(500, 0.5, 96000), 96000), "sample rate 96,000 Hz"),
        ("digit.wav", wav(tone(500, 6.0, 8000), 8000), "at most 4 s"),
        ("digit.wav", wav(tone(500, 0.02)), "at least"),
        ("digit.wav", wav(np.zeros(SR // 2, np.float32)), "silent"),
        ("digit.wav", wav(tone(500, 30.0, 48000), 48000), "at most 2 MB"),
    ],
)
def test_bad_uploads_are_refused_with_one_line(name, data, says):
    with pytest.raises(audio.AudioFileError) as e:
        audio.check_upload(data, name)
    msg = str(e.value)
    assert says in msg and "\n" not in msg


# ---------------------------------------------------------------- voices, synthesis, pairing


def test_test_voices_are_voice_settings_the_training_never_heard():
    tr, te = audio.make_voices(40, 12, seed=0)
    assert (tr, te) == audio.make_voices(40, 12, seed=0)  # seeded
    assert {v.variant for v in tr}.isdisjoint({v.variant for v in te})
    assert not set(tr) & set(te)
    assert {v.lang for v in tr} == {v.lang for v in te} == {"en", "cmn"}
    assert audio.make_voices(40, 12, seed=1) != (tr, te)


def test_real_espeak_synthesis_in_both_languages_is_cached_as_plain_npy(kd_home):
    assert audio.espeak_available(), "espeak-ng is required (apt-get install espeak-ng)"
    for lang in audio.LANGUAGES:
        v = audio.Voice(lang, "m3", 170, 50, 100, 20.0)
        w = audio.synthesise(v, 7)
        assert w.dtype == np.float32 and 0.15 < len(w) / SR < 2.0
        assert float(np.abs(w).max()) > 0.05
        files = list((kd_home / "speech").glob(f"{audio._clip_key(v, 7)}.npy"))
        assert len(files) == 1
        cached = np.load(files[0], allow_pickle=False)
        assert cached.dtype == np.int16 and np.allclose(cached / 32768.0, w)
    # a different speed is a different recording: longer when spoken slower
    slow = audio.synthesise(audio.Voice("en", "m3", 100, 50, 100, 20.0), 7)
    fast = audio.synthesise(audio.Voice("en", "m3", 250, 50, 100, 20.0), 7)
    assert len(slow) > len(fast)


def test_without_espeak_ng_cached_clips_still_load_and_new_ones_say_how_to_install(monkeypatch):
    v = audio.Voice("en", "f1", 160, 40, 90, 15.0)
    audio.synthesise(v, 3)  # cached now
    monkeypatch.setenv("KD_PLAYGROUND_ESPEAK", "/nonexistent/espeak-ng")
    assert not audio.espeak_available()
    assert len(audio.synthesise(v, 3)) > 0
    with pytest.raises(audio.EspeakMissingError, match="apt-get install espeak-ng"):
        audio.build_corpus([audio.Voice("en", "f1", 161, 41, 91, 15.0)], seed=0)


def test_pairs_show_the_same_digit_and_mismatch_exactly_the_asked_fraction():
    digits = np.repeat(np.arange(10), 20)
    labels = torch.arange(10).repeat(30)
    idx, wrong = audio.pair_images(digits, labels, 0.0, seed=0)
    assert (labels[idx].numpy() == digits).all() and not wrong.any()
    idx, wrong = audio.pair_images(digits, labels, 0.3, seed=0)
    assert wrong.sum() == 60
    shown = labels[idx].numpy()
    assert (shown[wrong] != digits[wrong]).all() and (shown[~wrong] == digits[~wrong]).all()


def test_the_paired_set_carries_no_label_by_construction():
    assert {f.name for f in fields(audio.PairedSet)} == {"audio", "images", "image_index"}


def _small(**kw) -> audio.CrossmodalConfig:
    return audio.CrossmodalConfig(**{"train_voices": 8, "test_voices": 4, "epochs": 2, "few_per_class": 2, **kw})


def _train(cfg, prepared):
    r = audio.CrossmodalRun(cfg, device=torch.device("cpu"))
    for _ in r.events(prepared=prepared):
        pass
    return r


@pytest.mark.slow
def test_the_crossmodal_student_is_blind_to_the_audio_labels():
    """Shuffle every training clip's label after pairing: the cross-modal student trains to
    the very same weights (it never reads them); the supervised student changes."""
    cfg = _small(epochs=1)
    d = audio.prepare(cfg)
    for f in fields(audio.PairedSet):
        v = getattr(d.pairs, f.name)
        assert not (v.shape == d.train_digits.shape and torch.equal(v, d.train_digits))
    a = _train(cfg, d)
    g = torch.Generator().manual_seed(1)
    shuffled = replace(d, train_digits=d.train_digits[torch.randperm(len(d.train_digits), generator=g)])
    b = _train(cfg, shuffled)
    for (n, p), (_, q) in zip(
        a.students["crossmodal"].state_dict().items(), b.students["crossmodal"].state_dict().items()
    ):
        assert torch.equal(p, q), n
    sup_a = a.students["supervised"].state_dict()["fc.weight"]
    assert not torch.equal(sup_a, b.students["supervised"].state_dict()["fc.weight"])
    assert a.result["student"]["audio_labels_used"] == 0
    assert a.result["supervised"]["audio_labels_used"] == len(d.train)


@pytest.mark.slow
def test_a_short_run_from_the_cli_beats_chance_without_audio_labels(tmp_path, capsys):
    out = tmp_path / "cm.json"
    rc = main(
        [
            "crossmodal",
            "train",
            "--epochs",
            "8",
            "--train-voices",
            "16",
            "--test-voices",
            "6",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["chance"] == pytest.approx(0.1)
    assert res["student"]["audio_labels_used"] == 0
    assert res["data"]["test_clips"] == 60 and res["data"]["train_clips"] == 160
    assert set(res["data"]["test_voices"]).isdisjoint(res["data"]["train_voices"])
    assert res["student"]["test_accuracy"] > 2 * res["chance"], res["student"]
    assert res["supervised"]["test_accuracy"] > 2 * res["chance"], res["supervised"]
    assert "cross-modal" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,says",
    [
        (["--mismatch", "1.5"], "mismatch must be a fraction in [0, 1]"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--temperature", "warm"], "temperature must be a number"),
        (["--epochs", "0"], "epochs must be a whole number"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(args, says, capsys):
    try:
        rc = main(["crossmodal", "train", *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err


def test_cli_without_espeak_ng_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setenv("KD_PLAYGROUND_ESPEAK", "/nonexistent/espeak-ng")
    assert main(["crossmodal", "train", "--train-voices", "9", "--seed", "12345"]) == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install espeak-ng" in err and "\n" not in err


@pytest.mark.slow
def test_a_background_job_streams_events_and_stop_keeps_what_was_done():
    from kd_core.jobs import JobManager

    mgr = JobManager(max_running=1)
    job = audio.submit(mgr, _small(epochs=30))
    deadline = time.time() + 300
    while job.step < 3 and not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.step >= 3 and not job.done
    job.stop()
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "stopped"
    assert job.result is not None and job.result["status"] == "stopped"
    assert 0 <= job.result["student"]["test_accuracy"] <= 1
    assert job.result["steps"] < job.result["total_steps"]
    assert set(job.trainer.students) == set(audio.STUDENTS)
    assert job.steps and set(job.steps[0]["losses"]) == set(audio.STUDENTS)


def test_classroom_limits_apply_to_crossmodal_jobs():
    """A classroom server's epoch cap refuses a long cross-modal run like any other run."""
    from kd_core.classroom import LimitReached, Limits
    from kd_core.jobs import JobManager

    mgr = JobManager(max_running=1, limits=Limits(classroom=True, max_epochs=20))
    with pytest.raises(LimitReached, match="at most 20 epochs"):
        audio.submit(mgr, _small(epochs=30))
    Limits(classroom=True).check_run(audio.JobSpec(_small(epochs=5)))  # within the caps: accepted


def test_a_stop_before_the_first_step_keeps_the_untrained_students_result():
    r = audio.CrossmodalRun(_small(epochs=3), device=torch.device("cpu"))
    events = r.events()
    for ev in events:
        if ev["kind"] == "start":
            r.stop()
        last = ev
    assert last["kind"] == "end" and last["status"] == "stopped" and last["result"]["steps"] == 0
    r2 = audio.CrossmodalRun(_small(epochs=3), device=torch.device("cpu"))
    events = r2.events()
    assert next(events)["kind"] == "start"
    events.close()  # the job system's Stop closes the stream
    assert r2.result is not None and r2.result["status"] == "stopped"

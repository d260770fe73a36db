"""Image -> speech: cross-modal distillation with no speech labels.

A teacher that sees images trains a student that hears sounds, through paired data, as in
SoundNet (Aytar, Vondrick & Torralba 2016) and cross-modal distillation (Gupta, Hoffman &
Malik 2016). Here:

- **Spoken digits** ("zero" ... "nine" in English, 零 ... 九 in Mandarin) are synthesised
  offline with Debian's ``espeak-ng``; a *voice* is a language, a voice variant, a speed, a
  pitch, an amplitude and a noise level. Waveforms are cached in ``KD_PLAYGROUND_HOME/speech``
  as ``.npy`` (int16, no pickle), one file per clip, keyed by a hash of its recipe.
- **A seeded split by voice**: training voices use one pool of espeak variants, test voices
  another, so the test set is spoken by voice settings the students never heard.
- **Pairs**: each training clip is paired with a real MNIST image (mnist-mini) of the same
  digit, as a video pairs a frame with its sound; ``mismatch`` is the fraction of pairs whose
  image shows another digit. The pairing is the only step that knows which digit a clip
  says (the "video" knows which frame goes with which sound); what leaves it
  (:class:`PairedSet`) holds sounds and images and no label at all.
- **Features** with plain torch: a Hann-windowed STFT, a triangular mel filterbank, the log.
- **Students**: the same small CNN over the log-mel image, trained three ways —
  ``crossmodal`` on the image teacher's soft targets at T (``T^2 KL(p_T(image) || p_S(sound))``,
  no audio label), ``supervised`` on every clip's label (the upper reference) and
  ``few_labels`` on a few labelled clips per digit.

The run is a stream of events like ``train.Trainer.events()`` (start / step / epoch / end).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import subprocess
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import losses, metrics, models, paths, teachers, train, viz
from .errors import ConfigError, KDError

SAMPLE_RATE = 22050  # espeak-ng's rate; uploads are resampled to it
CLIP_SECONDS = 1.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
N_FFT = 1024
HOP = 441  # 20 ms
N_MELS = 40
F_MIN, F_MAX = 60.0, 8000.0
NUM_CLASSES = 10
CHANCE = 1.0 / NUM_CLASSES

WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "cmn": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"],
}
LANGUAGES = tuple(WORDS)
# espeak-ng voice variants: the training voices use the first pool, the test voices the
# second, so no test voice shares its variant (timbre) with a training voice
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f4", "klatt", "klatt3", "adam", "linda", "john", "max")
TEST_VARIANTS = ("m7", "f3", "f5", "klatt2", "steph", "robert")
SPEED = (120, 220)  # words per minute
PITCH = (15, 85)  # 0..99
AMPLITUDE = (60, 160)  # 0..200
SNR_DB = (8.0, 30.0)  # white noise added to each clip

# uploads: what a WAV must be
MAX_UPLOAD_BYTES = 2 * 2**20
MAX_UPLOAD_SECONDS = 4.0
MIN_UPLOAD_SECONDS = 0.1
UPLOAD_RATES = (8000, 48000)  # accepted sample rates, inclusive

INSTALL_HINT = "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"


class EspeakMissingError(KDError, RuntimeError):
    """espeak-ng is needed to synthesise clips that are not cached yet."""


class AudioFileError(KDError, ValueError):
    """An uploaded or recorded sound that cannot be used."""


# ---------------------------------------------------------------- espeak-ng


def espeak_binary() -> str | None:
    """The espeak-ng executable, or None. ``KD_PLAYGROUND_ESPEAK`` names another one (tests
    point it at a missing file to see what a machine without espeak-ng shows)."""
    return shutil.which(os.environ.get("KD_PLAYGROUND_ESPEAK") or "espeak-ng")


def espeak_available() -> bool:
    return espeak_binary() is not None


def require_espeak() -> str:
    exe = espeak_binary()
    if exe is None:
        raise EspeakMissingError(
            f"espeak-ng is not installed, and the spoken digits are synthesised with it: {INSTALL_HINT}"
        )
    return exe


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak-ng settings plus the noise added to its clips."""

    lang: str  # "en" or "cmn"
    variant: str
    speed: int
    pitch: int
    amplitude: int
    snr_db: float

    @property
    def name(self) -> str:
        return f"{self.lang}+{self.variant} s{self.speed} p{self.pitch} a{self.amplitude} {self.snr_db:.0f}dB"

    def args(self) -> list[str]:
        return [
            "-v",
            f"{self.lang}+{self.variant}",
            "-s",
            str(self.speed),
            "-p",
            str(self.pitch),
            "-a",
            str(self.amplitude),
        ]


def make_voices(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Voice], list[Voice]]:
    """Seeded random voices; languages alternate; test voices use ``TEST_VARIANTS`` only."""
    rng = np.random.default_rng(seed)

    def draw(k: int, pool: tuple[str, ...], offset: int) -> list[Voice]:
        out = []
        for i in range(k):
            out.append(
                Voice(
                    lang=LANGUAGES[(i + offset) % len(LANGUAGES)],
                    variant=pool[i % len(pool)] if i < len(pool) else str(rng.choice(pool)),
                    speed=int(rng.integers(SPEED[0], SPEED[1] + 1)),
                    pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    amplitude=int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1)),
                    snr_db=float(np.round(rng.uniform(*SNR_DB), 1)),
                )
            )
        return out

    return draw(n_train, TRAIN_VARIANTS, 0), draw(n_test, TEST_VARIANTS, 1)


def _clip_key(voice: Voice, digit: int) -> str:
    return paths.key_of(
        {
            "v": 1,
            "text": WORDS[voice.lang][digit],
            "voice": f"{voice.lang}+{voice.variant}",
            "speed": voice.speed,
            "pitch": voice.pitch,
            "amplitude": voice.amplitude,
        }
    )


def synthesise(voice: Voice, digit: int) -> np.ndarray:
    """The clean waveform (float32 in [-1, 1] at ``SAMPLE_RATE``) of ``voice`` saying
    ``digit``: from the cache, else from espeak-ng (then cached)."""
    path = paths.subdir("speech") / f"{_clip_key(voice, digit)}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False).astype(np.float32) / 32768.0
        except (OSError, ValueError):
            pass  # unreadable cache file: synthesise again
    exe = require_espeak()
    try:
        out = subprocess.run(
            [exe, "--stdout", *voice.args(), WORDS[voice.lang][digit]],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise KDError(f"espeak-ng failed on '{WORDS[voice.lang][digit]}' ({voice.name}): {e}") from None
    wave, rate = parse_wav(out, lenient=True)  # --stdout cannot know the length: its header says "huge"
    if rate != SAMPLE_RATE:
        wave = resample(wave, rate, SAMPLE_RATE)
    pcm = np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    np.save(buf, pcm, allow_pickle=False)
    paths.atomic_write_bytes(path, buf.getvalue())
    return pcm.astype(np.float32) / 32768.0


def fit_length(wave: np.ndarray, samples: int = CLIP_SAMPLES) -> np.ndarray:
    """Trim leading and trailing quiet (10 ms frames below 5% of the loudest frame's RMS),
    then centre in ``samples`` (zero padding) or cut the middle ``samples``."""
    wave = np.asarray(wave, dtype=np.float32)
    frame = SAMPLE_RATE // 100
    n = len(wave) // frame
    if n > 0:
        rms = np.sqrt((wave[: n * frame].reshape(n, frame) ** 2).mean(1))
        loud = np.nonzero(rms > 0.05 * rms.max())[0] if rms.max() > 0 else np.array([], dtype=int)
        if len(loud):
            wave = wave[loud[0] * frame : (loud[-1] + 1) * frame]
    if len(wave) >= samples:
        start = (len(wave) - samples) // 2
        return wave[start : start + samples].copy()
    out = np.zeros(samples, dtype=np.float32)
    start = (samples - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` below the clip's power (over its non-silent part)."""
    voiced = wave[np.abs(wave) > 1e-4]
    power = float((voiced**2).mean()) if len(voiced) else 1e-6
    noise = rng.standard_normal(len(wave)).astype(np.float32) * math.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(wave + noise, -1.0, 1.0).astype(np.float32)


@dataclass(eq=False)
class Corpus:
    """Every clip of a split: waveforms (N, CLIP_SAMPLES) float32, the digit each says, its voice."""

    waves: np.ndarray
    digits: np.ndarray  # int64 (N,): what each clip says (the test labels; never given to the cross-modal student)
    voice_index: np.ndarray  # (N,) index into ``voices``
    voices: list[Voice]

    def __len__(self) -> int:
        return len(self.digits)


def build_corpus(voices: list[Voice], seed: int, progress=None, workers: int = 2) -> Corpus:
    """Synthesise (or read from the cache) every digit in every voice, fit them to one
    length and add each voice's noise (seeded per clip). ``progress(done, total)``."""
    jobs = [(v, d) for v in voices for d in range(NUM_CLASSES)]
    missing = [(v, d) for v, d in jobs if not (paths.subdir("speech") / f"{_clip_key(v, d)}.npy").exists()]
    if missing:
        require_espeak()
    # progress is reported from the calling thread only: a page's progress bar cannot be
    # drawn from the pool's threads (they have no Streamlit session)
    raw = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, w in enumerate(pool.map(lambda job: synthesise(*job), jobs), start=1):
            raw.append(w)
            if progress is not None:
                progress(i, len(jobs))
    waves = np.zeros((len(jobs), CLIP_SAMPLES), dtype=np.float32)
    for i, ((v, d), w) in enumerate(zip(jobs, raw)):
        rng = np.random.default_rng([seed, i, d])
        waves[i] = add_noise(fit_length(w), v.snr_db, rng)
    digits = np.array([d for _, d in jobs], dtype=np.int64)
    vidx = np.array([voices.index(v) for v, _ in jobs], dtype=np.int64)
    return Corpus(waves, digits, vidx, list(voices))


# ---------------------------------------------------------------- WAV files


def parse_wav(data: bytes, lenient: bool = False) -> tuple[np.ndarray, int]:
    """A PCM WAV file's samples (mono float32 in [-1, 1], channels averaged) and rate.
    Raises AudioFileError with one line when it is not a readable PCM WAV; a data chunk
    shorter than its header says is refused as truncated unless ``lenient``."""
    if len(data) == 0:
        raise AudioFileError("the file is empty")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFileError("not a WAV file (no RIFF/WAVE header)")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise AudioFileError("the WAV file's format chunk is truncated")
            tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = (tag, channels, rate, block, bits)
        elif cid == b"data":
            if len(body) < size and not lenient:
                raise AudioFileError(f"the WAV file is truncated: its data chunk holds {len(body):,} of {size:,} bytes")
            samples = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioFileError("the WAV file has no format chunk (truncated?)")
    if samples is None:
        raise AudioFileError("the WAV file has no audio data (truncated?)")
    tag, channels, rate, block, bits = fmt
    if tag not in (1, 0xFFFE) or bits not in (8, 16, 32) or channels < 1:
        raise AudioFileError(f"only PCM WAV with 8, 16 or 32-bit samples is supported (format {tag}, {bits}-bit)")
    width = bits // 8
    usable = len(samples) - len(samples) % (width * channels)
    raw = samples[:usable]
    if bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    x = x.reshape(-1, channels).mean(1) if channels > 1 else x
    return x, int(rate)


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling (enough for a 40-band log-mel up to 8 kHz)."""
    if rate == target or len(wave) == 0:
        return np.asarray(wave, dtype=np.float32)
    n = max(1, round(len(wave) * target / rate))
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).view(1, 1, -1)
    return F.interpolate(x, size=n, mode="linear", align_corners=False).view(-1).numpy()


def check_upload(data: bytes, name: str = "") -> np.ndarray:
    """An uploaded or recorded WAV, checked and made into a clip like the corpus's (mono,
    ``SAMPLE_RATE``, quiet trimmed, ``CLIP_SAMPLES`` long). Refuses, with one line saying
    why: a name that is not .wav, more than ``MAX_UPLOAD_BYTES``, an empty, truncated or
    non-PCM file, a sample rate outside ``UPLOAD_RATES``, shorter than
    ``MIN_UPLOAD_SECONDS`` or longer than ``MAX_UPLOAD_SECONDS``, or silence. The clip
    gets the same faint noise floor as the quietest training voices."""
    if name and not name.lower().endswith(".wav"):
        raise AudioFileError(f"'{name}' is not a .wav file; upload a WAV recording")
    if len(data) > MAX_UPLOAD_BYTES:
        raise AudioFileError(f"the file is {len(data) / 2**20:.1f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB")
    wave, rate = parse_wav(data)
    if not UPLOAD_RATES[0] <= rate <= UPLOAD_RATES[1]:
        raise AudioFileError(
            f"sample rate {rate:,} Hz is not supported; use {UPLOAD_RATES[0]:,} to {UPLOAD_RATES[1]:,} Hz"
        )
    seconds = len(wave) / rate
    if len(wave) == 0:
        raise AudioFileError("the file holds no samples")
    if seconds < MIN_UPLOAD_SECONDS:
        raise AudioFileError(f"the sound is {seconds:.2f} s long; say one digit in at least {MIN_UPLOAD_SECONDS} s")
    if seconds > MAX_UPLOAD_SECONDS:
        raise AudioFileError(f"the sound is {seconds:.1f} s long; at most {MAX_UPLOAD_SECONDS:g} s (one digit)")
    if float(np.abs(wave).max()) < 1e-3:
        raise AudioFileError("the sound is silent")
    wave = resample(wave, rate)
    peak = float(np.abs(wave).max())
    # the faint noise floor every training clip has (its quietest voices: 30 dB), so that
    # the padding around a clean recording does not look like nothing the students heard
    return add_noise(fit_length(wave / peak * 0.5), SNR_DB[1], np.random.default_rng(0))


def to_wav_bytes(wave: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono PCM WAV (for ``st.audio`` and tests)."""
    pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


# ---------------------------------------------------------------- features


def hz_to_mel(f):
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_centres_hz(n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """The centre frequency of each mel band."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))[1:-1]


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE, f_min: float = F_MIN, f_max: float = F_MAX
) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the mel scale, each
    rising from the previous band's centre to its own and falling to the next one's."""
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return torch.tensor(np.maximum(0.0, np.minimum(up, down)), dtype=torch.float32)


_FB: dict = {}


def log_mel(wave, rate: int = SAMPLE_RATE, n_mels: int = N_MELS) -> Tensor:
    """Log-mel spectrogram: |STFT|^2 (Hann window of ``N_FFT`` samples, hop ``HOP``) through the mel
    filterbank, then log(. + 1e-6). (N,) -> (n_mels, frames); (B, N) -> (B, n_mels, frames)."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor) else wave).float()
    single = x.dim() == 1
    x = x.view(1, -1) if single else x
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, device=x.device), center=True, return_complex=True)
    power = spec.real**2 + spec.imag**2  # (B, n_fft/2+1, frames)
    key = (n_mels, rate, str(x.device))
    if key not in _FB:
        _FB[key] = mel_filterbank(n_mels, N_FFT, rate).to(x.device)
    mel = torch.einsum("mf,bft->bmt", _FB[key], power)
    out = torch.log(mel + 1e-6)
    return out[0] if single else out


def features(waves) -> Tensor:
    """The students' input: log-mel images (B, 1, N_MELS, frames) of the clips scaled to a
    peak of 1, each normalised to zero mean and unit variance (so loudness and recording
    level do not matter)."""
    w = torch.as_tensor(np.asarray(waves, dtype=np.float32)) if not isinstance(waves, Tensor) else waves.float()
    w = w.view(1, -1) if w.dim() == 1 else w
    x = log_mel(w / w.abs().amax(1, keepdim=True).clamp_min(1e-8))
    mu = x.mean(dim=(1, 2), keepdim=True)
    sd = x.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    return ((x - mu) / sd)[:, None]


# ---------------------------------------------------------------- the student


class AudioCNN(nn.Module):
    """A small CNN over the log-mel image: three Conv3x3-BN-ReLU stages (pooling 2x2 after
    the first two), a pooling to 5 frequency rows x 1 (time averaged), dropout, a linear layer."""

    def __init__(self, n_mels: int = N_MELS, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width]
        layers = []
        for i in range(3):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            ]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((5, 1))
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * width * 5, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.pool(self.body(x)).flatten(1)))


# ---------------------------------------------------------------- pairing


@dataclass(eq=False)
class PairedSet:
    """What the cross-modal student learns from: sounds and the images paired with them.
    By construction there is no label here: the student's training path receives only this."""

    audio: Tensor  # (N, 1, N_MELS, frames) features of the training clips
    images: Tensor  # (N, 1, 28, 28) the paired MNIST images (normalised like mnist-mini)
    image_index: Tensor  # (N,) which mnist-mini training image each clip is paired with


def pair_images(
    clip_digits: np.ndarray, image_labels: Tensor, mismatch: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each clip, the index of an image in ``image_labels``: of the clip's digit, or (for
    a seeded ``mismatch`` fraction of the clips) of another digit. Returns (index, mismatched)."""
    rng = np.random.default_rng([seed, 7])
    labels = np.asarray(image_labels)
    by_digit = [np.nonzero(labels == d)[0] for d in range(NUM_CLASSES)]
    n = len(clip_digits)
    wrong = np.zeros(n, dtype=bool)
    wrong[rng.permutation(n)[: int(round(mismatch * n))]] = True
    index = np.empty(n, dtype=np.int64)
    for i, d in enumerate(np.asarray(clip_digits)):
        shown = int(d) if not wrong[i] else int((d + rng.integers(1, NUM_CLASSES)) % NUM_CLASSES)
        index[i] = int(rng.choice(by_digit[shown]))
    return index, wrong


def make_pairs(
    corpus: Corpus, images: Tensor, image_labels: Tensor, mismatch: float, seed: int, audio: Tensor | None = None
) -> PairedSet:
    """The "videos": each training clip with an image. Only this step sees the clips' digits.
    ``audio``: the clips' features when already computed."""
    index, _ = pair_images(corpus.digits, image_labels, mismatch, seed)
    idx = torch.as_tensor(index)
    return PairedSet(audio=features(corpus.waves) if audio is None else audio, images=images[idx], image_index=idx)


# ---------------------------------------------------------------- config and run


@dataclass
class CrossmodalConfig:
    temperature: float = 4.0
    mismatch: float = 0.0
    epochs: int = 15
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    few_per_class: int = 3  # labelled clips per digit for the "few labels" student
    train_voices: int = 40
    test_voices: int = 12

    # not fields: what the job system (classroom limits) and the pages read
    method = "crossmodal"
    dataset = "spoken-digits"
    train_subset = None

    def validate(self) -> CrossmodalConfig:
        def num(name, v, lo, hi, what):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be {what}, got {v!r}")

        num("temperature", self.temperature, 0.0, 100.0, "> 0 and at most 100")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 and at most 100, got {self.temperature!r}")
        num("mismatch", self.mismatch, 0.0, 1.0, "a fraction in [0, 1]")
        for name, lo, hi in (
            ("epochs", 1, 200),
            ("batch_size", 1, 1024),
            ("seed", 0, 2**31 - 1),
            ("few_per_class", 1, 50),
            ("train_voices", 2, 200),
            ("test_voices", 1, 100),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be a whole number in [{lo}, {hi}], got {v!r}")
        num("lr", self.lr, 1e-6, 1.0, "in [1e-6, 1]")
        if self.few_per_class > self.train_voices:
            raise ConfigError(
                f"few_per_class ({self.few_per_class}) cannot exceed the training voices ({self.train_voices})"
            )
        return self

    def resolved(self) -> CrossmodalConfig:
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CrossmodalConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


STUDENTS = ("crossmodal", "supervised", "few_labels")


@dataclass(eq=False)
class Data:
    """Everything a run needs, prepared once per (voices, seed, mismatch)."""

    train: Corpus
    test: Corpus
    pairs: PairedSet
    test_audio: Tensor
    test_digits: Tensor
    train_digits: Tensor  # for the supervised and few-label students only
    mismatched: np.ndarray


_corpora: OrderedDict = OrderedDict()  # (voices, seed) -> (Corpus, features): shared by runs and pages
_corpora_lock = threading.Lock()
MAX_CORPORA = 4


def corpus_with_features(voices: list[Voice], seed: int, progress=None) -> tuple[Corpus, Tensor]:
    """``build_corpus`` and its ``features``, kept in memory for the last few voice sets, so
    that every run and page of a server shares one copy (read-only: never modify them)."""
    key = (tuple(voices), seed)
    with _corpora_lock:
        if key in _corpora:
            _corpora.move_to_end(key)
            return _corpora[key]
    corpus = build_corpus(voices, seed, progress=progress)
    found = (corpus, features(corpus.waves))
    with _corpora_lock:
        _corpora[key] = found
        while len(_corpora) > MAX_CORPORA:
            _corpora.popitem(last=False)
    return found


def prepare(cfg: CrossmodalConfig, progress=None) -> Data:
    """Voices, clips (cached), features and pairs with mnist-mini training images."""
    tr_voices, te_voices = make_voices(cfg.train_voices, cfg.test_voices, cfg.seed)
    n_voices = len(tr_voices) + len(te_voices)
    train, train_x = corpus_with_features(tr_voices, cfg.seed, progress=_offset(progress, 0, n_voices))
    test, test_x = corpus_with_features(
        te_voices, cfg.seed + 1, progress=_offset(progress, len(tr_voices) * NUM_CLASSES, n_voices)
    )
    ds = data_mod.load("mnist-mini")
    pairs = make_pairs(train, ds.x_train, ds.y_train, cfg.mismatch, cfg.seed, audio=train_x)
    _, wrong = pair_images(train.digits, ds.y_train, cfg.mismatch, cfg.seed)
    return Data(
        train,
        test,
        pairs,
        test_x,
        torch.as_tensor(test.digits),
        torch.as_tensor(train.digits),
        wrong,
    )


def missing_clips(cfg: CrossmodalConfig) -> int:
    """How many of the config's clips are not cached yet (they need espeak-ng)."""
    tr, te = make_voices(cfg.train_voices, cfg.test_voices, cfg.seed)
    folder = paths.subdir("speech")
    return sum(not (folder / f"{_clip_key(v, d)}.npy").exists() for v in tr + te for d in range(NUM_CLASSES))


def _offset(progress, start, n_voices):
    if progress is None:
        return None
    return lambda done, total: progress(start + done, n_voices * NUM_CLASSES)


def get_image_teacher(progress=None):
    """The default mnist-mini image teacher (shipped or cached; trained on first use)."""
    return teachers.get("mnist-mini", progress=progress)


def teacher_soft_targets(teacher_model: nn.Module, images: Tensor, temperature: float) -> Tensor:
    """The image teacher's softened probabilities softmax(z / T) on each paired image."""
    logits = metrics.predict_logits(teacher_model, images)
    return losses.softmax_t(logits, temperature)


def crossmodal_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """Hinton KD with soft targets only: T^2 KL(p_T || softmax(s / T)), batch-averaged."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = (teacher_probs * (torch.log(teacher_probs.clamp_min(1e-30)) - log_p)).sum(1)
    return temperature**2 * kl.mean()


def _few_mask(digits: np.ndarray, voice_index: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k labelled clips per digit, each from a different (seeded) voice."""
    rng = np.random.default_rng([seed, 11])
    picked = []
    for d in range(NUM_CLASSES):
        idx = np.nonzero(digits == d)[0]
        picked += list(rng.choice(idx, size=min(k, len(idx)), replace=False))
    mask = np.zeros(len(digits), dtype=bool)
    mask[picked] = True
    return mask


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """A random shift in time (up to 8 frames) of each log-mel image."""
    shift = int(torch.randint(-8, 9, (1,), generator=gen))
    return torch.roll(x, shifts=shift, dims=3)


class CrossmodalRun:
    """One run: the cross-modal student, and beside it the supervised and few-label ones."""

    def __init__(self, config: CrossmodalConfig, device=None):
        self.config = config.validate()
        self.device = device or models.pick_device()
        self.students: dict[str, nn.Module] = {}
        self.teacher = None
        self.data: Data | None = None
        self.result: dict | None = None
        self.history: list[dict] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ evaluation
    def evaluate(self, name: str) -> tuple[float, Tensor]:
        m = self.students[name]
        logits = metrics.predict_logits(m, self.data.test_audio.to(self.device)).cpu()
        return metrics.accuracy(logits, self.data.test_digits), logits

    def predict(self, name: str, waves) -> Tensor:
        """Class probabilities of student ``name`` for clips (N, CLIP_SAMPLES) or one clip."""
        m = self.students[name].eval()
        x = features(np.atleast_2d(np.asarray(waves, dtype=np.float32))).to(self.device)
        with torch.no_grad():
            return F.softmax(m(x), dim=1).cpu()

    def _summary(self, status: str, message: str, t0: float, steps: int, total: int) -> dict:
        cfg, d = self.config, self.data
        out = {
            "status": status,
            "message": message,
            "config": cfg.to_dict(),
            "chance": CHANCE,
            "steps": steps,
            "total_steps": total,
            "history": list(self.history),
            "wall_seconds": time.perf_counter() - t0,
            "data": {
                "train_clips": len(d.train),
                "test_clips": len(d.test),
                "train_voices": [v.name for v in d.train.voices],
                "test_voices": [v.name for v in d.test.voices],
                "languages": list(LANGUAGES),
                "mismatched_pairs": int(d.mismatched.sum()),
                "sample_rate": SAMPLE_RATE,
            },
            "teacher": {
                "arch": self.teacher.arch,
                "dataset": "mnist-mini",
                "test_accuracy": self.teacher.test_accuracy,
                "source": getattr(self.teacher, "source", "trained"),
                "pair_agreement": self.pair_agreement,
            },
        }
        labels_used = {
            "crossmodal": 0,
            "supervised": len(d.train),
            "few_labels": int(self.few_mask.sum()),
        }
        for name in STUDENTS:
            acc, logits = self.evaluate(name)
            key = "student" if name == "crossmodal" else name
            out[key] = {
                "test_accuracy": acc,
                "per_class_accuracy": metrics.per_class_accuracy(logits, self.data.test_digits, NUM_CLASSES),
                "confusion": metrics.confusion(logits, self.data.test_digits, NUM_CLASSES),
                "audio_labels_used": labels_used[name],
                "params": models.count_params(self.students[name]),
            }
        return out

    # ------------------------------------------------------------ training
    def events(self, teacher_progress=None, data_progress=None, prepared: Data | None = None):
        """The run's events; ``prepared``: the data from :func:`prepare` (else prepared now)."""
        cfg = self.config
        t0 = time.perf_counter()
        train.set_threads()
        self.teacher = get_image_teacher(progress=teacher_progress)
        self.data = d = prepared if prepared is not None else prepare(cfg, progress=data_progress)
        dev = self.device
        # the cross-modal student's whole training set: sounds and the teacher's soft targets
        # on the paired images — built from a PairedSet, which carries no label
        soft = teacher_soft_targets(self.teacher.model, d.pairs.images, cfg.temperature).to(dev)
        soft_t1 = teacher_soft_targets(self.teacher.model, d.pairs.images, 1.0)
        # a reported fact (never trained on): how often the teacher's top class on the
        # paired image is the digit said in the clip, i.e. how right the targets are
        self.pair_agreement = float((soft_t1.argmax(1).cpu() == d.train_digits).float().mean())
        audio = d.pairs.audio.to(dev)
        labels = d.train_digits.to(dev)
        self.few_mask = _few_mask(d.train.digits, d.train.voice_index, cfg.few_per_class, cfg.seed)
        few_idx = torch.as_tensor(np.nonzero(self.few_mask)[0])
        opts, scheds = {}, {}
        n = len(audio)
        per_epoch = -(-n // cfg.batch_size)
        total = cfg.epochs * per_epoch
        for name in STUDENTS:
            torch.manual_seed(cfg.seed)  # the same initial weights for the three students
            self.students[name] = AudioCNN().to(dev)
            opts[name] = torch.optim.Adam(self.students[name].parameters(), lr=cfg.lr, weight_decay=1e-4)
            scheds[name] = torch.optim.lr_scheduler.OneCycleLR(opts[name], max_lr=cfg.lr, total_steps=total)
        gen = torch.Generator().manual_seed(cfg.seed)
        step, status, message = 0, "finished", "finished"
        try:
            yield {
                "kind": "start",
                "total_steps": total,
                "epochs": cfg.epochs,
                "students": list(STUDENTS),
                "teacher_acc": self.teacher.test_accuracy,
                "train_clips": n,
                "test_clips": len(d.test),
                "config": cfg.to_dict(),
            }
            if self._stop.is_set():
                raise InterruptedError
            for epoch in range(1, cfg.epochs + 1):
                for m in self.students.values():
                    m.train()
                perm = torch.randperm(n, generator=gen)
                for b in range(per_epoch):
                    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(dev)
                    few = few_idx[torch.randint(len(few_idx), (min(cfg.batch_size, len(few_idx)),), generator=gen)]
                    x = _augment(audio[idx], gen)
                    terms = {
                        "crossmodal": crossmodal_loss(self.students["crossmodal"](x), soft[idx], cfg.temperature),
                        "supervised": F.cross_entropy(self.students["supervised"](x), labels[idx]),
                        "few_labels": F.cross_entropy(
                            self.students["few_labels"](_augment(audio[few.to(dev)], gen)), labels[few.to(dev)]
                        ),
                    }
                    for name, loss in terms.items():
                        opts[name].zero_grad(set_to_none=True)
                        loss.backward()
                        opts[name].step()
                        scheds[name].step()
                    step += 1
                    vals = {k: float(v.detach()) for k, v in terms.items()}
                    yield {
                        "kind": "step",
                        "step": step,
                        "epoch": epoch,
                        "losses": vals,
                        "loss": vals["crossmodal"],
                        "baseline_loss": vals["supervised"],
                    }
                    if self._stop.is_set():
                        raise InterruptedError
                ev = {"kind": "epoch", "epoch": epoch}
                for name in STUDENTS:
                    ev[f"{name}_acc"] = self.evaluate(name)[0]
                ev["student_acc"] = ev["crossmodal_acc"]
                self.history.append({k: v for k, v in ev.items() if k != "kind"})
                yield ev
        except InterruptedError:
            status, message = "stopped", f"stopped after {step} of {total} steps"
        except GeneratorExit:  # the consumer closed the stream (the job's Stop): keep what was done
            for m in self.students.values():
                m.eval()
            self.result = self._summary("stopped", f"stopped after {step} of {total} steps", t0, step, total)
            raise
        for m in self.students.values():
            m.eval()
        self.result = self._summary(status, message, t0, step, total)
        yield {"kind": "end", "status": status, "message": message, "result": self.result}


def run(config: CrossmodalConfig, on_event=None) -> dict:
    """Run to the end; returns the result dict."""
    r = CrossmodalRun(config)
    for ev in r.events():
        if on_event is not None:
            on_event(ev)
    return r.result


# ---------------------------------------------------------------- background jobs


class JobSpec:
    """What ``kd_core.jobs.JobManager`` runs for a cross-modal job. The manager asks a config
    for ``resolved().validate()`` and its ``method_obj.pipeline``; this answers with the
    run's event stream. Other attributes are the config's (``spec.epochs``, ...)."""

    def __init__(self, config: CrossmodalConfig):
        self.config = config.validate()
        self.run = CrossmodalRun(config)
        self.method_obj = SimpleNamespace(name="crossmodal", pipeline=_pipeline)

    def resolved(self) -> JobSpec:
        return self

    def validate(self) -> JobSpec:
        self.config.validate()
        return self

    def to_dict(self) -> dict:
        return self.config.to_dict()

    def __getattr__(self, name):
        if name == "config":
            raise AttributeError(name)
        return getattr(self.config, name)


def _pipeline(spec: JobSpec, teacher_progress=None):
    return spec.run.events(teacher_progress=teacher_progress)


def _finish(job) -> None:
    """``on_end``: a stopped job keeps what was trained (the models and their results)."""
    r = job.config.run
    job.trainer = r
    if job.result is None and r.result is not None:
        job.result = r.result


def submit(manager, config: CrossmodalConfig, owner: str = ""):
    """Start a cross-modal run as a background job of ``manager`` (a ``kd_core.jobs.JobManager``):
    events feed the job's steps and epochs, Stop keeps what was done, and once it has ended
    ``job.trainer`` is the :class:`CrossmodalRun` (its ``students`` and ``data``)."""
    return manager.submit(JobSpec(config), owner=owner, on_end=_finish)


# ---------------------------------------------------------------- command line


def add_cli_args(p, number, whole) -> None:
    """``python -m kd_core crossmodal train`` options (``number``/``whole``: the CLI's parsers)."""
    d = CrossmodalConfig()
    p.add_argument(
        "--temperature", "-T", type=number("temperature"), default=d.temperature, help="KD temperature T > 0"
    )
    p.add_argument(
        "--mismatch",
        type=number("mismatch"),
        default=d.mismatch,
        help="fraction of pairs whose image shows another digit, in [0, 1]",
    )
    p.add_argument("--epochs", type=whole("epochs"), default=d.epochs)
    p.add_argument("--lr", type=number("lr"), default=d.lr, help="learning rate (Adam, one-cycle)")
    p.add_argument("--batch-size", type=whole("batch-size"), default=d.batch_size)
    p.add_argument("--seed", type=whole("seed"), default=d.seed)
    p.add_argument(
        "--few-per-class", type=whole("few-per-class"), default=d.few_per_class, help="labelled clips per digit"
    )
    p.add_argument("--train-voices", type=whole("train-voices"), default=d.train_voices)
    p.add_argument("--test-voices", type=whole("test-voices"), default=d.test_voices)
    p.add_argument("--json", metavar="FILE", help="write the run's results as JSON")


def cli_train(a) -> int:
    import json
    import sys

    from tqdm import tqdm

    cfg = CrossmodalConfig(
        temperature=a.temperature,
        mismatch=a.mismatch,
        epochs=a.epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        few_per_class=a.few_per_class,
        train_voices=a.train_voices,
        test_voices=a.test_voices,
    ).validate()
    missing = missing_clips(cfg)
    if missing:
        require_espeak()  # before anything else: one line saying how to install it
    bars: dict = {}

    def bar(name, total, desc, unit):
        if name not in bars:
            bars[name] = tqdm(total=total, desc=desc, file=sys.stderr, unit=unit)
        return bars[name]

    def data_progress(done, total):
        bar("data", total, "spoken digits (espeak-ng, cached)", "clip").update(1)

    def teacher_progress(epoch, epochs, acc):
        b = bar("teacher", epochs, "image teacher", "epoch")
        b.set_postfix(acc=f"{acc:.3f}")
        b.update(1)

    r = CrossmodalRun(cfg)
    for ev in r.events(teacher_progress=teacher_progress, data_progress=data_progress if missing else None):
        if ev["kind"] == "start":
            for b in bars.values():
                b.close()
            bars.clear()
            bar("train", ev["total_steps"], "audio students", "step")
        elif ev["kind"] == "step":
            bars["train"].update(1)
        elif ev["kind"] == "epoch":
            bars["train"].set_postfix(
                {"crossmodal": f"{ev['crossmodal_acc']:.3f}", "supervised": f"{ev['supervised_acc']:.3f}"}
            )
        elif ev["kind"] == "end":
            for b in bars.values():
                b.close()
    res = r.result
    print(results_table(res))
    if a.json:
        paths.atomic_write_text(a.json, json.dumps(res, indent=1))
    return 0


def results_table(res: dict) -> str:
    d = res["data"]
    rows = [("audio student", "trained on", "audio labels", "test acc (unseen voices)")]
    for key, what in (
        ("student", f"image teacher's soft targets at T={res['config']['temperature']:g}"),
        ("supervised", "every clip's label"),
        ("few_labels", f"{res['config']['few_per_class']} labelled clips per digit"),
    ):
        r = res[key]
        rows.append(
            (
                "cross-modal" if key == "student" else key.replace("_", " "),
                what,
                str(r["audio_labels_used"]),
                f"{100 * r['test_accuracy']:.1f}%",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(
        f"chance {100 * res['chance']:.0f}%; {d['train_clips']} training clips ({len(d['train_voices'])} voices, "
        f"{d['mismatched_pairs']} mismatched pairs), {d['test_clips']} test clips ({len(d['test_voices'])} unseen voices); "
        f"image teacher {res['teacher']['arch']} {100 * res['teacher']['test_accuracy']:.1f}% on MNIST"
    )
    if res["status"] != "finished":
        lines.append(f"run {res['status']}: {res['message']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures (English; the app translates)

STUDENT_NAMES = {
    "crossmodal": "cross-modal student (no audio labels)",
    "supervised": "supervised student (all audio labels)",
    "few_labels": "few-labels student",
}
STUDENT_COLOURS = {"crossmodal": "#D55E00", "supervised": "#0072B2", "few_labels": "#999999"}


def spectrogram_figure(wave, title: str | None = None, height: int = 300):
    """The log-mel spectrogram of one clip: time across, mel band (with its centre in Hz) up."""
    import plotly.graph_objects as go

    spec = log_mel(np.asarray(wave, dtype=np.float32)).numpy()
    t = np.arange(spec.shape[1]) * HOP / SAMPLE_RATE
    centres = mel_centres_hz()
    fig = go.Figure(
        go.Heatmap(
            z=spec.tolist(),
            x=t.tolist(),
            y=list(range(spec.shape[0])),
            colorscale=viz.SEQUENTIAL,
            showscale=False,
            customdata=np.repeat(centres[:, None], spec.shape[1], 1).round().tolist(),
            hovertemplate="%{x:.2f} s, band %{y} (%{customdata} Hz): %{z:.1f}<extra></extra>",
        )
    )
    ticks = [0, 10, 20, 30, N_MELS - 1]
    fig.update_xaxes(title="time (s)")
    fig.update_yaxes(title="mel band (Hz)", tickvals=ticks, ticktext=[f"{centres[i]:.0f}" for i in ticks])
    fig = viz.style(fig, title, height)
    fig.update_layout(margin=dict(l=70, r=10, t=50 if title else 10, b=50))
    return fig


def accuracy_figure(epochs: list[dict], total_epochs: int | None = None, title: str | None = None):
    """Test accuracy on the unseen voices per epoch, for the three students, and chance."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = [e["epoch"] for e in epochs]
    for name in STUDENTS:
        fig.add_scatter(
            x=x,
            y=[e.get(f"{name}_acc") for e in epochs],
            mode="lines+markers",
            name=STUDENT_NAMES[name],
            line=dict(color=STUDENT_COLOURS[name], width=4 if name == "crossmodal" else 3),
        )
    fig.add_hline(y=CHANCE, line_dash="dash", line_color="#555555", annotation_text="chance")
    fig.update_xaxes(
        title="epoch",
        range=[0.5, (total_epochs or max(x, default=1)) + 0.5],
        dtick=1 if (total_epochs or 1) <= 20 else 5,
    )
    fig.update_yaxes(title="test accuracy (unseen voices)", tickformat=".0%", range=[0, 1.02])
    return _legend_below(viz.style(fig, title, 460))


def loss_figure(steps: list[dict], title: str | None = None, smooth: int = 5):
    """The three students' training losses over steps (moving average, log axis)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x = [s["step"] for s in steps]
    for name in STUDENTS:
        y = [s["losses"].get(name, float("nan")) for s in steps]
        if smooth > 1:
            y = [float(np.nanmean(y[max(0, i - smooth + 1) : i + 1])) for i in range(len(y))]
        fig.add_scatter(
            x=x, y=y, mode="lines", name=STUDENT_NAMES[name], line=dict(color=STUDENT_COLOURS[name], width=3)
        )
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss", type="log")
    return _legend_below(viz.style(fig, title, 460))


def _legend_below(fig):
    """Room under the plot for the three students' long names, one per line."""
    fig.update_layout(margin=dict(b=170), legend=dict(orientation="v", y=-0.25, yanchor="top"))
    return fig


def confusion_figure(confusion: list[list[int]], title: str | None = None):
    return viz.heatmap(
        np.asarray(confusion),
        list(range(NUM_CLASSES)),
        list(range(NUM_CLASSES)),
        title,
        text_fmt="d",
        xtitle="predicted digit",
        ytitle="spoken digit",
        height=480,
    )

"""Audio as MCL reads it: mono, 16 kHz, a 128-bin Kaldi log-mel fbank (25 ms window, 10 ms shift),
normalised as (x - 15.41663) / (2 * 6.55582), cut into chunks of 512
frames (about 10.24 s): 2 chunks for training, all for evaluation."""
from __future__ import annotations

import io
import random

import numpy as np

RATE = 16_000
BINS = 128
MEAN, STD = 15.41663, 6.55582
CHUNK = 512


class AudioError(ValueError):
    def __init__(self, message: str, reason: str = "audio_undecodable"):
        super().__init__(message)
        self.reason = reason


def decode_mono_16k(data: bytes, min_rate: int = 0) -> np.ndarray:
    """Mono float32 at 16 kHz. Clips recorded below `min_rate` are refused rather than upsampled
    (upsampling cannot restore the missing band)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure is this clip's reject
        raise AudioError(f"undecodable audio: {type(err).__name__}: {err}") from None
    if len(wav) == 0:
        raise AudioError("zero-length audio", "audio_empty")
    if rate < min_rate:
        raise AudioError(f"recorded at {rate} Hz, below the {min_rate} Hz minimum", "audio_rate_too_low")
    mono = wav.mean(axis=1)
    if rate != RATE:
        g = np.gcd(int(rate), RATE)
        mono = resample_poly(mono, RATE // g, int(rate) // g).astype(np.float32)
    return mono


def mel_banks(num_bins: int, fft_size: int, rate: int, low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel filters over the fft_size/2 + 1 power bins (the Nyquist bin gets
    no weight, as in Kaldi and torchaudio). Empty filters are allowed, as torchaudio allows them."""
    high = high if high > 0 else rate / 2 + high
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (num_bins + 1)
    left = lo + np.arange(num_bins)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    m = mel(np.arange(fft_size // 2) * rate / fft_size)[None, :]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


def fbank(wav: np.ndarray, num_bins: int = BINS, rate: int = RATE) -> np.ndarray:
    """(frames, num_bins) Kaldi log-mel fbank of mono samples in [-1, 1], computed as Kaldi and
    torchaudio.compliance.kaldi.fbank do with BEATs' settings (samples x 2^15, 25 ms povey
    window, 10 ms shift, snip edges, DC removed, pre-emphasis 0.97, power spectrum, no dither,
    low 20 Hz). numpy, because kaldi-native-fbank refuses 128 bins at 16 kHz (one filter would
    be empty) where torchaudio, which the originals used, accepts them; it is checked against
    kaldi-native-fbank where that accepts the settings (tests)."""
    x = np.asarray(wav, np.float64) * 32768.0
    size, shift = int(rate * 0.025), int(rate * 0.010)
    if len(x) < size:
        raise AudioError(f"audio of {len(x)} samples is shorter than one 25 ms frame", "audio_too_short")
    n = 1 + (len(x) - size) // shift
    frames = np.lib.stride_tricks.sliding_window_view(x, size)[::shift][:n].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] -= 0.97 * frames[:, 0]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))) ** 0.85
    fft_size = 1 << (size - 1).bit_length()
    power = np.abs(np.fft.rfft(frames * window, n=fft_size)) ** 2
    mel = power @ mel_banks(num_bins, fft_size, rate).T.astype(np.float64)
    return np.log(np.maximum(mel, np.finfo(np.float32).eps)).astype(np.float32)


def normalise(feats: np.ndarray) -> np.ndarray:
    return (feats - MEAN) / (2 * STD)


def chunks(feats: np.ndarray, train: bool, rng: random.Random, size: int = CHUNK, train_chunks: int = 2) -> np.ndarray:
    """(k, size, bins): consecutive 512-frame chunks, the last zero-padded; training keeps
    `train_chunks` of them chosen at random (repeating when there are fewer)."""
    n = max(1, -(-len(feats) // size))
    padded = np.zeros((n * size, feats.shape[1]), np.float32)
    padded[:len(feats)] = feats
    all_chunks = padded.reshape(n, size, feats.shape[1])
    if not train:
        return all_chunks
    pick = sorted(rng.sample(range(n), train_chunks)) if n >= train_chunks else [i % n for i in range(train_chunks)]
    return all_chunks[pick]


def prepare(data: bytes, train: bool, seed: int, train_chunks: int = 2, min_rate: int = 0) -> np.ndarray:
    return features(decode_mono_16k(data, min_rate), train, seed, train_chunks)


def features(wav: np.ndarray, train: bool, seed: int, train_chunks: int = 2) -> np.ndarray:
    """(k, 512, 128) normalised fbank chunks of mono 16 kHz samples."""
    return chunks(normalise(fbank(wav)), train, random.Random(seed), train_chunks=train_chunks)

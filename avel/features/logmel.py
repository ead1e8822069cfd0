"""VGGish log-mel front end: waveform -> one 96 x 64 log-mel example per 1-s segment.

Parameters are VGGish's published ones (avel.features.audio): 25 ms periodic-Hann windows every
10 ms, 512-point FFT magnitudes, 64 HTK-mel triangular bands from 125 to 7500 Hz (DC bin zeroed),
log(mel + 0.01). Example t is the first 96 frames (0.96 s) of segment t: computing the log-mel of
the whole waveform and slicing frames 100 t .. 100 t + 95 gives exactly what VGGish computes on
the segment's own 16000 samples (the last of those frames ends at sample 15600 of the segment).
"""

from __future__ import annotations

import numpy as np

from avel.features.audio import (EXAMPLE_FRAMES, FFT_SIZE, FRAMES_PER_SECOND, LOG_OFFSET, MEL_BREAK_HZ,
                                 MEL_HIGH_Q, MEL_MAX_HZ, MEL_MIN_HZ, NUM_MEL_BINS, NUM_SPECTROGRAM_BINS,
                                 SAMPLE_RATE, SAMPLES_PER_SEGMENT, STFT_HOP_SAMPLES, STFT_WINDOW_SAMPLES)


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return MEL_HIGH_Q * np.log1p(np.asarray(hz, dtype=np.float64) / MEL_BREAK_HZ)


def mel_matrix() -> np.ndarray:
    """(257, 64) float64 weights from FFT magnitude bins to mel bands (VGGish's spectrogram_to_mel_matrix)."""
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, NUM_SPECTROGRAM_BINS))[:, None]  # (257, 1)
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
    lower, center, upper = edges[:-2][None], edges[1:-1][None], edges[2:][None]  # (1, 64) each
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin contributes to no band
    return weights


def periodic_hann(n: int) -> np.ndarray:
    """(n,) periodic Hann window 0.5 - 0.5 cos(2 pi k / n) (as VGGish, not numpy's symmetric one)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """(frames, 64) float64 log-mel spectrogram of a mono 16 kHz waveform (no padding at the ends)."""
    wave = np.asarray(waveform, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform (n,), got shape {wave.shape}")
    num_frames = 1 + (len(wave) - STFT_WINDOW_SAMPLES) // STFT_HOP_SAMPLES
    if num_frames < 1:
        return np.zeros((0, NUM_MEL_BINS))
    frames = np.lib.stride_tricks.sliding_window_view(wave, STFT_WINDOW_SAMPLES)[::STFT_HOP_SAMPLES][:num_frames]
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann(STFT_WINDOW_SAMPLES), FFT_SIZE))  # (frames, 257)
    return np.log(magnitude @ mel_matrix() + LOG_OFFSET)


def segment_examples(waveform: np.ndarray, num_segments: int) -> np.ndarray:
    """(T, 96, 64) float32: one VGGish example per whole second of a mono 16 kHz waveform.

    The waveform is zero-padded or cut to T seconds first.
    """
    wave = np.zeros(num_segments * SAMPLES_PER_SEGMENT, np.float64)
    n = min(len(waveform), len(wave))
    wave[:n] = waveform[:n]
    spec = log_mel(wave)  # (100 T - 2, 64)
    starts = np.arange(num_segments) * FRAMES_PER_SECOND
    return np.stack([spec[s:s + EXAMPLE_FRAMES] for s in starts]).astype(np.float32) if num_segments else \
        np.zeros((0, EXAMPLE_FRAMES, NUM_MEL_BINS), np.float32)

"""Audio constants: VGGish's published input parameters (Hershey et al., ICASSP 2017; vggish_params.py).

Every number the audio path uses lives here, with its unit, so the log-mel front end, the decoder
and the tests agree on one definition.
"""

from __future__ import annotations

SAMPLE_RATE = 16000  # Hz: VGGish input rate; decoded audio is resampled to this, mono
SEGMENT_SECONDS = 1  # s: one AVE segment (one label, one feature vector)
SAMPLES_PER_SEGMENT = SAMPLE_RATE * SEGMENT_SECONDS  # samples in one segment

STFT_WINDOW_SECONDS = 0.025  # s: analysis window (periodic Hann)
STFT_HOP_SECONDS = 0.010  # s: hop between analysis windows
STFT_WINDOW_SAMPLES = round(SAMPLE_RATE * STFT_WINDOW_SECONDS)  # 400 samples
STFT_HOP_SAMPLES = round(SAMPLE_RATE * STFT_HOP_SECONDS)  # 160 samples
FFT_SIZE = 1 << (STFT_WINDOW_SAMPLES - 1).bit_length()  # 512 points: next power of two >= window
NUM_SPECTROGRAM_BINS = FFT_SIZE // 2 + 1  # 257 one-sided magnitude bins

NUM_MEL_BINS = 64  # mel bands
MEL_MIN_HZ = 125.0  # Hz: lower edge of the lowest band
MEL_MAX_HZ = 7500.0  # Hz: upper edge of the highest band
MEL_BREAK_HZ = 700.0  # Hz: HTK mel scale, mel = 1127 ln(1 + f / 700)
MEL_HIGH_Q = 1127.0  # mel units: HTK mel scale factor
LOG_OFFSET = 0.01  # added to mel energies before the log (avoids log 0)

FRAMES_PER_SECOND = round(1.0 / STFT_HOP_SECONDS)  # 100 log-mel frames per second of audio
EXAMPLE_FRAMES = 96  # log-mel frames per VGGish example (0.96 s); one example per 1-s segment
EMBEDDING_SIZE = 128  # VGGish output size (raw, no PCA: as in the released AVE features)

"""avel: audio-visual event localization in videos (Tian et al., ECCV 2018)."""

__version__ = "0.1.0"

"""VGGish (Hershey et al. 2017) in the state-dict layout of the common PyTorch port
(harritaylor/torchvggish): `features.N.*` (4 conv blocks) and `embeddings.{0,2,4}.*` (FC 4096-4096-128).

Input: log-mel examples (B, 96, 64) (time x mel). Output: raw 128-d embeddings after the final
ReLU, without the PCA / quantisation post-processing: what the released AVE audio features are.
"""

from __future__ import annotations

import torch
from torch import nn

from avel.features.audio import EMBEDDING_SIZE, EXAMPLE_FRAMES, NUM_MEL_BINS
from avel.features.vgg19 import make_layers

VGGISH_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
VGGISH_FC = 4096  # width of the two hidden fully connected layers
VGGISH_POOL_CHANNELS = 512  # channels after the last pool
VGGISH_POOL_GRID = (EXAMPLE_FRAMES // 16, NUM_MEL_BINS // 16)  # (6, 4) after four 2x2 pools


class VGGish(nn.Module):
    """(B, 96, 64) log-mel -> (B, 128) embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.features = make_layers(VGGISH_CFG, in_channels=1)
        flat = VGGISH_POOL_CHANNELS * VGGISH_POOL_GRID[0] * VGGISH_POOL_GRID[1]  # 12288
        self.embeddings = nn.Sequential(
            nn.Linear(flat, VGGISH_FC), nn.ReLU(inplace=True),
            nn.Linear(VGGISH_FC, VGGISH_FC), nn.ReLU(inplace=True),
            nn.Linear(VGGISH_FC, EMBEDDING_SIZE), nn.ReLU(inplace=True))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        # channels-last (NHWC): oneDNN convolutions; in bf16 the NCHW path falls back to a slow generic kernel
        x = self.features(examples.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (B, 6 * 4 * 512): TensorFlow's channels-last flatten order
        return self.embeddings(x)  # (B, 128)

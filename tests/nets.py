"""Small networks shared by several test files."""
import torch
from torch import nn


class TinyViT(nn.Module):
    """A tiny ViT: ``patch`` px patches of a square ``image``, one class token, learned position embeddings (fixed
    size), two transformer blocks; the head reads the class token only."""

    def __init__(self, d: int = 16, patch: int = 4, image: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
                                      for _ in range(2)])
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.blocks(t)[:, 0])

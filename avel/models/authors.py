"""The authors' released networks, computed exactly as their code does (for imported checkpoints).

Three registered variants hold the weights of the authors' trained PyTorch files (see avel.foreign):

  authors-A+V-att    `att_Net` of their models.py (A+V-att, supervised)
  authors-W-A+V-att  `att_Net` of their models_weakly.py (W-A+V-att: the same layers; trained through a
                     max-pool over time)
  authors-DMRN       `TBMRF_Net` of their models_fusion.py (DMRN, fine-tuned from A+V-att)

Parameter names are the authors' attribute names (lstm_audio, affine_video, L1, ...), so an imported
state dict loads one to one. Their maths differs from avel's `A+V-att` (which follows the paper) in:

- Attention. With S = B*T seconds, k = 49 regions, V (S, k, 512):
      h_v = relu(affine_video(V))                  (S, k, d)
      g   = affine_g(relu(affine_audio(a)))        (S, 49)
      x[s, i, j] = affine_v(h_v)[s, i, j] + g[s, i]   region i, hidden unit j
      z = affine_h(tanh(x))  (S, k);  alpha = softmax_i(z);  c = sum_i alpha_i V_i
  The audio term is indexed by the *region* and broadcast over the 49 hidden units, while the paper's
  eq. 4 adds the same audio vector (over hidden units) to every region. It needs as many hidden units
  as regions (49 = 7x7).
- Heads. A+V-att: relu(cat(lstm_a, lstm_v)) -> L1 (64) -> relu -> L2 (C) -> softmax.
  DMRN: `nb_block` residual blocks on (lstm_a, lstm_v), then L2 -> softmax, no L1:
      m = (U_v(v) + U_a(a)) / 2;  v, a = tanh(a + m), tanh(v + m)     (the residuals cross over)
      out = (v + a) / 2                                                  U_x = Linear, tanh, Linear
- Weak. Per-second scores L2(...) (B, T, C); the video prediction is softmax(max_t scores).

avel's forward contract: `logits` are the authors' pre-softmax per-second scores (L2's output), so
softmax(logits) is exactly the per-second output of their supervised models, and argmax(logits) is
the per-second prediction of all three (their weak test script takes argmax of the scores). The
authors' own return values are available through `authors_output(audio, visual)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avel.errors import AvelError
from avel.models.registry import ModelConfig, ModelOutput, register_model

HEAD_HIDDEN = 64  # the authors' L1 width (A+V-att)


def _check_config(cfg: ModelConfig, own: tuple[str, ...] = ()) -> None:
    """The authors' networks are bidirectional, without dropout or a fusion choice: refuse other settings
    (`own`: fields this network does read)."""
    default = ModelConfig()
    fixed = [n for n in ("bidirectional", "dropout", "fusion", "fusion_stage", "fusion_blocks") if n not in own]
    problems = [f"{name}={getattr(cfg, name)!r}" for name in fixed if getattr(cfg, name) != getattr(default, name)]
    if problems:
        raise AvelError(f"{cfg.name} is the authors' fixed network; it does not take {', '.join(problems)}")


class AuthorsNet(nn.Module):
    """Attention, two BiLSTMs, and (subclasses) a head: the part the three networks share."""

    own_fields: tuple[str, ...] = ()  # ModelConfig fields beyond the shared sizes that this network reads

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_config(cfg, self.own_fields)
        k = cfg.visual_grid ** 2  # regions; also the attention's hidden width (the authors' 49)
        self.lstm_audio = nn.LSTM(cfg.audio_dim, cfg.hidden, 1, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(cfg.visual_dim, cfg.hidden, 1, batch_first=True, bidirectional=True)
        self.affine_audio = nn.Linear(cfg.audio_dim, cfg.attention_dim)
        self.affine_video = nn.Linear(cfg.visual_dim, cfg.attention_dim)
        self.affine_v = nn.Linear(cfg.attention_dim, k, bias=False)
        self.affine_g = nn.Linear(cfg.attention_dim, k, bias=False)
        self.affine_h = nn.Linear(k, 1, bias=False)
        for lin in (self.affine_v, self.affine_g, self.affine_h, self.affine_audio, self.affine_video):
            nn.init.xavier_uniform_(lin.weight)

    def attend(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, T, Da), visual (B, T, g, g, Dv) -> attended visual (B, T, Dv), weights (B, T, k)."""
        B, T = audio.shape[:2]
        V = visual.reshape(B * T, -1, visual.shape[-1])  # (S, k, Dv)
        h_v = F.relu(self.affine_video(V))  # (S, k, d)
        g = self.affine_g(F.relu(self.affine_audio(audio.reshape(B * T, -1))))  # (S, 49)
        x = self.affine_v(h_v) + g.unsqueeze(2)  # (S, k regions, 49 hidden): g[s, i] added to region i
        alpha = torch.softmax(self.affine_h(torch.tanh(x)).squeeze(2), dim=-1)  # (S, k)
        context = torch.bmm(alpha.unsqueeze(1), V).squeeze(1)  # (S, Dv)
        return context.view(B, T, -1), alpha.view(B, T, -1)

    def temporal(self, audio: torch.Tensor, attended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BiLSTMs from zero states: (B, T, 2h) for audio and for the attended visual features."""
        return self.lstm_audio(audio)[0], self.lstm_video(attended)[0]

    def scores(self, lstm_a: torch.Tensor, lstm_v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, **_: torch.Tensor) -> ModelOutput:
        attended, alpha = self.attend(audio, visual)
        logits = self.scores(*self.temporal(audio, attended))  # (B, T, C), pre-softmax
        return ModelOutput(logits=logits, attention=alpha)

    def authors_output(self, audio: torch.Tensor, visual: torch.Tensor):
        """What the authors' forward returns: per-second softmax (B, T, C)."""
        return torch.softmax(self(audio, visual).logits, dim=-1)


class AttNet(AuthorsNet):
    """models.py `att_Net`: concatenated BiLSTM outputs -> ReLU, L1, ReLU, L2."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.L1 = nn.Linear(cfg.hidden * 4, HEAD_HIDDEN)
        self.L2 = nn.Linear(HEAD_HIDDEN, cfg.num_classes)
        nn.init.xavier_uniform_(self.L1.weight)
        nn.init.xavier_uniform_(self.L2.weight)

    def scores(self, lstm_a: torch.Tensor, lstm_v: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.L1(F.relu(torch.cat((lstm_a, lstm_v), dim=-1))))  # (B, T, 64)
        return self.L2(hidden)  # (B, T, C)


class WeakAttNet(AttNet):
    """models_weakly.py `att_Net`: the same layers; the video prediction max-pools the scores over time."""

    def authors_output(self, audio: torch.Tensor, visual: torch.Tensor):
        """(video-level softmax of the per-class maximum over time (B, C), per-second scores (B, T, C))."""
        score = self(audio, visual).logits
        return torch.softmax(score.max(dim=1).values, dim=-1), score


class DMRNNet(AuthorsNet):
    """models_fusion.py `TBMRF_Net`: `cfg.fusion_blocks` (their nb_block, 1 in DMRN.pt) dual residual
    blocks on the BiLSTM outputs, then L2."""

    own_fields = ("fusion_blocks",)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        width = cfg.hidden * 2
        self.blocks = cfg.fusion_blocks
        if self.blocks < 1:
            raise AvelError(f"{cfg.name}: fusion_blocks must be >= 1, got {self.blocks}")
        self.U_v = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        self.U_a = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        self.L2 = nn.Linear(width, cfg.num_classes)
        nn.init.xavier_uniform_(self.L2.weight)

    def scores(self, lstm_a: torch.Tensor, lstm_v: torch.Tensor) -> torch.Tensor:
        a, v = lstm_a, lstm_v
        for _ in range(self.blocks):
            merged = (self.U_v(v) + self.U_a(a)) * 0.5
            v, a = torch.tanh(a + merged), torch.tanh(v + merged)  # the authors cross the residuals over
        return self.L2((v + a) * 0.5)  # (B, T, C)


AUTHORS_MODELS: dict[str, tuple[type[AuthorsNet], str]] = {
    "authors-A+V-att": (AttNet, "the authors' released A+V-att network (models.py att_Net), exact forward pass"),
    "authors-W-A+V-att": (WeakAttNet, "the authors' released W-A+V-att network (models_weakly.py att_Net)"),
    "authors-DMRN": (DMRNNet, "the authors' released DMRN network (models_fusion.py TBMRF_Net)"),
}


def _register(name: str, cls: type[AuthorsNet], description: str) -> None:
    register_model(name, inputs=("audio", "visual"), description=description)(lambda cfg: cls(cfg))


for _name, (_cls, _desc) in AUTHORS_MODELS.items():
    _register(_name, _cls, _desc)

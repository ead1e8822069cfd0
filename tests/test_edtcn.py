"""ED-TCN: its building blocks by hand, the whole network against a numpy re-implementation, any T."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avel.models.edtcn import EDTCN, channel_norm, pool_time, upsample_time
from avel.models.registry import ModelConfig, create_model, list_models


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered():
    assert "ED-TCN" in list_models()


def test_pool_rounds_up_and_upsample_inverts_the_windows():
    x = torch.tensor([[[1.0, 3.0, 2.0, 5.0, 4.0]]])
    pooled = pool_time(x)
    assert pooled.tolist() == [[[3.0, 5.0, 4.0]]]
    assert upsample_time(pooled, 5).tolist() == [[[3.0, 3.0, 5.0, 5.0, 4.0]]]
    assert pool_time(torch.tensor([[[7.0]]])).tolist() == [[[7.0]]]  # T = 1 survives


def test_channel_norm_divides_each_step_by_its_largest_magnitude():
    x = torch.tensor([[[-4.0, 1.0], [2.0, 0.5]]])  # (B=1, C=2, T=2)
    out = channel_norm(x)
    assert torch.allclose(out, torch.tensor([[[-4 / 4.00001, 1 / 1.00001], [2 / 4.00001, 0.5 / 1.00001]]]))


def _np_block(x: np.ndarray, conv: torch.nn.Conv1d) -> np.ndarray:
    """'same' conv -> ReLU -> channel norm, in numpy; x: (C, T)."""
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()  # (O, C, K), (O,)
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (k // 2, k // 2)))
    y = np.stack([np.einsum("ock,ck->o", w, xp[:, t : t + k]) for t in range(x.shape[1])], axis=1) + b[:, None]
    y = np.maximum(y, 0)
    return y / (np.abs(y).max(axis=0, keepdims=True) + 1e-5)


def _np_edtcn(model: EDTCN, visual: np.ndarray) -> np.ndarray:
    """Independent forward pass for one video: visual (T, H, W, C) -> logits (T, classes)."""
    x = visual.mean(axis=(1, 2)).T  # (C, T)
    lengths = []
    for block in model.encoder:
        x = _np_block(x, block.conv)
        lengths.append(x.shape[1])
        t_out = -(-x.shape[1] // 2)
        x = np.stack([x[:, 2 * j : 2 * j + 2].max(axis=1) for j in range(t_out)], axis=1)
    for block, length in zip(model.decoder, reversed(lengths)):
        x = _np_block(np.repeat(x, 2, axis=1)[:, :length], block.conv)
    w, b = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    return x.T @ w.T + b


@pytest.mark.parametrize("T", [1, 2, 5, 10])
def test_matches_numpy_reimplementation(T: int):
    torch.manual_seed(T)
    model = EDTCN(in_dim=6, num_classes=4, nodes=(3, 5), conv_len=3, dropout=0.3).eval()
    visual = torch.randn(2, T, 2, 2, 6)
    out = model(None, visual).logits
    assert out.shape == (2, T, 4)
    for i in range(2):
        assert np.allclose(out[i].detach().numpy(), _np_edtcn(model, visual[i].numpy()), atol=1e-5)


def test_pooling_schedule_for_ten_seconds():
    model = create_model(ModelConfig(name="ED-TCN"))
    seen: list[tuple[str, int]] = []
    for name, block in [*(("enc", b) for b in model.encoder), *(("dec", b) for b in model.decoder)]:
        block.register_forward_hook(lambda m, i, o, name=name: seen.append((name, o.shape[-1])))
    model(torch.randn(1, 10, 128), torch.randn(1, 10, 7, 7, 512))
    assert seen == [("enc", 10), ("enc", 5), ("dec", 5), ("dec", 10)]
    assert [b.conv.out_channels for b in model.encoder] == [64, 96]
    assert [b.conv.out_channels for b in model.decoder] == [96, 64]


@pytest.mark.parametrize("T", [1, 3, 10, 16])
def test_any_length_forward_backward(T: int):
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="ED-TCN", extra={"edtcn_conv_len": 3}))
    out = model(torch.randn(2, T, 128), torch.randn(2, T, 7, 7, 512))
    assert out.logits.shape == (2, T, 29) and out.attention is None
    out.logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_learns_a_per_second_labelling():
    """It must be able to fit a temporal labelling: class = which of 3 visual prototypes is on."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(3, 32, generator=g)
    labels = torch.randint(0, 3, (8, 10), generator=g)
    visual = protos[labels] + 0.3 * torch.randn(8, 10, 32, generator=g)  # (8, 10, 32) pooled
    torch.manual_seed(0)
    model = EDTCN(in_dim=32, num_classes=3, nodes=(16, 24), conv_len=3, dropout=0.0)
    for _ in range(150):  # plain gradient descent (torch.optim's first step imports dynamo: ~2 s)
        loss = torch.nn.functional.cross_entropy(model(None, visual).logits.reshape(-1, 3), labels.reshape(-1))
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    acc = (model(None, visual).logits.argmax(-1) == labels).float().mean().item()
    assert acc > 0.9


def test_keras_initialisation_and_dropout_default():
    model = create_model(ModelConfig(name="ED-TCN"))
    blocks = [*model.encoder, *model.decoder]
    assert all(not b.conv.bias.detach().any() for b in blocks) and not model.classifier.bias.detach().any()
    assert all(b.dropout.p == 0.0 for b in blocks)  # cfg.dropout
    lea = create_model(ModelConfig(name="ED-TCN", extra={"edtcn_dropout": 0.3}))
    assert all(b.dropout.p == 0.3 for b in [*lea.encoder, *lea.decoder])
    # zero biases: ReLU + channel normalisation make the network blind to the input's scale
    x = torch.rand(2, 10, 512)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(visual=x).logits, model(visual=0.1 * x).logits, atol=1e-4)

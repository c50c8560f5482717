"""SCAN losses: exact values on known inputs, stability, self-label masking."""

from __future__ import annotations

import math

import torch

from gearsx.module import ScanHead, scan_loss, self_label_loss


def test_scan_loss_known_values_and_finite_when_confident_and_disjoint():
    # Uniform logits: consistency = -log(1/K), mean-assignment entropy = log K.
    k = 4
    z = torch.zeros(8, 1, k)
    total, cons, ent = scan_loss(z, z, entropy_weight=2.0)
    assert torch.allclose(cons, torch.tensor([math.log(k)]))
    assert torch.allclose(ent, torch.tensor([math.log(k)]))
    assert torch.allclose(total, cons - 2.0 * ent)
    # Confident, disjoint anchor/neighbour assignments: large but finite consistency.
    a = torch.full((8, 1, k), -200.0)
    a[..., 0] = 200.0
    n = torch.full((8, 1, k), -200.0)
    n[..., 1] = 200.0
    total, cons, _ = scan_loss(a, n)
    assert torch.isfinite(total).all()
    assert cons.item() > 300


def test_scan_loss_prefers_agreeing_balanced_assignments():
    agree = torch.tensor([[[5.0, -5.0]], [[-5.0, 5.0]]])
    collapsed = torch.tensor([[[5.0, -5.0]], [[5.0, -5.0]]])
    disagree = torch.tensor([[[-5.0, 5.0]], [[5.0, -5.0]]])
    good = scan_loss(agree, agree)[0]
    assert good < scan_loss(collapsed, collapsed)[0]
    assert good < scan_loss(agree, disagree)[0]


def test_self_label_uses_only_confident_points():
    weak = torch.tensor([[10.0, 0.0], [0.0, 0.1], [0.0, 10.0]])
    strong = torch.zeros(3, 2, requires_grad=True)
    loss, n = self_label_loss(weak, strong, threshold=0.99)
    assert n == 2
    loss.backward()
    assert strong.grad[1].abs().sum() == 0
    assert strong.grad[0].abs().sum() > 0
    loss0, n0 = self_label_loss(torch.zeros(3, 2), strong, threshold=0.99)
    assert n0 == 0
    assert loss0.item() == 0.0


def test_head_shapes():
    head = ScanHead(10, 3, n_hidden=16, n_heads=4)
    x = torch.randn(7, 10)
    assert head(x).shape == (7, 4, 3)
    assert head.embed(x).shape == (7, 16)

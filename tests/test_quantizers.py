import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from magvit.config import build_registered
from magvit.errors import MagvitError
from magvit.tokenizers.quantizers import (
    QUANTIZERS,
    FSQConfig,
    LFQConfig,
    VQConfig,
    bits_to_ids,
    build_quantizer,
    entropy_group_sizes,
    ids_to_bits,
    lfq_entropy,
)

SMALL = {
    "vq": VQConfig(codebook_size=64, dim=8),
    "vq_cosine": VQConfig(codebook_size=64, dim=8, l2_normalize=True),
    "vq_ema": VQConfig(codebook_size=64, dim=8, ema=True),
    "lfq": LFQConfig(bits=8, entropy_groups=2),
    "fsq": FSQConfig(levels=(8, 5, 5, 4)),
}
SHAPES = [(2, 5, 6), (2, 3, 4, 5)]  # spatial dims of images (h, w) and video (t, h, w)


def _brute_force_probs(z: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, d) -> (N, 2^d) softmax over every code in {-1, 1}^d of 2 z.c / tau, in float64."""
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=z.shape[1])), dtype=torch.float64)
    return torch.softmax(2 * z.double() @ codes.T / tau, dim=-1)


def _entropy64(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def test_registry_builds_each_family_from_a_config_section():
    assert {"vq", "lfq", "fsq"} <= set(QUANTIZERS)
    fsq = build_quantizer(build_registered(QUANTIZERS, {"name": "fsq", "levels": [8, 5, 5]}))
    assert fsq.codebook_size == 200 and fsq.dim == 3
    lfq = build_quantizer(build_registered(QUANTIZERS, {"name": "lfq", "bits": 10}))
    assert lfq.codebook_size == 1024 and lfq.dim == 10
    vq = build_quantizer(VQConfig())
    assert vq.codebook().shape == (1024, 256)


@pytest.mark.parametrize("spatial", SHAPES, ids=["image", "video"])
@pytest.mark.parametrize("name", SMALL)
def test_shapes_ids_and_embed_round_trip(name, spatial):
    quantizer = build_quantizer(SMALL[name]).eval()
    z = torch.randn(2, quantizer.dim, *spatial)
    out = quantizer(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == torch.float32
    assert out.ids.shape == (2, *spatial) and out.ids.dtype == torch.int64
    assert 0 <= out.ids.min() and out.ids.max() < quantizer.codebook_size
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    assert 0 < out.metrics["usage"] <= 1
    # ids -> code vectors reproduces the quantized output exactly, through embed and codebook
    assert torch.equal(quantizer.embed(out.ids), out.quantized)
    flat = out.quantized.movedim(1, -1).reshape(-1, quantizer.dim)
    assert torch.equal(quantizer.codebook()[out.ids.flatten()], flat)


@pytest.mark.parametrize("name", ["lfq", "fsq"])
def test_codebook_rows_are_distinct(name):
    codebook = build_quantizer(SMALL[name]).codebook()
    assert codebook.shape[0] == build_quantizer(SMALL[name]).codebook_size
    assert torch.unique(codebook, dim=0).shape[0] == codebook.shape[0]
    assert codebook.abs().max() <= 1


@pytest.mark.parametrize("name", SMALL)
def test_gradients_reach_z_straight_through(name):
    quantizer = build_quantizer(SMALL[name]).train()
    z = torch.randn(2, quantizer.dim, 3, 4, 4, requires_grad=True)
    weight = torch.randn_like(z)
    (quantizer(z).quantized * weight).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad != 0).float().mean() > 0.9
    if name in ("vq", "vq_ema", "lfq"):  # identity gradient: d quantized / d z = 1
        torch.testing.assert_close(z.grad, weight)


@pytest.mark.parametrize("name", ["vq", "vq_ema", "lfq"])
def test_losses_follow_their_definition(name):
    cfg = SMALL[name]
    quantizer = build_quantizer(cfg).eval()
    z = torch.randn(2, quantizer.dim, 4, 4)
    out = quantizer(z)
    mse = F.mse_loss(z, out.quantized)
    if name == "lfq":
        expected = cfg.commitment * mse + cfg.entropy_weight * out.metrics["entropy_loss"]
    else:
        expected = (cfg.commitment + (0.0 if cfg.ema else cfg.codebook_weight)) * mse
    torch.testing.assert_close(out.loss, expected)
    assert build_quantizer(SMALL["fsq"])(torch.randn(2, 4, 3, 3)).loss == 0


def test_wrong_channel_count_is_a_user_error():
    with pytest.raises(MagvitError, match=r"expects z of shape \(B, 8"):
        build_quantizer(SMALL["lfq"])(torch.randn(2, 7, 4, 4))


# ---------------------------------------------------------------------------------------------
# LFQ


def test_ids_bits_round_trip():
    ids = torch.randint(0, 2**18, (1000,))
    bits = ids_to_bits(ids, 18)
    assert set(bits.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(bits_to_ids(bits), ids)
    expected = torch.tensor([[-1.0, -1, -1], [1, -1, -1], [-1, 1, 1]])
    assert torch.equal(ids_to_bits(torch.tensor([0, 1, 6]), 3), expected)


def test_lfq_quantizes_to_signs_with_zero_negative():
    lfq = build_quantizer(LFQConfig(bits=4, entropy_groups=1))
    z = torch.tensor([0.3, 0.0, -2.0, 5.0]).view(1, 4, 1, 1)
    out = lfq(z)
    assert out.quantized.flatten().tolist() == [1.0, -1.0, -1.0, 1.0]
    assert out.ids.item() == 1 + 8


@pytest.mark.parametrize("bits", [4, 8, 10])
@pytest.mark.parametrize("tau,scale", [(0.01, 0.01), (1.0, 1.0), (0.01, 1.0)], ids=["soft", "wide", "sharp"])
def test_lfq_entropies_equal_brute_force(bits, tau, scale):
    z = torch.randn(256, bits, dtype=torch.float64) * scale
    probs = _brute_force_probs(z, tau)  # (N, 2^d)
    per_token, codebook = lfq_entropy(z, tau, groups=1)
    torch.testing.assert_close(per_token, _entropy64(probs).mean(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(codebook, _entropy64(probs.mean(0)), rtol=1e-9, atol=1e-9)
    # the same in fp32, as the quantizer computes it
    per_token32, codebook32 = lfq_entropy(z.float(), tau, groups=1)
    torch.testing.assert_close(per_token32.double(), per_token, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(codebook32.double(), codebook, rtol=1e-4, atol=1e-4)
    # grouped bits: an upper bound on the joint codebook entropy (subadditivity)
    _, grouped = lfq_entropy(z, tau, groups=2)
    assert grouped >= codebook - 1e-9


@pytest.mark.parametrize("bits", [4, 8, 10])
def test_lfq_default_codebook_entropy_is_the_exact_joint_entropy(bits):
    """The default (entropy_groups=None) is one group up to max_group_bits: H(E[softmax(-||z - c||^2 / tau)])."""
    lfq = build_quantizer(LFQConfig(bits=bits))
    assert lfq.group_sizes == [bits]
    z = torch.randn(300, bits, dtype=torch.float64) * 0.02
    codes = ids_to_bits(torch.arange(2**bits), bits).double()
    distances = torch.cdist(z, codes) ** 2  # (N, 2^d)
    probs = torch.softmax(-distances / lfq.cfg.tau, dim=-1)
    _, codebook = lfq_entropy(z, lfq.cfg.tau, lfq.group_sizes)
    torch.testing.assert_close(codebook, _entropy64(probs.mean(0)), rtol=1e-9, atol=1e-9)


def _marginal_entropy(probs: torch.Tensor, bits: int, keep: list[int]) -> torch.Tensor:
    """Entropy of the batch average of (N, 2^bits) code probabilities marginalised to the bits `keep`."""
    average = probs.mean(0).view(*[2] * bits)  # dim i: bit i of z (`_brute_force_probs`'s code order)
    dims = [b for b in range(bits) if b not in keep]
    return _entropy64(average.sum(dims).flatten()) if dims else _entropy64(average.flatten())


def test_lfq_unequal_groups_sum_the_entropies_of_their_bits():
    assert entropy_group_sizes(9, 2) == [5, 4]
    assert entropy_group_sizes(18, None) == [18] and entropy_group_sizes(20, None) == [10, 10]
    assert entropy_group_sizes(19, None, max_group_bits=6) == [5, 5, 5, 4]
    z = torch.randn(200, 9, dtype=torch.float64) * 0.01
    probs = _brute_force_probs(z, 0.01)
    _, grouped = lfq_entropy(z, 0.01, groups=2)
    expected = _marginal_entropy(probs, 9, [0, 1, 2, 3, 4]) + _marginal_entropy(probs, 9, [5, 6, 7, 8])
    torch.testing.assert_close(grouped, expected, rtol=1e-9, atol=1e-9)
    _, joint = lfq_entropy(z, 0.01, groups=1)
    assert grouped >= joint - 1e-9
    assert build_quantizer(LFQConfig(bits=9, entropy_groups=2)).group_sizes == [5, 4]


def test_lfq_groups_that_copy_each_other_are_not_rewarded_by_the_exact_entropy():
    """Bits 5-9 a copy of bits 0-4: two groups count 2 x log 32 nats, the joint entropy log 32."""
    low = torch.randn(4096, 5, dtype=torch.float64)  # confident bits (|4 z / tau| >> 1)
    z = torch.cat([low, low], dim=1)
    _, two = lfq_entropy(z, 0.01, groups=2)
    _, one = lfq_entropy(z, 0.01, groups=None)
    assert two > 1.9 * math.log(32)
    assert one < 1.01 * math.log(32) + 0.05


def test_lfq_group_options_are_checked():
    with pytest.raises(MagvitError, match="entropy_groups must be in"):
        build_quantizer(LFQConfig(bits=9, entropy_groups=10))
    with pytest.raises(MagvitError, match="exceed max_group_bits"):
        build_quantizer(LFQConfig(bits=20, entropy_groups=1))
    with pytest.raises(MagvitError, match="anneal"):
        build_quantizer(LFQConfig(bits=8, entropy_anneal_steps=-1))


def test_lfq_entropy_weight_anneals_linearly_to_its_value():
    lfq = build_quantizer(LFQConfig(bits=6, entropy_weight=0.1, entropy_anneal_steps=100, entropy_anneal_factor=5.0))
    assert [round(lfq.entropy_weight_at(s), 9) for s in (0, 50, 100, 1000)] == [0.5, 0.3, 0.1, 0.1]
    constant = build_quantizer(LFQConfig(bits=6, entropy_weight=0.1))
    assert {constant.entropy_weight_at(s) for s in (0, 10, 10**6)} == {0.1}
    z = torch.randn(2, 6, 4, 4)
    lfq.set_step(0)
    first = lfq(z)
    lfq.set_step(100)
    last = lfq(z)
    assert float(first.metrics["entropy_weight"]) == pytest.approx(0.5)
    assert float(last.metrics["entropy_weight"]) == pytest.approx(0.1)
    expected = lfq.cfg.commitment * first.metrics["commitment"] + 0.5 * first.metrics["entropy_loss"]
    torch.testing.assert_close(first.loss, expected)


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


@pytest.mark.parametrize("groups", [None, 2])
def test_lfq_18_bits_on_10240_tokens_never_materialises_the_codebook(groups):
    lfq = build_quantizer(LFQConfig(bits=18, entropy_groups=groups)).train()
    z = torch.randn(4, 18, 10, 16, 16, requires_grad=True)  # 10,240 tokens
    n = z.numel() // 18
    with _LargestTensor() as mode:
        lfq(z).loss.backward()
    assert torch.isfinite(z.grad).all()
    # O(N (d + 2^(k/2)) + 2^k) per group of k bits: N x 2^9 per half and the 2^18 average for the
    # exact joint entropy (one group); N x 2^18 would be 10,240x the average
    assert mode.largest <= max(2 * n * 2**9, 2**18) < n * 2**18


def test_lfq_is_fp32_exact_under_bf16_autocast():
    lfq = build_quantizer(LFQConfig(bits=10, entropy_groups=2))
    z = torch.randn(2, 10, 4, 8, 8)
    reference = lfq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lfq(z)
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.loss, reference.loss)
    for key, value in reference.metrics.items():
        assert torch.equal(out.metrics[key], value), key


# ---------------------------------------------------------------------------------------------
# FSQ


def test_fsq_reaches_every_level_and_ids_are_mixed_radix():
    levels = (8, 5, 2, 3)
    fsq = build_quantizer(FSQConfig(levels=levels))
    assert fsq.codebook_size == math.prod(levels) == 240
    out = fsq(torch.randn(1, 4, 64, 64) * 3)
    codes = out.quantized.movedim(1, -1).reshape(-1, 4)
    for channel, n_levels in enumerate(levels):
        values = codes[:, channel].unique()
        assert len(values) == n_levels and values.min() == -1 and values.max() <= 1
    # the digits read off the code values rebuild the id: id = d0 + 8 d1 + 40 d2 + 80 d3
    half = torch.tensor([n // 2 for n in levels])
    digits = (codes * half + half).round().long()
    ids = (digits * torch.tensor([1, 8, 40, 80])).sum(-1)
    assert torch.equal(ids, out.ids.flatten())
    # and every id maps to a code that reads back to the same id
    all_digits = (fsq.codebook() * half + half).round().long()
    assert torch.equal((all_digits * torch.tensor([1, 8, 40, 80])).sum(-1), torch.arange(240))


# ---------------------------------------------------------------------------------------------
# VQ


@pytest.mark.parametrize("l2", [False, True])
def test_vq_picks_the_true_nearest_code_in_chunks(l2):
    vq = build_quantizer(VQConfig(codebook_size=100, dim=6, l2_normalize=l2, init="normal")).double().eval()
    vq.max_distance_elements = 700  # 7 tokens per chunk
    z = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    out = vq(z)
    flat = z.movedim(1, -1).reshape(-1, 6)
    if l2:
        flat = F.normalize(flat, dim=-1)
    expected = torch.cdist(flat, vq.codebook()).argmin(-1)
    assert torch.equal(out.ids.flatten(), expected)


def test_vq_ema_moves_codes_toward_assigned_inputs():
    vq = build_quantizer(VQConfig(codebook_size=4, dim=2, ema=True, ema_decay=0.8, restart_dead_codes=False))
    centers = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    with torch.no_grad():
        vq.codes.copy_(centers * 0.5)
    z = (centers.repeat(64, 1) + 0.05 * torch.randn(256, 2)).T.reshape(1, 2, 16, 16)
    before = (vq.codes - centers).norm(dim=-1)
    vq.train()
    for _ in range(10):
        out = vq(z)
    after = (vq.codes - centers).norm(dim=-1)
    assert torch.all(after < 0.2 * before)
    assert vq.codes.grad is None and not vq.codes.requires_grad and "codebook" not in out.metrics
    assert torch.equal(out.ids.flatten().bincount(minlength=4), torch.full((4,), 64))


@pytest.mark.parametrize("ema", [False, True])
def test_vq_restarts_dead_codes_from_batch_outputs(ema):
    vq = build_quantizer(VQConfig(codebook_size=8, dim=4, ema=ema, ema_decay=0.5, dead_code_threshold=1.0))
    with torch.no_grad():
        vq.codes.copy_(torch.cat([torch.eye(4), torch.full((4, 4), 100.0)]))  # codes 4..7 never win
    z = (torch.eye(4).repeat(16, 1) + 0.1 * torch.randn(64, 4)).T.reshape(1, 4, 8, 8)
    tokens = z.movedim(1, -1).reshape(-1, 4)
    vq.eval()
    for _ in range(8):
        vq(z)
    assert torch.all(vq.codes[4:] > 99), "no restarts in eval mode"
    vq.train()
    # usage starts at the fair share 64 / 8 = 8 and halves each step: dead (< 1) after 4 steps
    for _ in range(4):
        vq(z)
    assert torch.all(vq.codes[4:] > 99)  # (the EMA's Laplace smoothing moves them a hair)
    out = vq(z)
    assert vq.codes[4:].abs().max() < 2 and torch.all(vq.usage >= 1.0)
    assert torch.all(out.ids.flatten().bincount(minlength=8)[4:] > 0), "restarted codes win tokens at once"
    if not ema:  # the EMA update has already moved them on
        matches = (vq.codes[4:, None, :] - tokens[None]).abs().amax(-1) == 0  # (4, 64)
        assert matches.any(-1).all(), "each restarted code is one of this batch's encoder outputs"


@pytest.mark.parametrize("ema", [False, True])
def test_vq_data_init_takes_codes_from_the_first_training_batch(ema):
    vq = build_quantizer(VQConfig(codebook_size=16, dim=4, ema=ema, init="data"))
    z = 5 + torch.randn(1, 4, 8, 8)  # far from the U(-1/K, 1/K) start
    tokens = z.movedim(1, -1).reshape(-1, 4)
    before = vq.codes.detach().clone()
    vq.eval()(z)
    assert torch.equal(vq.codes, before), "no data init in eval mode"
    out = vq.train()(z)
    if not ema:  # (the EMA update has already moved the codes on)
        matches = (vq.codes[:, None, :] - tokens[None]).abs().amax(-1) == 0  # (16, 64)
        assert matches.any(-1).all(), "every code is one of the first batch's encoder outputs"
    assert out.metrics["commitment"] < 1.0 and out.metrics["usage"] == 1.0  # distinct tokens: all codes win
    first = vq.codes.detach().clone()
    vq(5 + torch.randn(1, 4, 8, 8))
    assert ema or torch.equal(vq.codes, first), "the data init happens once"


def test_lfq_codebook_entropy_is_synchronised_only_in_training(monkeypatch):
    """Validation may run on one process only: an eval forward must not wait for the others."""
    import magvit.tokenizers.quantizers.lfq as lfq_module

    calls = []
    monkeypatch.setattr(lfq_module, "_mean_over_processes", lambda x: calls.append(1) or x)
    lfq = build_quantizer(SMALL["lfq"])
    z = torch.randn(2, lfq.dim, 4, 4)
    lfq.eval()(z)
    assert calls == []
    lfq.train()(z)
    assert len(calls) == SMALL["lfq"].entropy_groups


def test_peer_lfq_gives_our_ids_and_codes():
    """vector-quantize-pytorch's LFQ behind our contract: ids in our bit order, embed(ids) = its output."""
    pytest.importorskip("vector_quantize_pytorch")
    from magvit.tokenizers.peer_lfq import PeerLFQConfig

    peer = build_quantizer(PeerLFQConfig(bits=6)).train()
    z = torch.randn(2, 6, 3, 4, 4, requires_grad=True)
    out = peer(z)
    assert torch.equal(out.ids, bits_to_ids(z.detach().movedim(1, -1)))
    assert torch.equal(out.quantized.detach(), peer.embed(out.ids))
    out.loss.backward()  # the peer's entropy loss reaches z
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

"""The autoregressive baseline: causality, KV cache = no cache, teacher forcing = generation, FLOPs."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from magvit.autoregressive import ARTransformer
from magvit.errors import MagvitError
from magvit.transformer import build_transformer


def tiny(**overrides):
    kw = dict(name="autoregressive", codebook_size=64, width=32, heads=2, grid=(2, 4, 4), num_classes=3)
    return build_transformer("tiny", **{**kw, **overrides}).eval()


def test_it_is_the_autoregressive_model_of_the_same_preset():
    model = tiny()
    assert isinstance(model, ARTransformer) and model.causal and model.vocab.tasks == ()
    assert (model.config.layers, model.config.mlp_ratio) == (2, 4.0)


def test_causal_mask():
    model = tiny()
    tokens = torch.randint(0, 64, (1, 2, 4, 4))
    cls = torch.tensor([model.vocab.uncond])
    changed = tokens.clone()
    changed[0, 1, 0, 0] += 1  # raster position 16
    a, b = model(tokens, cls).flatten(1, 3), model(changed, cls).flatten(1, 3)
    assert torch.equal(a[:, :17], b[:, :17])  # logits for tokens 0..16 never see token 16
    assert not torch.allclose(a[:, 17:], b[:, 17:])


@pytest.mark.parametrize("classes, sub_tokens", [(None, 1), (torch.tensor([0, 2]), 1), (torch.tensor([1]), 2)])
def test_kv_cache_equals_uncached_greedy_generation(classes, sub_tokens):
    model = tiny(sub_tokens=sub_tokens)
    cached = model.generate((2, 4, 4), batch=2, classes=classes, temperature=0)
    uncached = model.generate((2, 4, 4), batch=2, classes=classes, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape == (2, 2, 4, 4) and (cached < 64).all()
    # teacher forcing reproduces the greedy choices: generation and `forward` are the same model
    cls = torch.full((2,), model.vocab.uncond) if classes is None else model.vocab.cls(classes.expand(2))
    logits = model(cached, cls)  # (B, t, h, w, k, V)
    greedy = logits.argmax(-1)
    assert torch.equal(greedy[..., 0] if sub_tokens == 1 else greedy[..., 0] + (greedy[..., 1] << 3), cached)


def test_sampling_is_seeded_and_uses_temperature_and_top_k():
    model = tiny()
    run = lambda seed, **kw: model.generate((1, 4, 4), batch=2, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    assert torch.equal(run(0, top_k=1), model.generate((1, 4, 4), batch=2, temperature=0))
    with pytest.raises(MagvitError, match="needs a torch.Generator"):
        model.generate((1, 4, 4))


def test_flops_match_the_flop_counter():
    model = tiny()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.generate((2, 4, 4), temperature=0)
    assert counter.get_total_flops() == model.generate_flops(32)
    # teacher forcing: the math backend computes the full score matrix; the count keeps the causal half
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 2, 4, 4, dtype=torch.long), torch.tensor([model.vocab.uncond]))
    masked_half = 2 * 4 * 32 * (32 * 32 - 32 * 33 // 2)  # layers * 4 * width * masked (query, key) pairs
    assert counter.get_total_flops() == model.flops_per_forward(32) + masked_half


def test_save_and_load(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    loaded = ARTransformer.from_pretrained(tmp_path)
    assert isinstance(loaded, ARTransformer)
    assert torch.equal(loaded.generate((1, 4, 4), temperature=0), model.generate((1, 4, 4), temperature=0))

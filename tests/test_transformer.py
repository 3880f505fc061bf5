"""The masked transformer: vocabulary, factorised head, positions, losses, presets, weights, FLOPs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from magvit.config import build_registered
from magvit.errors import MagvitError
from magvit.tasks import TASKS
from magvit.transformer import (
    TRANSFORMERS,
    MaskedTransformer,
    build_transformer,
    masked_token_loss,
    merge_ids,
    split_ids,
    token_log_probs,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster than two fighting over busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides):
    kw = dict(codebook_size=256, width=32, heads=2, grid=(3, 4, 4), num_classes=5)
    return build_transformer("tiny", **{**kw, **overrides}).eval()


def prompt(model, batch, task="cg", cls=None):
    task_ids = torch.full((batch,), model.vocab.task(task))
    cls_ids = torch.full((batch,), model.vocab.uncond) if cls is None else model.vocab.cls(torch.tensor(cls))
    return task_ids, cls_ids


def test_vocab_ids_are_explicit_distinct_and_in_the_table():
    model = tiny(sub_tokens=2)
    v = model.vocab
    specials = [v.mask, *(v.task(t) for t in v.tasks), *(v.cls(c) for c in range(5)), v.uncond]
    assert len(set(specials)) == len(specials) == v.num_special
    assert min(specials) == v.codebook_size and max(specials) == v.size - 1
    assert v.tasks == tuple(TASKS.names())  # every task has a prompt by default
    # table rows: 2 sub-token tables of 16 rows, then the specials
    assert model.embed.num_embeddings == 2 * 16 + v.num_special
    with pytest.raises(MagvitError, match=r"class labels must be in \[0, 5\), got 5"):
        v.cls(torch.tensor([1, 5]))
    with pytest.raises(MagvitError, match="no prompt token for task 'bogus'"):
        v.task("bogus")
    with pytest.raises(MagvitError, match="not class-conditional"):
        tiny(num_classes=0).vocab.cls(0)


def test_split_and_merge_ids_are_bit_groups():
    ids = torch.tensor([0b1010_0101, 0, 255])
    sub = split_ids(ids, 2, 4)
    assert sub.tolist() == [[0b0101, 0b1010], [0, 0], [15, 15]]
    assert torch.equal(merge_ids(sub, 4), ids)
    every = torch.arange(2**12)
    assert torch.equal(merge_ids(split_ids(every, 3, 4), 4), every)


def test_forward_shapes_and_special_ids_never_predicted():
    model = tiny()
    tokens = torch.randint(0, 256, (2, 3, 4, 4))
    tokens[0, 0, 0, 0] = model.vocab.mask
    logits = model(tokens, *prompt(model, 2, "cfp", [1, 4]))
    assert logits.shape == (2, 3, 4, 4, 1, 256) and logits.dtype == torch.float32
    factorised = tiny(codebook_size=2**10, sub_tokens=2)
    assert factorised(tokens, *prompt(factorised, 2)).shape == (2, 3, 4, 4, 2, 32)


def test_factorised_probabilities_sum_to_one_over_the_full_vocabulary():
    """Brute force over all 2^8 codes: sum_c p(c) = 1 at every position, p(c) = prod_j p_j(sub_j)."""
    model = tiny(codebook_size=2**8, sub_tokens=2)
    tokens = torch.randint(0, 256, (1, 2, 4, 4))
    logits = model(tokens, *prompt(model, 1)) * 3  # sharper than at init
    every = torch.arange(256).view(256, 1, 1, 1).expand(256, 2, 4, 4)
    log_p = token_log_probs(logits.expand(256, -1, -1, -1, -1, -1), every)  # (256 codes, 2, 4, 4)
    assert torch.allclose(log_p.logsumexp(0), torch.zeros(2, 4, 4), atol=1e-5)
    assert log_p.exp().std() > 1e-4  # not uniform: the check is not vacuous
    # k = 1: plain log-softmax
    flat = tiny()
    logits = flat(tokens, *prompt(flat, 1))
    expected = F.log_softmax(logits[..., 0, :], -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_log_probs(logits, tokens), expected)


def test_attention_is_bidirectional():
    model = tiny()
    tokens = torch.randint(0, 256, (1, 3, 4, 4))
    changed = tokens.clone()
    changed[0, -1, -1, -1] = (changed[0, -1, -1, -1] + 1) % 256
    before, after = model(tokens, *prompt(model, 1)), model(changed, *prompt(model, 1))
    assert not torch.allclose(before[0, 0, 0, 0], after[0, 0, 0, 0])  # the first position sees the last


def test_positions_serve_images_and_videos_and_reject_larger_grids():
    model = tiny()
    image, video = model.pos(1, 4, 4), model.pos(3, 4, 4)
    assert torch.equal(image, video[: 2 + 16])  # an image uses the first time slot of a video
    assert model(torch.zeros(1, 1, 2, 3, dtype=torch.long), *prompt(model, 1)).shape[1:4] == (1, 2, 3)
    with pytest.raises(MagvitError, match=r"larger than the model's position grid \(3, 4, 4\)"):
        model(torch.zeros(1, 4, 4, 4, dtype=torch.long), *prompt(model, 1))


def test_masked_token_loss_is_weighted_mean_over_weighted_positions():
    model = tiny()
    tokens = torch.randint(0, 256, (2, 3, 4, 4))
    logits = model(tokens, *prompt(model, 2))
    weight = (torch.rand(2, 3, 4, 4) < 0.3).float()
    ce = F.cross_entropy(logits[..., 0, :].reshape(-1, 256), tokens.reshape(-1), reduction="none", label_smoothing=0.1)
    expected = ce[weight.reshape(-1) > 0].mean()
    assert torch.allclose(masked_token_loss(logits, tokens, weight, 0.1), expected)
    assert torch.allclose(masked_token_loss(logits, tokens, 2 * weight, 0.1), 2 * expected)  # weights scale terms
    zero = masked_token_loss(logits, tokens, torch.zeros_like(weight))
    assert zero.item() == 0 and zero.requires_grad


def test_config_errors_are_one_clear_line():
    with pytest.raises(MagvitError, match="codebook_size >= 1; set it from the tokenizer"):
        build_transformer("tiny")
    with pytest.raises(MagvitError, match="sub_tokens=2 needs a codebook of 2\\^d codes"):
        build_transformer("tiny", codebook_size=1000, sub_tokens=2)
    with pytest.raises(MagvitError, match="width divisible by heads"):
        build_transformer("tiny", codebook_size=16, width=30, heads=4)
    with pytest.raises(MagvitError, match="tasks must be distinct names"):
        build_transformer("tiny", codebook_size=16, tasks=["fp", "nope"])


@pytest.mark.parametrize(
    "preset, shape", [("maskgit", (24, 768, 16)), ("magvit_b", (12, 768, 12)), ("magvit_l", (24, 1024, 16))]
)
def test_presets(preset, shape):
    cfg = build_registered(TRANSFORMERS, {"name": "masked", "preset": preset, "codebook_size": 1024})
    assert (cfg.layers, cfg.width, cfg.heads, cfg.mlp_ratio) == (*shape, 4.0)


def test_init_is_deterministic_and_head_bias_zero():
    torch.manual_seed(3)
    a = tiny()
    torch.manual_seed(3)
    b = tiny()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.head_bias.abs().sum() == 0
    assert abs(a.embed.weight.std().item() - 0.02) < 0.005


def test_save_and_load_round_trip(tmp_path):
    model = tiny(sub_tokens=2, codebook_size=2**8)
    model.save_pretrained(tmp_path / "m")
    loaded = MaskedTransformer.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, MaskedTransformer) and loaded.config == model.config
    tokens = torch.randint(0, 256, (1, 2, 4, 4))
    assert torch.equal(model(tokens, *prompt(model, 1)), loaded(tokens, *prompt(loaded, 1)))
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(MagvitError, match="not a magvit transformer config"):
        MaskedTransformer.from_pretrained(tmp_path / "m")


def test_flops_per_forward_matches_the_flop_counter():
    model = tiny()
    tokens = torch.randint(0, 256, (1, 3, 4, 4))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, *prompt(model, 1))
    assert counter.get_total_flops() == model.flops_per_forward(48)
    assert math.isclose(model.flops_per_forward(48) / model.flops_per_forward(24), 2, rel_tol=0.1)

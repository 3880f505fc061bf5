"""The one decode loop: for every task it keeps the condition, fixes exactly the scheduled number of
tokens per step, never re-masks, ends without MASK, and is deterministic under a seed."""

import math

import pytest
import torch
import torch.nn.functional as F

from magvit.decode import (
    DecodeConfig,
    choice_temperature_at,
    decode,
    filter_logits,
    generate_video,
    guidance_at,
    sample_sub_tokens,
)
from magvit.errors import MagvitError
from magvit.schedules import MASK_SCHEDULES
from magvit.tasks import TASKS, TaskOptions, build_task
from magvit.tokenizers import build_tokenizer
from magvit.transformer import build_transformer

CODES = 64
IMAGE_TASKS = ("edit", "inpaint", "outpaint")



class StandIn:
    """A tokenizer stand-in with causal3d's token grid (4x in space; frame 0 alone, then groups of 4)
    and a cheap deterministic encode: the mean of each block, quantised to CODES levels."""

    codebook_size = CODES

    def token_shape(self, frames, height, width):
        if (frames - 1) % 4 or height % 4 or width % 4:
            raise MagvitError(f"stand-in needs 1 + 4k frames and sizes divisible by 4, got {frames}x{height}x{width}")
        return 1 + (frames - 1) // 4, height // 4, width // 4

    def encode(self, video):
        t, h, w = self.token_shape(*video.shape[2:])
        pooled = F.adaptive_avg_pool3d(video.mean(1, keepdim=True), (t, h, w))[:, 0]
        return ((pooled + 1) / 2 * (CODES - 1)).round().long().clamp(0, CODES - 1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_transformer("tiny", codebook_size=CODES, width=32, heads=2, grid=(3, 4, 4), num_classes=3)


def make_condition(task, batch=2):
    image = task in IMAGE_TASKS
    video = torch.rand(batch, 3, 1 if image else 9, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return build_task(task).condition(video, StandIn(), options=TaskOptions(box=(4, 4, 8, 4) if image else None))


def classes_for(task):
    return torch.tensor([0, 2]) if build_task(task).use_class else None


def expected_masked(unknown, steps, gamma):
    """MaskGIT section 3.2: floor(U gamma((s + 1) / T)), clamped to [1, U - 1] before the last step."""
    out = []
    for s in range(steps):
        n = [0 if s == steps - 1 else max(1, min(u - 1, math.floor(u * gamma((s + 1) / steps)))) for u in unknown]
        out.append(n)
    return out


@pytest.mark.parametrize("task", sorted(TASKS.names()))
def test_every_task_keeps_its_condition_and_follows_the_schedule(model, task):
    cond, steps = make_condition(task), 5
    shape, mask = tuple(cond.tokens.shape[1:]), model.vocab.mask
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].flatten(1).clone()))
    try:
        ids, trace = decode(model, cond, task, classes_for(task), shape, 2, DecodeConfig(steps=steps, top_k=20),
                            torch.Generator().manual_seed(0), trace=True)
    finally:
        hook.remove()
    is_cond, z = cond.latent_mask.flatten(1), cond.tokens.flatten(1)
    fixed = is_cond.clone() if not cond.refine else torch.zeros_like(is_cond)  # image tasks fix z~ up front
    current = torch.where(fixed, z, mask)
    unknown = (~fixed).sum(1).tolist()
    assert [s["masked"].tolist() for s in trace] == expected_masked(unknown, steps, lambda r: math.cos(math.pi * r / 2))
    assert len(seen) == steps
    for inputs, step in zip(seen, trace):
        # the forward saw: fixed tokens, z~ at unfixed condition positions, MASK elsewhere
        assert torch.equal(inputs[fixed], current[fixed])
        assert torch.equal(inputs[~fixed & is_cond], z[~fixed & is_cond])
        assert (inputs[~fixed & ~is_cond] == mask).all()
        now, ids_now = step["fixed"].flatten(1), step["ids"].flatten(1)
        assert now[fixed].all() and torch.equal(ids_now[fixed], current[fixed])  # never re-masked or changed
        assert (ids_now[~now] == mask).all() and (ids_now[now] < CODES).all()
        fixed, current = now, ids_now
    assert fixed.all() and (ids < CODES).all() and torch.equal(ids.flatten(1), current)
    if not cond.refine:
        assert torch.equal(ids.flatten(1)[is_cond], z[is_cond])
    again = decode(model, cond, task, classes_for(task), shape, 2, DecodeConfig(steps=steps, top_k=20),
                   torch.Generator().manual_seed(0))
    assert torch.equal(again, ids)


def test_seeds_differ_and_one_step_works(model):
    assert model.training  # decode runs in eval mode and restores the mode
    cond = make_condition("fp")
    run = lambda seed, steps: decode(model, cond, "fp", None, (3, 4, 4), 2, DecodeConfig(steps=steps),
                                     torch.Generator().manual_seed(seed), trace=True)
    assert not torch.equal(run(0, 4)[0], run(1, 4)[0])
    ids, trace = run(0, 1)
    assert len(trace) == 1 and trace[0]["fixed"].all() and (ids < CODES).all() and model.training


def test_batched_samples_without_condition(model):
    ids = decode(model, None, "cg", torch.tensor([1]), (2, 4, 4), 3, DecodeConfig(steps=3),
                 torch.Generator().manual_seed(0))
    assert ids.shape == (3, 2, 4, 4) and (ids < CODES).all()
    assert not torch.equal(ids[0], ids[1])  # independent samples, one class label broadcast


@pytest.mark.parametrize("steps", [6, 40])  # 40 steps > 16 tokens: gamma reaches 1 early for log
@pytest.mark.parametrize("schedule", MASK_SCHEDULES.names())
def test_every_schedule_decodes_monotonically(model, schedule, steps):
    ids, trace = decode(model, None, "uncond", None, (1, 4, 4), 2, DecodeConfig(steps=steps, schedule=schedule),
                        torch.Generator().manual_seed(0), trace=True)
    counts = [16] + [s["masked"][0].item() for s in trace]
    assert all(a >= b for a, b in zip(counts, counts[1:])) and counts[-1] == 0 and (ids < CODES).all()
    assert all(1 <= c <= 15 for c in counts[1:-1])  # clamped to [1, U - 1] before the last step


def test_choice_temperature_is_annealed_linearly_not_compounded():
    cfg = DecodeConfig(steps=4, choice_temperature=4.5)
    assert [choice_temperature_at(cfg, s) for s in range(4)] == [4.5 * 0.75, 4.5 * 0.5, 4.5 * 0.25, 0.0]


def test_guidance_zero_is_plain_conditional_decoding(model):
    batches = []
    hook = model.register_forward_pre_hook(lambda module, args: batches.append(args[2].clone()))
    try:
        run = lambda **kw: decode(model, None, "cg", torch.tensor([0, 2]), (2, 4, 4), 2, DecodeConfig(steps=4, **kw),
                                  torch.Generator().manual_seed(0))
        plain = run()
        assert all(len(b) == 2 and (b != model.vocab.uncond).all() for b in batches)  # no uncond branch at w = 0
        for schedule in ("constant", "linear", "cosine"):
            assert torch.equal(run(guidance=0.0, guidance_schedule=schedule), plain)
        batches.clear()
        guided = run(guidance=3.0)
        assert guided.shape == plain.shape and (guided < CODES).all()
    finally:
        hook.remove()
    # w != 0: ONE forward per step with cond and uncond batched, uncond = the UNCOND id
    assert len(batches) == 4 and all(b.tolist() == [*model.vocab.cls(torch.tensor([0, 2])).tolist(),
                                                    model.vocab.uncond, model.vocab.uncond] for b in batches)


def test_guided_logits_and_schedules(model):
    from magvit.decode import _logits

    tokens = torch.randint(0, CODES, (2, 2, 4, 4))
    task, cls = torch.full((2,), model.vocab.task("cg")), model.vocab.cls(torch.tensor([0, 1]))
    model.eval()  # the fixture stays in train mode: decode switches to eval and back
    try:
        with torch.no_grad():
            c, u = model(tokens, task, cls), model(tokens, task, torch.full((2,), model.vocab.uncond))
            assert torch.allclose(_logits(model, tokens, task, cls, 1.5), u + 2.5 * (c - u), atol=1e-5)
            assert not torch.allclose(c, u)
    finally:
        model.train()
    cfg = DecodeConfig(steps=4, guidance=2.0, guidance_schedule="linear")
    assert [guidance_at(cfg, s) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    cosine = [guidance_at(DecodeConfig(steps=4, guidance=2.0, guidance_schedule="cosine"), s) for s in range(4)]
    assert cosine[-1] == pytest.approx(2.0) and cosine == sorted(cosine)


def test_top_k_top_p_and_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, 2, None)).sum() == 2
    probs = logits.softmax(-1)[0]  # 0.54, 0.20, 0.12, 0.07, 0.03
    for p in (0.5, 0.6, 0.8, 0.9, 1.0):
        kept = torch.isfinite(filter_logits(logits, None, p)).sum().item()
        assert kept == next(i + 1 for i in range(5) if probs[: i + 1].sum() >= p - 1e-6)
    g = torch.Generator().manual_seed(0)
    many = torch.randn(100, 2, 16)
    assert torch.equal(sample_sub_tokens(many, 1.0, 1, None, g), many.argmax(-1))  # top-1 is greedy
    assert torch.equal(sample_sub_tokens(many, 0.0, None, None, g), many.argmax(-1))
    draws = sample_sub_tokens(torch.zeros(4000, 1, 4), 1.0, None, None, g).flatten()
    assert torch.bincount(draws, minlength=4).min() > 850  # uniform logits -> uniform samples


def test_factorised_vocabulary_decodes():
    model = build_transformer("tiny", codebook_size=2**8, sub_tokens=2, width=32, heads=2, grid=(1, 4, 4))
    ids, trace = decode(model, None, "uncond", None, (1, 4, 4), 2, DecodeConfig(steps=3),
                        torch.Generator().manual_seed(0), trace=True)
    assert (ids < 256).all() and ids.max() >= 16  # codes beyond the first sub-token's range occur
    assert [s["masked"].tolist() for s in trace] == expected_masked([16, 16], 3, lambda r: math.cos(math.pi * r / 2))
    again = decode(model, None, "uncond", None, (1, 4, 4), 2, DecodeConfig(steps=3), torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)


def test_per_sample_user_masks(model):
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[0, :, :8] = True  # sample 0: the left half
    mask[1, :4, :4] = True  # sample 1: one token
    cond = build_task("inpaint").condition(torch.rand(2, 3, 1, 16, 16) * 2 - 1, StandIn(),
                                        options=TaskOptions(mask=mask))
    ids, trace = decode(model, cond, "inpaint", None, (1, 4, 4), 2, DecodeConfig(steps=4),
                        torch.Generator().manual_seed(0), trace=True)
    unknown = (~cond.latent_mask).flatten(1).sum(1).tolist()
    assert unknown == [12, 4]  # grown by one token
    assert [s["masked"].tolist() for s in trace] == expected_masked(unknown, 4, lambda r: math.cos(math.pi * r / 2))
    assert torch.equal(ids[cond.latent_mask], cond.tokens[cond.latent_mask])


def test_guidance_is_zero_for_a_task_without_classes(model):
    """One decoding setting serves every task: fp has no class to guide with, so w is 0 there (the same
    draws, the same ids as an unguided decode)."""
    guided = decode(model, make_condition("fp"), "fp", None, (3, 4, 4), 2, DecodeConfig(guidance=3.0),
                    torch.Generator().manual_seed(0))
    plain = decode(model, make_condition("fp"), "fp", None, (3, 4, 4), 2, DecodeConfig(),
                   torch.Generator().manual_seed(0))
    assert torch.equal(guided, plain)


def test_decode_errors(model):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(MagvitError, match="task cg is class-conditional: give a class label"):
        decode(model, None, "cg", None, (1, 4, 4), 2, DecodeConfig(), g)
    with pytest.raises(MagvitError, match="decoding wants"):
        decode(model, make_condition("fp"), "fp", None, (2, 4, 4), 2, DecodeConfig(), g)
    with pytest.raises(MagvitError, match="steps >= 1"):
        decode(model, None, "uncond", None, (1, 4, 4), 1, DecodeConfig(steps=0), g)


def test_generate_video_pastes_the_condition_back():
    tok = build_tokenizer("causal3d", "tiny")  # 5x16x16 -> 2x4x4, 2^10 codes
    model = build_transformer("tiny", codebook_size=tok.codebook_size, sub_tokens=2, width=32, heads=2, grid=(2, 4, 4))
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    cond = build_task("opc").condition(video, tok)
    out = generate_video(model, tok, "opc", DecodeConfig(steps=2, paste_back=True), torch.Generator().manual_seed(0),
                         cond=cond)
    assert out.shape == video.shape and out.abs().max() <= 1
    given = cond.pixel_mask.expand_as(video)
    assert torch.equal(out[given], video[given]) and not torch.equal(out[~given], video[~given])
    free = generate_video(model, tok, "uncond", DecodeConfig(steps=2), torch.Generator().manual_seed(0), batch=2,
                          video_shape=(1, 16, 16))
    assert free.shape == (2, 3, 1, 16, 16)


@pytest.mark.parametrize("conditioning", ["latent", "prefix"])
def test_the_conditioning_alternatives_of_magvits_ablation(conditioning):
    """latent (MaskGIT's latent masking): the condition is fixed as given from the first step;
    prefix: z~ is a prefix, every latent position is generated, and the prefix changes the output."""
    torch.manual_seed(0)
    model = build_transformer("tiny", codebook_size=CODES, width=32, heads=2, grid=(3, 4, 4), num_classes=3,
                              conditioning=conditioning)
    cond = make_condition("fp")  # latent frame 0 of a 3x4x4 grid
    ids, steps = decode(model, cond, "fp", None, (3, 4, 4), 2, DecodeConfig(steps=4), torch.Generator().manual_seed(0),
                        trace=True)
    first = steps[0]["fixed"]
    if conditioning == "latent":
        assert first[:, 0].all() and torch.equal(ids[:, 0], cond.tokens[:, 0])
    else:
        assert steps[-1]["fixed"].all() and not first[:, 0].all()  # the condition frame is generated too
        from magvit.tasks import prefix_tokens

        task, cls = torch.zeros(2, dtype=torch.long) + model.vocab.task("fp"), torch.full((2,), model.vocab.uncond)
        prefix, positions = prefix_tokens(cond.tokens, cond.latent_mask)
        assert positions.tolist() == list(range(16))
        before = model(ids, task, cls, (prefix, positions))
        after = model(ids, task, cls, ((prefix + 1) % CODES, positions))
        assert not torch.allclose(before, after)  # the prefix is read
        with pytest.raises(MagvitError, match="needs prefix condition tokens"):
            model(ids, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))

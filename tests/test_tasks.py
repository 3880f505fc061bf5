"""Tasks: the COMMIT latent masks against MAGVIT's task table (section 4), the condition rules, paddings,
options, commit_inputs."""

import math

import numpy as np
import pytest
import torch

from magvit.errors import MagvitError
from magvit.schedules import mask_ratio
from magvit.tasks import TASKS, TaskOptions, build_task, commit_inputs, layout_of, prefix_tokens
from magvit.tasks.base import KIND_GIVEN
from magvit.tokenizers import build_tokenizer

VIDEO_TASKS = ["cg", "uncond", "fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cfp"]



@pytest.fixture(scope="module")
def tokenizers():
    return {name: build_tokenizer(name, "tiny") for name in ("vq3d", "causal3d", "vqgan2d")}


def table(task: str, t: int, h: int, w: int) -> torch.Tensor:
    """MAGVIT's task table on a (t, h, w) grid (rule any), written out at the latent level."""
    m = torch.zeros(t, h, w, dtype=torch.bool)
    mid_h, mid_w = slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 2)
    offsets = [round(i * (w // 2) / (t - 1)) for i in range(t)]  # left to right over the latent frames
    if task in ("fp", "cfp"):
        m[0] = True  # the first frame: latent frame 0
    elif task == "fi":
        m[0] = m[-1] = True  # first and last
    elif task == "opc":
        m[:, mid_h, mid_w] = True
    elif task == "opv":
        m[:, :, mid_w] = True
    elif task == "oph":
        m[:, mid_h, :] = True
    elif task == "opd":
        for i, o in enumerate(offsets):
            m[i, :, o : o + w // 2] = True
    elif task == "ipc":
        m[:] = True
        m[:, mid_h, mid_w] = False
    elif task == "ipd":
        m[:] = True
        for i, o in enumerate(offsets):
            m[i, mid_h, o : o + w // 2] = False
    return m


BLOCKS = {  # pixel frames [start, end) of each latent frame, written out from the papers' tokenizers
    "vq3d": [(0, 4), (4, 8), (8, 12), (12, 16)],  # MAGVIT: 16 frames -> 4, four frames each
    "causal3d": [(0, 1), (1, 5), (5, 9), (9, 13), (13, 17)],  # MAGVIT-v2: frame 0 alone, then four each
}


def brute_force_condition(given: torch.Tensor, blocks, f: int, rule: str) -> torch.Tensor:
    """given (T, H, W) pixels -> (t, h, w): a position whose block holds any (rule any) / only (all) given pixels."""
    t, h, w = len(blocks), given.shape[1] // f, given.shape[2] // f
    out = torch.zeros(t, h, w, dtype=torch.bool)
    for i, (a, b) in enumerate(blocks):
        for y in range(h):
            for x in range(w):
                block = given[a:b, f * y : f * (y + 1), f * x : f * (x + 1)]
                out[i, y, x] = bool(block.any() if rule == "any" else block.all())
    return out


@pytest.mark.parametrize("tokenizer, clip, grid", [("vq3d", (16, 64, 64), (4, 16, 16)),
                                                   ("causal3d", (17, 64, 64), (5, 16, 16))])
@pytest.mark.parametrize("task", VIDEO_TASKS)
def test_latent_mask_matches_the_table(tokenizers, tokenizer, clip, grid, task):
    tok = tokenizers[tokenizer]
    pixel_mask, latent_mask = build_task(task).masks(tok, 2, *clip)  # MAGVIT's rule (any) by default
    assert latent_mask.shape == (2, *grid) and pixel_mask.shape == (2, 1, *clip)
    assert torch.equal(latent_mask[0], table(task, *grid)) and torch.equal(latent_mask[1], latent_mask[0])
    assert torch.equal(latent_mask[0], brute_force_condition(pixel_mask[0, 0], BLOCKS[tokenizer], 4, "any"))
    if task in ("fp", "cfp"):  # BAIR's protocol: only the first frame is given
        assert pixel_mask[0, 0].flatten(1).any(1).tolist() == [True] + [False] * (clip[0] - 1)
    if task == "fi":  # MAGVIT: the first and the last frame, nothing between
        assert pixel_mask[0, 0].flatten(1).any(1).nonzero().flatten().tolist() == [0, clip[0] - 1]


def test_layouts_of_the_tiny_tokenizers(tokenizers):
    assert list(layout_of(tokenizers["vq3d"], 16, 64, 64).time_blocks) == BLOCKS["vq3d"]
    assert list(layout_of(tokenizers["causal3d"], 17, 64, 64).time_blocks) == BLOCKS["causal3d"]
    assert layout_of(tokenizers["vqgan2d"], 3, 32, 32).time_blocks == ((0, 1), (1, 2), (2, 3))


@pytest.mark.parametrize("tokenizer, clip", [("vq3d", (16, 64, 64)), ("causal3d", (17, 64, 64))])
@pytest.mark.parametrize("task", ["opc", "opv", "oph", "opd", "ipc", "ipd"])
def test_spatial_tasks_are_whole_tokens_so_both_rules_agree(tokenizers, tokenizer, clip, task):
    pixel_any, latent_any = build_task(task).masks(tokenizers[tokenizer], 1, *clip, rule="any")
    pixel_all, latent_all = build_task(task).masks(tokenizers[tokenizer], 1, *clip, rule="all")
    assert torch.equal(pixel_any, pixel_all) and torch.equal(latent_any, latent_all)
    assert torch.equal(latent_all[0], brute_force_condition(pixel_all[0, 0], BLOCKS[tokenizer], 4, "all"))


@pytest.mark.parametrize("tokenizer, frames, k, latent", [
    ("vq3d", 16, 1, [0]),  # BAIR: 1 frame given, 15 predicted
    ("vq3d", 16, 5, [0, 1]),  # Kinetics-600: 5 given, 11 predicted
    ("vq3d", 16, 12, [0, 1, 2]), ("causal3d", 17, 1, [0]), ("causal3d", 17, 2, [0, 1]),
    ("causal3d", 17, 5, [0, 1]), ("causal3d", 17, 13, [0, 1, 2, 3]), ("vqgan2d", 5, 3, [0, 1, 2]),
])
def test_frame_prediction_takes_any_number_of_frames(tokenizers, tokenizer, frames, k, latent):
    pixel_mask, latent_mask = build_task("fp").masks(tokenizers[tokenizer], 1, frames, 32, 32,
                                                     options=TaskOptions(cond_frames=k))
    assert latent_mask[0].flatten(1).any(1).nonzero().flatten().tolist() == latent
    assert torch.equal(latent_mask[0].flatten(1).all(1), latent_mask[0].flatten(1).any(1))  # whole latent frames
    assert pixel_mask[0, 0].flatten(1).all(1).tolist() == [True] * k + [False] * (frames - k)


@pytest.mark.parametrize("tokenizer, frames, rule", [("vq3d", 16, "any"), ("causal3d", 17, "any"),
                                                     ("causal3d", 17, "all")])
def test_interpolation_gives_the_first_and_last_frame(tokenizers, tokenizer, frames, rule):
    pixel_mask, latent_mask = build_task("fi").masks(tokenizers[tokenizer], 1, frames, 32, 32, rule=rule)
    assert pixel_mask[0, 0].flatten(1).any(1).nonzero().flatten().tolist() == [0, frames - 1]
    t = latent_mask.shape[1]
    expected = [0, t - 1] if rule == "any" else [0]  # strict: causal3d's last latent frame is not fully given
    assert latent_mask[0].flatten(1).any(1).nonzero().flatten().tolist() == expected


def test_the_strict_rule_keeps_only_fully_given_blocks(tokenizers):
    tok = tokenizers["vq3d"]
    _, strict = build_task("fp").masks(tok, 1, 16, 32, 32, rule="all", options=TaskOptions(cond_frames=6))
    assert strict[0].flatten(1).any(1).tolist() == [True, False, False, False]  # frames 4-5 do not fill block 1
    _, magvit = build_task("fp").masks(tok, 1, 16, 32, 32, rule="any", options=TaskOptions(cond_frames=6))
    assert magvit[0].flatten(1).any(1).tolist() == [True, True, False, False]
    default_pixels, default_strict = build_task("fp").masks(tok, 1, 16, 32, 32, rule="all")  # latent frame 0's frames
    assert default_pixels[0, 0].flatten(1).any(1).sum() == 4 and default_strict[0].flatten(1).any(1).sum() == 1
    with pytest.raises(MagvitError, match="with condition_rule=all the given pixels fill no whole token block"):
        build_task("fp").masks(tok, 1, 16, 32, 32, rule="all", options=TaskOptions(cond_frames=1))
    with pytest.raises(MagvitError, match="with condition_rule=all .* use condition_rule=any"):
        build_task("fi").masks(tok, 1, 16, 32, 32, rule="all")
    with pytest.raises(MagvitError, match="condition_rule must be one of any, all"):
        build_task("fp").masks(tok, 1, 16, 32, 32, rule="some")


@pytest.mark.parametrize("tokenizer, frames, k, match", [
    ("vq3d", 16, 13, "touch every token of the 4x8x8 grid"), ("vq3d", 16, 16, "from 1 to 15"),
    ("causal3d", 17, 14, "touch every token of the 5x8x8 grid"), ("vqgan2d", 4, 0, "from 1 to 3"),
    ("vq3d", 16, 2.5, "from 1 to 15"),
])
def test_impossible_cond_frames_is_one_clear_error(tokenizers, tokenizer, frames, k, match):
    with pytest.raises(MagvitError, match=f"task fp: .*{match}"):
        build_task("fp").masks(tokenizers[tokenizer], 1, frames, 32, 32, options=TaskOptions(cond_frames=k))
    with pytest.raises(MagvitError, match="task fi needs a clip of at least 2 latent frames"):
        build_task("fi").masks(tokenizers["causal3d"], 1, 1, 32, 32)
    with pytest.raises(MagvitError, match="task opc takes no option cond_frames"):
        build_task("opc").masks(tokenizers["causal3d"], 1, 17, 32, 32, options=TaskOptions(cond_frames=5))


def test_condition_encodes_the_padded_clip(tokenizers, digit_clips):
    tok = tokenizers["vq3d"]
    cond = build_task("fp").condition(digit_clips, tok, options=TaskOptions(cond_frames=4))  # rule: any
    assert torch.equal(cond.pixels[:, :, 4:], cond.pixels[:, :, 3:4].expand(-1, -1, 12, -1, -1))  # replicate last
    assert torch.equal(cond.pixels[:, :, :4], digit_clips[:, :, :4])
    assert torch.equal(cond.tokens, tok.encode(cond.pixels))
    assert cond.use_class is False and cond.refine is True
    none = build_task("cg").condition(digit_clips, tok)
    assert not none.latent_mask.any() and not none.pixel_mask.any() and none.use_class


def test_replicate_padding_of_a_box_is_edge_padding(tokenizers):
    video = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    cond = build_task("opc").condition(video, tokenizers["vqgan2d"])
    box = video[..., 8:24, 8:24].numpy()
    edge = np.pad(box, [(0, 0)] * 3 + [(8, 8), (8, 8)], mode="edge")
    assert np.array_equal(cond.pixels.numpy(), edge)


def test_interpolation_padding_is_linear_between_the_end_frames(tokenizers):
    video = torch.rand(1, 3, 16, 8, 8) * 2 - 1
    cond = build_task("fi").condition(video, tokenizers["vq3d"])
    a, b = video[:, :, 0], video[:, :, 15]  # the first and the last frame
    for j in range(16):
        assert torch.allclose(cond.pixels[:, :, j], a + j / 15 * (b - a), atol=1e-6)


def test_zero_padding_and_dynamic_tasks(tokenizers):
    video = torch.rand(1, 3, 17, 32, 32) + 0.5
    cond = build_task("ipd").condition(video, tokenizers["causal3d"])
    assert torch.equal(cond.pixels, video * cond.pixel_mask)
    assert (cond.pixels == 0).any() and cond.refine


def test_image_tasks_with_box_or_mask(tokenizers):
    tok = tokenizers["vqgan2d"]  # 32x32 -> 8x8, 4 pixels per token
    image = torch.rand(2, 3, 1, 32, 32) * 2 - 1
    edit = build_task("edit").condition(image, tok, options=TaskOptions(box=(8, 8, 8, 12)))
    generated = torch.zeros(8, 8, dtype=torch.bool)
    generated[1:5, 1:6] = True  # box tokens rows 2..3, cols 2..4, grown by one token
    assert torch.equal(edit.latent_mask[0, 0], ~generated) and edit.use_class and not edit.refine
    assert torch.equal(edit.pixels, image)  # editing encodes the image as it is
    # a per-sample pixel mask: sample 0 regenerates the left half, sample 1 one corner token
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[0, :, :16] = True
    mask[1, :4, :4] = True
    inpaint = build_task("inpaint").condition(image, tok, options=TaskOptions(mask=mask))
    assert inpaint.latent_mask.sum((1, 2, 3)).tolist() == [8 * 8 - 8 * 5, 8 * 8 - 4]
    assert torch.equal(inpaint.pixel_mask[:, 0, 0], ~mask)
    outpaint = build_task("outpaint").condition(image, tok, options=TaskOptions(box=(8, 8, 16, 16)))
    assert outpaint.latent_mask[0, 0].sum() == 2 * 2  # the kept 4x4 tokens shrink by one on each side
    for bad, match in [(dict(), "exactly one of box"), (dict(box=(0, 0, 40, 8)), "must lie inside"),
                       (dict(mask=torch.zeros(32, 32, dtype=torch.bool)), "marks nothing")]:
        with pytest.raises(MagvitError, match=match):
            build_task("inpaint").condition(image, tok, options=TaskOptions(**bad))


@pytest.mark.parametrize("with_condition", [True, False])
def test_commit_inputs(tokenizers, with_condition):
    b, shape, mask_id = 64, (4, 4, 4), 1000
    tokens = torch.randint(0, 256, (b, *shape))
    cond = build_task("fi").condition(torch.zeros(1, 3, 16, 16, 16), tokenizers["vq3d"])
    cond.latent_mask = cond.latent_mask.expand(b, -1, -1, -1)
    cond.tokens = torch.randint(256, 512, (b, *shape))  # distinguishable from the true tokens
    inputs, kinds = commit_inputs(tokens, cond if with_condition else None, mask_id, torch.Generator().manual_seed(5))
    # kinds: 0 keeps z, 1 shows z~ at a masked condition position, 2 shows MASK at a masked other one
    assert torch.equal(inputs[kinds == 0], tokens[kinds == 0])
    assert torch.equal(inputs[kinds == 2], torch.full_like(inputs[kinds == 2], mask_id))
    if with_condition:
        assert torch.equal(inputs[kinds == 1], cond.tokens[kinds == 1]) and (kinds == 1).any()
        assert cond.latent_mask[kinds == 1].all() and not cond.latent_mask[kinds == 2].any()
    else:
        assert not (kinds == 1).any()
    # per sample: max(1, floor(N cos(pi r / 2))) masked, r ~ U[0, 1) the generator's first draw
    r = torch.rand(b, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = [max(1, math.floor(64 * float(mask_ratio("cosine", x, 64)))) for x in r]
    assert (kinds > 0).flatten(1).sum(1).tolist() == expected
    again = commit_inputs(tokens, cond if with_condition else None, mask_id, torch.Generator().manual_seed(5))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], kinds)


def test_every_task_is_registered():
    assert set(TASKS.names()) == set(VIDEO_TASKS) | {"edit", "inpaint", "outpaint"}
    assert all(build_task(name).name == name for name in TASKS.names())


def test_latent_masking_never_masks_the_condition(tokenizers):
    """MaskGIT's latent masking: condition positions show z~ and are never masked; the mask is drawn
    over the other N' positions, floor(N' gamma(r)) of them."""
    b, shape, mask_id = 32, (4, 4, 4), 1000
    tokens = torch.randint(0, 256, (b, *shape))
    cond = build_task("fp").condition(torch.zeros(1, 3, 16, 16, 16), tokenizers["vq3d"])  # latent frame 0
    cond.latent_mask = cond.latent_mask.expand(b, -1, -1, -1)
    cond.tokens = torch.randint(256, 512, (b, *shape))
    inputs, kinds = commit_inputs(tokens, cond, mask_id, torch.Generator().manual_seed(5), conditioning="latent")
    assert (kinds[:, 0] == KIND_GIVEN).all() and torch.equal(inputs[:, 0], cond.tokens[:, 0])
    assert not (kinds[:, 1:] == KIND_GIVEN).any() and not (kinds == 1).any()
    r = torch.rand(b, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = [max(1, math.floor(48 * float(mask_ratio("cosine", x, 64)))) for x in r]
    assert (kinds == 2).flatten(1).sum(1).tolist() == expected
    prefix_inputs, prefix_kinds = commit_inputs(tokens, cond, mask_id, torch.Generator().manual_seed(5),
                                                conditioning="prefix")
    plain = commit_inputs(tokens, None, mask_id, torch.Generator().manual_seed(5))
    assert torch.equal(prefix_inputs, plain[0]) and torch.equal(prefix_kinds, plain[1])  # MVTM on the latent
    ids, positions = prefix_tokens(cond.tokens, cond.latent_mask)
    assert positions.tolist() == list(range(16)) and torch.equal(ids, cond.tokens[:, 0].flatten(1))

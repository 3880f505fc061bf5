"""Tokenizer contract, causality, inflation, release weights, and that each tiny one can learn."""

import json

import pytest
import torch
import torch.nn.functional as F

from magvit.data import MovingDigits
from magvit.errors import MagvitError
from magvit.metrics import psnr
from magvit.tokenizers import Tokenizer, VQ3d, VQGAN2d, build_tokenizer

QUANTIZERS = {
    "vq": {"name": "vq", "codebook_size": 64, "dim": 8},
    "lfq": {"name": "lfq", "bits": 8},
    "fsq": {"name": "fsq", "levels": [8, 5, 5]},
}


# (frames of a clip the tokenizer tiles, frames of a second shape: an image where it takes one)
FRAMES = {"vqgan2d": (3, 1), "vq3d": (8, 4), "causal3d": (5, 1)}


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialised convs included), so equalities are not trivial."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.ndim > 1 else 0.05)
    return model


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("name", FRAMES)
def test_shape_contract(name, quantizer):
    tok = build_tokenizer(name, "tiny", quantizer=QUANTIZERS[quantizer]).eval()
    for frames in FRAMES[name]:
        video = torch.rand(2, 3, frames, 32, 16) * 2 - 1
        ids = tok.encode(video)
        assert ids.shape == (2, *tok.token_shape(frames, 32, 16)) and ids.dtype == torch.int64
        assert 0 <= ids.min() and ids.max() < tok.codebook_size
        recon = tok.decode(ids)
        assert recon.shape == video.shape
        out = tok(video)
        assert torch.equal(out.ids, ids) and torch.allclose(out.recon, recon, atol=1e-5)
    codes = tok.code_embeddings()
    assert codes.shape == (tok.codebook_size, tok.quantizer.dim)
    assert torch.allclose(tok.embed_ids(ids)[:, :, 0, 0, 0], codes[ids[:, 0, 0, 0]])


def test_token_shapes_of_the_base_presets_follow_the_papers():
    assert build_tokenizer("vq3d", "tiny").token_shape(16, 32, 32) == (4, 8, 8)
    assert build_tokenizer("causal3d", "tiny").token_shape(17, 32, 32) == (5, 8, 8)
    assert build_tokenizer("causal3d", "tiny").token_shape(1, 32, 32) == (1, 8, 8)
    assert build_tokenizer("vqgan2d", "tiny").token_shape(1, 32, 32) == (1, 8, 8)


def test_shapes_that_cannot_tile_are_one_clear_error():
    tok = build_tokenizer("causal3d", "tiny")
    with pytest.raises(MagvitError) as info:
        tok.encode(torch.zeros(1, 3, 15, 32, 32))
    assert str(info.value) == "causal3d needs 1 + 4k frames, got 15: use 13 or 17"
    with pytest.raises(MagvitError, match="vq3d needs frames divisible by 4, got 6"):
        build_tokenizer("vq3d", "tiny").token_shape(6, 32, 32)
    with pytest.raises(MagvitError, match="height divisible by 4, got 30"):
        build_tokenizer("vqgan2d", "tiny").encode(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(MagvitError, match=r"takes video \(B, 3, T, H, W\)"):
        build_tokenizer("vqgan2d", "tiny").encode(torch.zeros(1, 3, 32, 32))


@pytest.fixture(scope="module")
def causal():
    torch.manual_seed(0)
    return _randomise(build_tokenizer("causal3d", "tiny")).eval()


def test_causal3d_tokenizes_an_image_like_the_first_frame_of_a_clip(causal):
    clip = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        first = causal.encode_latent(clip[:, :, :1])
        whole = causal.encode_latent(clip)
    assert first.shape[2] == 1 and whole.shape[2] == 3
    assert torch.allclose(first[:, :, 0], whole[:, :, 0], atol=1e-5)
    assert torch.equal(causal.encode(clip[:, :, :1])[:, 0], causal.encode(clip)[:, 0])


@pytest.mark.parametrize("latent_frame", [0, 1])
def test_causal3d_encoder_and_decoder_never_look_ahead(causal, latent_frame):
    """Latent frame j sees input frames <= 4j; output frame n sees latent frames <= ceil(n / 4)."""
    clip = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    later = clip.clone()
    later[:, :, 4 * latent_frame + 1 :] = torch.rand_like(later[:, :, 4 * latent_frame + 1 :]) * 2 - 1
    with torch.no_grad():
        z, z_later = causal.encode_latent(clip), causal.encode_latent(later)
    keep = latent_frame + 1
    assert torch.allclose(z[:, :, :keep], z_later[:, :, :keep], atol=1e-5)
    assert not torch.allclose(z[:, :, keep:], z_later[:, :, keep:], atol=1e-3)  # the test can fail
    assert torch.equal(causal.encode(clip)[:, :keep], causal.encode(later)[:, :keep])

    ids = causal.encode(clip)
    changed = ids.clone()
    changed[:, keep:] = torch.randint(0, causal.codebook_size, changed[:, keep:].shape)
    with torch.no_grad():
        video, video_changed = causal.decode(ids), causal.decode(changed)
    shown = 1 + 4 * latent_frame  # output frames 0 .. 4j only need latent frames 0 .. j
    assert torch.allclose(video[:, :, :shown], video_changed[:, :, :shown], atol=1e-5)
    assert not torch.allclose(video[:, :, shown:], video_changed[:, :, shown:], atol=1e-3)


def test_central_inflation_reconstructs_a_static_clip_like_the_2d_model():
    torch.manual_seed(0)
    model_2d = _randomise(build_tokenizer("vqgan2d", "tiny")).eval()
    frame = torch.rand(2, 3, 1, 32, 32) * 2 - 1
    static = frame.expand(-1, -1, 8, -1, -1)  # one frame repeated
    model_3d = build_tokenizer("vq3d", "tiny").inflate_from(model_2d, mode="central").eval()
    with torch.no_grad():
        out_2d, out_3d = model_2d(frame), model_3d(static)
    assert torch.allclose(out_3d.recon, out_2d.recon.expand_as(out_3d.recon), atol=1e-4)
    assert torch.equal(out_3d.ids, out_2d.ids.expand_as(out_3d.ids))
    averaged = build_tokenizer("vq3d", "tiny").inflate_from(model_2d, mode="average").eval()
    with torch.no_grad():  # averaging is not exact at the clip's borders (zero temporal padding)
        assert not torch.allclose(averaged(static).recon, out_3d.recon, atol=1e-3)
    with pytest.raises(MagvitError, match="same architecture"):
        build_tokenizer("vq3d", "tiny", channels=8).inflate_from(model_2d)


@pytest.mark.parametrize("name", FRAMES)
def test_release_weights_round_trip(name, tmp_path):
    tok = _randomise(build_tokenizer(name, "tiny")).eval()
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    loaded = Tokenizer.from_pretrained(tmp_path / "tok").eval()
    assert type(loaded) is type(tok) and loaded.config == tok.config
    video = torch.rand(1, 3, FRAMES[name][0], 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(video).recon, tok(video).recon)


def test_mismatched_release_weights_are_one_clear_error(tmp_path):
    build_tokenizer("vqgan2d", "tiny").save_pretrained(tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / "config.json").read_text())
    meta["config"]["channels"] = 32
    (tmp_path / "tok" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(MagvitError) as info:
        Tokenizer.from_pretrained(tmp_path / "tok")
    assert "\n" not in str(info.value) and "weights do not match the config" in str(info.value)
    build_tokenizer("vqgan2d", "tiny").save_pretrained(tmp_path / "ok")
    with pytest.raises(MagvitError, match="not a VQ3d"):
        VQ3d.from_pretrained(tmp_path / "ok")
    assert isinstance(VQGAN2d.from_pretrained(tmp_path / "ok"), VQGAN2d)
    with pytest.raises(MagvitError, match="config.json: not found"):
        Tokenizer.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# Where time is halved: MAGVIT's first two downsamplings ("early") or MAGVIT-v2's last two ("late")

# three downsamplings, small enough for CPU: 17x16x16 -> 5x2x2 tokens, 2^6 codes
THREE_DOWN = dict(channels=8, multipliers=(1, 2, 2, 2), num_res_blocks=1, quantizer={"name": "lfq", "bits": 6})


def test_placement_names_resolve_to_one_flag_per_downsampling():
    def flags(name, preset, **options):
        return build_tokenizer(name, preset, **{**THREE_DOWN, **options}).spec.temporal_downsample

    assert flags("causal3d", "small") == flags("causal3d", "base") == (False, True, True)  # presets: late
    assert flags("vq3d", "base") == flags("vq3d", "large") == (True, True, False)  # MAGVIT's own choice
    assert flags("causal3d", "base", temporal_downsample="early") == (True, True, False)
    assert flags("vq3d", "base", temporal_downsample="late") == (False, True, True)
    four = dict(multipliers=(1, 1, 2, 2, 2))
    assert flags("causal3d", "base", temporal_downsample="late", **four) == (False, False, True, True)
    assert flags("causal3d", "base", temporal_downsample=[True, False, True]) == (True, False, True)
    for name in ("causal3d", "vq3d"):  # two downsamplings, both temporal: the names agree with the flags
        tiny = build_tokenizer(name, "tiny")
        assert tiny.spec.temporal_downsample == (True, True)
        for placement in ("early", "late"):
            assert build_tokenizer(name, "tiny", temporal_downsample=placement).spec == tiny.spec


@pytest.fixture(scope="module")
def placements():
    """A randomised 3-downsampling causal3d per placement."""
    torch.manual_seed(0)
    return {
        p: _randomise(build_tokenizer("causal3d", "base", **THREE_DOWN, temporal_downsample=p)).eval()
        for p in ("early", "late")
    }


@pytest.mark.parametrize("placement", ["early", "late"])
def test_either_placement_tiles_17_frames_into_5_and_round_trips(placements, placement):
    tok = placements[placement]
    for frames, latent in ((17, 5), (9, 3), (1, 1)):
        video = torch.rand(2, 3, frames, 16, 16) * 2 - 1
        assert tok.token_shape(frames, 16, 16) == (latent, 2, 2)
        with torch.no_grad():
            ids = tok.encode(video)
            assert ids.shape == (2, latent, 2, 2)
            assert tok.decode(ids).shape == video.shape
    vq3d = build_tokenizer("vq3d", "base", **THREE_DOWN, temporal_downsample=placement).eval()
    with torch.no_grad():
        ids = vq3d.encode(torch.rand(1, 3, 16, 16, 16) * 2 - 1)
        assert ids.shape == (1, 4, 2, 2) and vq3d.decode(ids).shape == (1, 3, 16, 16, 16)


@pytest.mark.parametrize("placement", ["early", "late"])
def test_either_placement_tokenizes_an_image_like_the_first_frame(placements, placement):
    tok, clip = placements[placement], torch.rand(2, 3, 17, 16, 16) * 2 - 1
    with torch.no_grad():
        first, whole = tok.encode_latent(clip[:, :, :1]), tok.encode_latent(clip)
    assert torch.allclose(first[:, :, 0], whole[:, :, 0], atol=1e-5)
    assert torch.equal(tok.encode(clip[:, :, :1])[:, 0], tok.encode(clip)[:, 0])


@pytest.mark.parametrize("latent_frame", [0, 1, 3])
@pytest.mark.parametrize("placement", ["early", "late"])
def test_either_placement_is_causal_with_the_same_bounds(placements, placement, latent_frame):
    """Encoder: a causal stride-2 conv's output frame t sees input frames <= 2t; two of them, early
    or late, make latent frame j see input frames <= 4j, and frame 4j itself (the bound is tight).
    Decoder: output frame n sees latent frames <= ceil(n / 4), so frames <= 4j need latents <= j."""
    tok, j = placements[placement], latent_frame
    clip = torch.rand(1, 3, 17, 16, 16) * 2 - 1
    later, at_bound = clip.clone(), clip.clone()
    later[:, :, 4 * j + 1 :] = torch.rand_like(later[:, :, 4 * j + 1 :]) * 2 - 1
    at_bound[:, :, 4 * j] = torch.rand_like(at_bound[:, :, 4 * j]) * 2 - 1
    with torch.no_grad():
        z, z_later, z_bound = (tok.encode_latent(v) for v in (clip, later, at_bound))
    assert torch.allclose(z[:, :, : j + 1], z_later[:, :, : j + 1], atol=1e-5)
    assert not torch.allclose(z[:, :, j + 1 :], z_later[:, :, j + 1 :], atol=1e-3)
    assert not torch.allclose(z[:, :, j], z_bound[:, :, j], atol=1e-3)
    assert torch.allclose(z[:, :, :j], z_bound[:, :, :j], atol=1e-5)

    ids = tok.encode(clip)
    changed = ids.clone()
    changed[:, j + 1 :] = (changed[:, j + 1 :] + 1 + torch.randint_like(changed[:, j + 1 :], 60)) % 64
    with torch.no_grad():
        video, video_changed = tok.decode(ids), tok.decode(changed)
    shown = 4 * j + 1
    assert torch.allclose(video[:, :, :shown], video_changed[:, :, :shown], atol=1e-5)
    assert not torch.allclose(video[:, :, shown], video_changed[:, :, shown], atol=1e-3)


def test_a_wrong_placement_is_one_clear_error(tmp_path):
    from magvit.errors import ConfigError
    from magvit.kinds import load_config
    from magvit.tokenizers import Causal3d, Causal3dConfig

    config = tmp_path / "c.yaml"
    config.write_text("kind: train_tokenizer\ntokenizer: {name: causal3d, preset: tiny}\ndata: {name: moving_digits}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, ["tokenizer.temporal_downsample=middle"])
    message = str(info.value)
    assert "\n" not in message and "'tokenizer.temporal_downsample'" in message and "'middle'" in message
    assert load_config(config, ["tokenizer.temporal_downsample=late"]).tokenizer.temporal_downsample == "late"
    with pytest.raises(MagvitError, match=r"^causal3d temporal_downsample must be 'early' or 'late' or one flag"):
        Causal3d(Causal3dConfig(**THREE_DOWN, temporal_downsample="middle"))
    with pytest.raises(MagvitError, match=r"needs one flag per downsampling \(3\), got \[True, True\]"):
        build_tokenizer("causal3d", "base", **THREE_DOWN, temporal_downsample=[True, True])
    with pytest.raises(MagvitError, match="has 1: give one flag per downsampling"):
        build_tokenizer("causal3d", "tiny", multipliers=(1, 2), temporal_downsample="late")


def test_saved_flags_and_saved_names_both_load(tmp_path):
    """Release folders from before the names hold flags; new ones hold the name as configured."""
    for placement in ((False, True, True), "late"):
        tok = _randomise(build_tokenizer("causal3d", "base", **THREE_DOWN, temporal_downsample=placement)).eval()
        folder = tok.save_pretrained(tmp_path / str(placement))
        saved = json.loads((folder / "config.json").read_text())["config"]["temporal_downsample"]
        assert saved == (list(placement) if isinstance(placement, tuple) else placement)
        loaded = Tokenizer.from_pretrained(folder).eval()
        assert loaded.spec.temporal_downsample == (False, True, True)
        video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
        with torch.no_grad():
            assert torch.equal(loaded(video).recon, tok(video).recon)


# ---------------------------------------------------------------------------------------------
# Each tiny tokenizer can learn: overfit two 16x16 moving-digit clips to >= 24 dB PSNR


OVERFIT = {  # name: (frames, optimizer steps); each reaches 24 dB in at most 75% of its steps. Measured at
    # 16x16, checked every 10 steps, seeds 0 / 1 / 2: vqgan2d at 110 / 150 / 150 steps, vq3d at 140 / 150 / 140,
    # causal3d at 80 / 70 / 100; at the last step the worst of the three seeds is 27.3, 27.4 and 30.3 dB
    "vqgan2d": (4, 200),
    "vq3d": (4, 200),
    "causal3d": (5, 140),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", OVERFIT)
def test_each_tiny_tokenizer_overfits_moving_digits(name):
    frames, steps = OVERFIT[name]
    torch.manual_seed(0)
    dataset = MovingDigits(frames=frames, size=16, num_samples=2, seed=1)
    clips = torch.stack([dataset[i]["video"] for i in range(2)])  # (2, 3, T, 16, 16) in [-1, 1]
    tok = build_tokenizer(name, "tiny")
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3, betas=(0.9, 0.99))
    for _ in range(steps):
        out = tok(clips)
        loss = F.mse_loss(out.recon, clips) + out.quant.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tok.eval()
    with torch.no_grad():
        recon = tok.decode(tok.encode(clips)).clamp(-1, 1)
    score = psnr(recon, clips).min().item()
    assert score >= 24.0, f"{name} reached only {score:.2f} dB after {steps} steps"

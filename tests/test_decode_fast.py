"""The static-shape decode loop and its fast paths compute what the reference loop computes.

`reference_decode` below is the loop as it was before the static-shape rewrite (per-step schedule
counts, Python-float weights, the noise drawn inside the step): an oracle. The new loop, its
compiled step (inductor on CPU) and the CUDA-graph replay protocol (emulated on CPU: the capture
itself needs a GPU) must return exactly its ids, seed for seed.
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import magvit.decode as decode_module
from magvit.bench.decode import bench_decode
from magvit.decode import DecodeConfig, GraphedStep, decode, decode_step, masked_counts
from magvit.errors import MagvitError
from magvit.schedules import MASK_SCHEDULES, mask_ratio
from magvit.tasks import TASKS, TaskOptions, build_task, prefix_tokens
from magvit.transformer import build_transformer, merge_ids

CODES = 64

# ---------------------------------------------------------------------------------------------
# The reference loop (frozen)


# The loop's helpers, frozen as written from the papers (not imported: an oracle that calls the code it
# checks cannot catch its bugs). MaskGIT section 3.2: tau_s = tau (1 - (s + 1) / T); guidance ramps
# over p = (s + 1) / T; top-k / top-p keep the k largest logits and the smallest set of mass >= p.


def _ref_guidance(cfg, step):
    p = (step + 1) / cfg.steps
    ramp = {"constant": 1.0, "linear": p, "cosine": (1 - math.cos(math.pi * p)) / 2}[cfg.guidance_schedule]
    return cfg.guidance * ramp


def _ref_choice_tau(cfg, step):
    return cfg.choice_temperature * (1 - (step + 1) / cfg.steps)


def _ref_filter(logits, top_k, top_p):
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.sort(logits, dim=-1, descending=True).values[..., top_k - 1 : top_k]
        logits = torch.where(logits < kth, torch.full_like(logits, -math.inf), logits)
    if top_p is not None and top_p < 1:
        order = logits.argsort(dim=-1, descending=True, stable=True)
        probs = logits.gather(-1, order).softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = torch.where(drop, torch.full_like(logits, -math.inf), logits)
    return logits


def _ref_class_ids(model, task, classes, batch, device):
    if not TASKS.build(task).use_class:
        return torch.full((batch,), model.vocab.uncond, device=device)
    return model.vocab.cls(torch.as_tensor(classes, device=device).long().reshape(-1).expand(batch))


def _ref_condition(cond, shape, batch, device):
    n = shape[0] * shape[1] * shape[2]
    if cond is None:
        return (torch.zeros(batch, n, dtype=torch.long, device=device),
                torch.zeros(batch, n, dtype=torch.bool, device=device), True)
    z = cond.tokens.to(device).reshape(cond.tokens.shape[0], n).expand(batch, -1)
    where = cond.latent_mask.to(device).reshape(cond.latent_mask.shape[0], n).expand(batch, -1)
    return z, where, cond.refine


def _ref_gumbel(shape, generator, device):
    u = torch.rand(shape, generator=generator, device=generator.device).to(device).clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def _ref_sample(logits, temperature, top_k, top_p, generator):
    if temperature == 0:
        return logits.argmax(-1)
    scaled = _ref_filter(logits / temperature, top_k, top_p)
    return (scaled + _ref_gumbel(tuple(scaled.shape), generator, scaled.device)).argmax(-1)


def _ref_masked_after(unknown, step, cfg, num_tokens):
    if step == cfg.steps - 1:
        return torch.zeros_like(unknown)
    gamma = float(mask_ratio(cfg.schedule, (step + 1) / cfg.steps, num_tokens))
    n = torch.floor(unknown.double() * gamma).long()
    return torch.minimum(n, unknown - 1).clamp(min=1).where(unknown > 0, 0)


def _ref_logits(model, inputs, task_ids, cls_ids, weight, prefix=None):
    extra = () if prefix is None else (prefix,)
    if weight == 0:
        return model(inputs, task_ids, cls_ids, *extra)
    uncond = torch.full_like(cls_ids, model.vocab.uncond)
    if prefix is not None:
        extra = ((torch.cat([prefix[0], prefix[0]]), prefix[1]),)
    both = model(torch.cat([inputs, inputs]), torch.cat([task_ids, task_ids]), torch.cat([cls_ids, uncond]), *extra)
    c, u = both.chunk(2)
    return c + weight * (c - u)


@torch.no_grad()
def reference_decode(model, cond, task, classes, shape, batch, cfg, generator, trace=False):
    device = next(model.parameters()).device
    t, h, w = shape
    n = t * h * w
    mask = model.vocab.mask
    task_ids = torch.full((batch,), model.vocab.task(task), device=device)
    cls_ids = _ref_class_ids(model, task, classes, batch, device)
    z_cond, is_cond, refine = _ref_condition(cond, shape, batch, device)
    conditioning = getattr(model.config, "conditioning", "commit")
    prefix = None
    if conditioning == "prefix":
        prefix = prefix_tokens(z_cond, is_cond)
        is_cond = torch.zeros_like(is_cond)
    elif conditioning == "latent":
        refine = False
    fixed = is_cond.clone() if not refine else torch.zeros_like(is_cond)
    ids = torch.where(fixed, z_cond, mask)
    unknown = (~fixed).sum(1)
    steps = []
    was_training = model.training
    model.eval()
    try:
        for s in range(cfg.steps):
            inputs = torch.where(fixed | ~is_cond, ids, z_cond)
            logits = _ref_logits(model, inputs.view(batch, t, h, w), task_ids, cls_ids, _ref_guidance(cfg, s), prefix)
            logits = rearrange(logits, "b t h w k v -> b (t h w) k v")
            sub = _ref_sample(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)
            sampled = merge_ids(sub, model.bits_per)
            confidence = F.log_softmax(logits, -1).gather(-1, sub.unsqueeze(-1)).squeeze(-1).sum(-1)
            score = confidence + _ref_choice_tau(cfg, s) * _ref_gumbel((batch, n), generator, device)
            score = score.masked_fill(fixed, math.inf)
            still = _ref_masked_after(unknown, s, cfg, n)
            rank = score.argsort(dim=1, stable=True).argsort(dim=1)
            newly = ~fixed & (rank >= still[:, None])
            ids = torch.where(newly, sampled, ids)
            fixed = fixed | newly
            if trace:
                steps.append({"masked": (~fixed).sum(1), "scheduled": still, "fixed": fixed.view(batch, t, h, w),
                              "ids": ids.view(batch, t, h, w)})
    finally:
        model.train(was_training)
    out = ids.view(batch, t, h, w)
    return (out, steps) if trace else out


# ---------------------------------------------------------------------------------------------
# Fixtures


class StandIn:
    """A tokenizer stand-in with causal3d's token grid (4x in space; frame 0 alone, then groups of 4)
    and a cheap deterministic encode: the mean of each block, quantised to CODES levels."""

    codebook_size = CODES

    def token_shape(self, frames, height, width):
        return 1 + (frames - 1) // 4, height // 4, width // 4

    def encode(self, video):
        t, h, w = self.token_shape(*video.shape[2:])
        pooled = F.adaptive_avg_pool3d(video.mean(1, keepdim=True), (t, h, w))[:, 0]
        return ((pooled + 1) / 2 * (CODES - 1)).round().long().clamp(0, CODES - 1)


def tiny(**kw):
    torch.manual_seed(0)
    options = dict(codebook_size=CODES, width=32, heads=2, grid=(3, 4, 4), num_classes=3) | kw
    return build_transformer("tiny", **options)


@pytest.fixture(scope="module")
def model():
    return tiny()


def condition(task, batch=2):
    image = task in ("edit", "inpaint", "outpaint")
    video = torch.rand(batch, 3, 1 if image else 9, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return build_task(task).condition(video, StandIn(), options=TaskOptions(box=(4, 4, 8, 4) if image else None))


def case(task, **decode_options):
    """(task, condition, classes, shape, DecodeConfig) for a decode call on the tiny model."""
    cond = None if task in ("uncond", "cg") else condition(task)
    shape = (2, 4, 4) if cond is None else tuple(cond.tokens.shape[1:])
    classes = torch.tensor([0, 2]) if TASKS.build(task).use_class else None
    return task, cond, classes, shape, DecodeConfig(**decode_options)


def run(fn, model, task, cond, classes, shape, cfg, seed=0, trace=True):
    return fn(model, cond, task, classes, shape, 2, cfg, torch.Generator().manual_seed(seed), trace=trace)


def assert_same(new, ref):
    (ids, trace), (ref_ids, ref_trace) = new, ref
    assert torch.equal(ids, ref_ids)
    assert len(trace) == len(ref_trace)
    for a, b in zip(trace, ref_trace):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CASES = {
    "uncond": case("uncond", steps=5),
    "uncond greedy": case("uncond", steps=4, temperature=0.0),
    "uncond no Gumbel": case("uncond", steps=4, temperature=0.0, choice_temperature=0.0),
    "cg guided constant": case("cg", steps=4, guidance=2.0),
    "cg guided linear top-p": case("cg", steps=5, temperature=0.7, top_p=0.8, guidance=1.5, guidance_schedule="linear"),
    "cg guided cosine top-k": case("cg", steps=3, top_k=8, guidance=3.0, guidance_schedule="cosine"),
    "fp COMMIT refine top-k": case("fp", steps=5, temperature=0.7, top_k=10),
    "fp COMMIT greedy": case("fp", steps=3, temperature=0.0),
    "inpaint fixed condition top-p": case("inpaint", steps=4, top_p=0.9),
    "outpaint fixed condition": case("outpaint", steps=6, temperature=1.3, top_k=5, top_p=0.95),
    "edit guided": case("edit", steps=4, guidance=1.0, guidance_schedule="linear"),
    "cfp COMMIT guided top-k top-p": case("cfp", steps=3, temperature=0.7, top_k=10, top_p=0.9, guidance=1.5,
                                          guidance_schedule="linear"),
    "opc square schedule": case("opc", steps=4, schedule="square"),
}


# ---------------------------------------------------------------------------------------------
# The static loop == the reference loop


@pytest.mark.parametrize("name", CASES)
def test_static_loop_returns_the_reference_ids(model, name):
    task, cond, classes, shape, cfg = CASES[name]
    assert cond is None or cond.refine == (task not in ("inpaint", "outpaint", "edit"))
    for seed in (0, 1):
        assert_same(run(decode, model, task, cond, classes, shape, cfg, seed),
                    run(reference_decode, model, task, cond, classes, shape, cfg, seed))
    assert model.training  # restored


@pytest.mark.parametrize("steps", [3, 40])  # 40 steps > 32 tokens: gamma reaches 1 early for log
@pytest.mark.parametrize("schedule", MASK_SCHEDULES.names())
def test_every_schedule_gives_the_reference_counts(model, schedule, steps):
    cfg = DecodeConfig(steps=steps, schedule=schedule)
    assert_same(run(decode, model, "uncond", None, None, (2, 4, 4), cfg),
                run(reference_decode, model, "uncond", None, None, (2, 4, 4), cfg))
    unknown = torch.tensor([0, 1, 2, 7, 32, 1024])
    expected = torch.stack([_ref_masked_after(unknown, s, cfg, 1024) for s in range(steps)])
    assert torch.equal(masked_counts(unknown, cfg, 1024), expected)


@pytest.mark.parametrize("options", [dict(sub_tokens=2, codebook_size=2**8), dict(conditioning="prefix"),
                                     dict(conditioning="latent")], ids=["factorised", "prefix", "latent"])
def test_other_vocabularies_and_conditionings_give_the_reference_ids(options):
    model = tiny(**options)
    for task, cond, classes, shape, cfg in (CASES["fp COMMIT refine top-k"], CASES["cg guided linear top-p"]):
        assert_same(run(decode, model, task, cond, classes, shape, cfg),
                    run(reference_decode, model, task, cond, classes, shape, cfg))


# ---------------------------------------------------------------------------------------------
# No host sync in a step; torch.compile


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def step_inputs(model, task, cond, classes, shape, cfg, guided):
    """The first step's inputs, built as `decode` builds them."""
    calls = []

    def spy(*tensors):
        calls.append(tensors)
        return decode_step(model, cfg, shape, guided, *tensors)

    original = decode_module.step_function
    decode_module.step_function = lambda *args: spy
    try:
        run(decode, model, task, cond, classes, shape, cfg, trace=False)
    finally:
        decode_module.step_function = original
    return calls[0]


@pytest.mark.parametrize("name, conditioning", [("cfp COMMIT guided top-k top-p", "commit"),
                                                ("cfp COMMIT guided top-k top-p", "prefix"),
                                                ("uncond greedy", "commit")])
def test_a_step_is_one_graph_without_host_syncs(fresh_dynamo, name, conditioning):
    """fullgraph=True fails on any graph break: a .item(), a branch on a tensor's value, a
    data-dependent shape (nonzero, boolean indexing) inside the step."""
    model = tiny(conditioning=conditioning).eval()
    task, cond, classes, shape, cfg = CASES[name]
    guided = cfg.guidance != 0
    tensors = step_inputs(model, task, cond, classes, shape, cfg, guided)
    traced = torch.compile(decode_step, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        got = traced(model, cfg, shape, guided, *tensors)
        want = decode_step(model, cfg, shape, guided, *tensors)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_a_host_sync_would_break_the_graph(fresh_dynamo):
    """The check above can fail: the same trace with one .item() in the step raises."""

    def synced(*args):
        ids, fixed = decode_step(*args)
        return ids + int(fixed.sum().item() > 0), fixed

    model = tiny().eval()
    task, cond, classes, shape, cfg = CASES["uncond"]
    tensors = step_inputs(model, task, cond, classes, shape, cfg, False)
    with torch.no_grad(), pytest.raises(Exception, match="(?i)graph break|item|data-dependent"):
        torch.compile(synced, fullgraph=True, backend="eager", dynamic=False)(model, cfg, shape, False, *tensors)


def test_compiled_decode_returns_the_eager_ids(fresh_dynamo, model):
    """Inductor on CPU; one setting that takes every branch of the step (COMMIT condition, guidance,
    temperature, top-k and top-p): each compile costs seconds."""
    task, cond, classes, shape, cfg = CASES["cfp COMMIT guided top-k top-p"]
    compiled = DecodeConfig(**{**cfg.__dict__, "compile": True})
    eager = run(decode, model, task, cond, classes, shape, cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = run(decode, model, task, cond, classes, shape, compiled)
    assert not [w for w in caught if "decode:" in str(w.message)]  # compiled, no fallback
    assert_same(first, eager)
    assert_same(run(decode, model, task, cond, classes, shape, compiled, seed=1),
                run(decode, model, task, cond, classes, shape, cfg, seed=1))


@pytest.fixture
def fake_compile(monkeypatch):
    """`fake_compile(make)` stands in `make(fn)` for torch.compile(fn); the real one is back afterwards."""

    def use(make):
        monkeypatch.setattr(torch, "compile", lambda fn, **kw: make(fn))
        decode_module.compiled_decode_step.cache_clear()

    yield use
    decode_module.compiled_decode_step.cache_clear()


def broken(fn):
    def fail(*args, **kwargs):
        raise RuntimeError("backend 'inductor' is unavailable: no C++ compiler\nsecond line")

    return fail


def test_a_failing_compile_warns_once_and_decodes_eagerly(model, fake_compile):
    fake_compile(broken)
    task, cond, classes, shape, cfg = CASES["fp COMMIT refine top-k"]
    with pytest.warns(UserWarning) as caught:
        got = run(decode, model, task, cond, classes, shape, DecodeConfig(**{**cfg.__dict__, "compile": True}))
    assert len(caught) == 1  # one warning for the whole loop, not one per step
    message = str(caught[0].message)
    assert "\n" not in message and "torch.compile failed" in message and "inductor" in message
    assert_same(got, run(decode, model, task, cond, classes, shape, cfg))


# ---------------------------------------------------------------------------------------------
# CUDA graphs: the option, and the replay protocol (the capture needs a GPU)


def test_cuda_graph_on_cpu(model):
    task, cond, classes, shape, cfg = CASES["uncond"]
    with pytest.raises(MagvitError, match="cuda_graph needs the model on a CUDA device, it is on cpu"):
        run(decode, model, task, cond, classes, shape, DecodeConfig(steps=2, cuda_graph=True))
    ref = run(decode, model, task, cond, classes, shape, cfg)
    for auto_or_off in (None, False):  # auto on a CPU: eager
        assert_same(run(decode, model, task, cond, classes, shape, DecodeConfig(**{**cfg.__dict__,
                                                                                   "cuda_graph": auto_or_off})), ref)


class CpuReplay(GraphedStep):
    """A GraphedStep whose 'graph' re-runs the step on the static buffers and overwrites the static
    outputs in place, as a replay does: everything of the CUDA path but the capture."""

    captures = 0

    def capture(self, step, device):
        CpuReplay.captures += 1
        self.step = step
        return step(*self.inputs)

    def replay(self):
        for out, new in zip(self.outputs, self.step(*self.inputs)):
            out.copy_(new)


def test_graph_replay_protocol_and_reuse(monkeypatch):
    model = tiny()
    monkeypatch.setattr(decode_module, "GraphedStep", CpuReplay)
    monkeypatch.setattr(decode_module, "use_cuda_graph", lambda cfg, device: True)  # as on CUDA
    monkeypatch.setattr(CpuReplay, "captures", 0)
    for name in ("cg guided linear top-p", "fp COMMIT refine top-k"):
        task, cond, classes, shape, cfg = CASES[name]
        ref = run(reference_decode, model, task, cond, classes, shape, cfg)
        before = CpuReplay.captures
        assert_same(run(decode, model, task, cond, classes, shape, cfg), ref)  # traces hold copies
        assert_same(run(decode, model, task, cond, classes, shape, cfg), ref)  # the cached graph, new inputs
        assert CpuReplay.captures == before + 1
        assert not torch.equal(run(decode, model, task, cond, classes, shape, cfg, seed=3)[0], ref[0])
    with torch.no_grad():
        model.head_bias.data = model.head_bias.data.clone()  # weights moved: the graph is captured again
    before = CpuReplay.captures
    run(decode, model, task, cond, classes, shape, cfg)
    assert CpuReplay.captures == before + 1


# ---------------------------------------------------------------------------------------------
# bench decode


def test_bench_decode_reports_paths_side_by_side(fake_compile):
    """The table's rows and columns; torch.compile is stood in for (the compiled ids are tested above,
    and inductor would take seconds per model here), then broken to show the fallback note."""
    fake_compile(lambda fn: fn)
    table = bench_decode("tiny", (1, 4, 4), steps=2, batches=(1, 2), codebook_size=64, warmup=0, repeats=1,
                         fast_paths=("compiled",), argv=[])
    rows = {(r["method"], r["path"]): r for r in table.rows}
    assert list(rows) == [("maskgit", "eager"), ("maskgit", "compiled"), ("autoregressive (KV cache)", "eager")]
    eager, compiled, ar = rows.values()
    assert eager["vs_eager_latency"] == 1.0 and eager["vs_eager_throughput"] == 1.0
    for row in (compiled, ar):
        assert row["vs_eager_latency"] == pytest.approx(eager["latency_ms"] / row["latency_ms"])
        assert row["vs_eager_throughput"] == pytest.approx(row["throughput"] / eager["throughput"])
    assert compiled["speedup_latency"] == pytest.approx(ar["latency_ms"] / compiled["latency_ms"])
    assert not any("fell back" in note for note in table.notes)

    fake_compile(broken)
    table = bench_decode("tiny", (1, 4, 4), steps=2, batches=(1,), codebook_size=64, repeats=1,
                         fast_paths=("compiled",), argv=[])
    assert any(note.startswith("fell back to eager: compiled: decode: torch.compile failed (RuntimeError: backend")
               for note in table.notes)
    with pytest.raises(MagvitError, match="cuda-graph needs --device cuda"):
        bench_decode("tiny", (1, 4, 4), steps=2, batches=(1,), fast_paths=("cuda-graph",), argv=[])
    with pytest.raises(MagvitError, match="--fast-paths takes compiled, cuda-graph, compiled\\+cuda-graph"):
        bench_decode("tiny", (1, 4, 4), steps=2, batches=(1,), fast_paths=("eager",), argv=[])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the capture itself needs a CUDA device")
@pytest.mark.parametrize("name", ["cfp COMMIT guided top-k top-p", "uncond greedy"])
def test_cuda_graph_returns_the_eager_ids_on_cuda(name):
    model = tiny().cuda()
    task, cond, classes, shape, cfg = CASES[name]

    def on_cuda(cuda_graph, seed=0):
        graph_cfg = DecodeConfig(**{**cfg.__dict__, "cuda_graph": cuda_graph})
        return decode(model, cond, task, classes, shape, 2, graph_cfg, torch.Generator("cuda").manual_seed(seed),
                      trace=True)

    eager = on_cuda(False)
    assert_same(on_cuda(True), eager)
    assert_same(on_cuda(None), eager)  # auto: on, and the graph captured above is replayed
    assert not torch.equal(on_cuda(True, seed=1)[0], eager[0])

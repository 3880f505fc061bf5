"""The task contract (MAGVIT's COMMIT, section 3.2): given pixels -> padded clip -> z~.

A task says which pixels of a clip are given (the condition), how the rest is padded before the
frozen tokenizer encodes the padded clip into the condition tokens z~ (`replicate`, `interpolate`
in time, `zeros`, or `none` = keep the clip as it is), whether the class token is used, and which
latent positions count as condition. A latent position (i, y, x) summarises a block of pixels: the
pixel frames of latent frame i (vq3d: frames [s i, s (i + 1)); causal3d: frame 0 for i = 0, frames
[1 + s (i - 1), 1 + s i) after; 2D tokenizers: frame i) times rows [f y, f (y + 1)) and columns
[f x, f (x + 1)), f the spatial downsampling. Which blocks are condition positions is the
*condition rule* (`CONDITION_RULES`):

    any  (MAGVIT, the default) a block that holds at least one given pixel is a condition position:
         the condition is the latent region the given pixels fall in, the padding filling the rest
         of the block before tokenization. So 1 given frame conditions latent frame 0 of a 3D-VQ
         (BAIR's protocol) and frame interpolation gives only the first and the last frame.
    all  (strict) only a block whose every pixel is given: only fully observed tokens condition.

The image tasks (MaskGIT editing, section 4.3) keep their own semantics whatever the rule: every
token that touches the region to generate is generated (`all`), and the generated region grows by
`expand` tokens (the conv encoder's receptive field reaches past a block, so tokens next to the hole
saw the padding).

`commit_inputs` builds COMMIT's training input: mask a cosine-scheduled share of positions; a
masked condition position shows z~, a masked other position [MASK], the rest the true tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from magvit.errors import MagvitError
from magvit.registry import Registry
from magvit.schedules import mask_ratio

TASKS: Registry[Task] = Registry("task")
PADDINGS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("padding")


# ---------------------------------------------------------------------------------------------
# Pixel grid <-> token grid


@dataclass(frozen=True)
class Layout:
    """How a (frames, height, width) clip maps onto a tokenizer's (t, h, w) token grid."""

    frames: int
    height: int
    width: int
    t: int
    h: int
    w: int
    time_blocks: tuple[tuple[int, int], ...]  # pixel frames [start, end) of each latent frame
    fh: int  # pixel rows per token
    fw: int  # pixel columns per token



class TokenGrid(Protocol):
    """What tasks and decoding need of a tokenizer (a `Tokenizer`, or a test's stand-in): the token grid
    of a clip, its ids, and pixels back from ids."""

    codebook_size: int

    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]: ...

    def encode(self, video: Tensor) -> Tensor: ...  # (B, 3, T, H, W) in [-1, 1] -> (B, t, h, w) int64

    def decode(self, ids: Tensor) -> Tensor: ...  # (B, t, h, w) -> (B, 3, T, H, W)

def layout_of(tokenizer: TokenGrid, frames: int, height: int, width: int) -> Layout:
    """The layout of a clip under `tokenizer` (anything with `token_shape`); MagvitError if it cannot tile."""
    t, h, w = tokenizer.token_shape(frames, height, width)
    if t == frames:  # 2D tokenizer, or no temporal downsampling
        blocks = tuple((i, i + 1) for i in range(t))
    elif _takes_single_frames(tokenizer, height, width):  # causal: the first frame alone, then groups
        s = (frames - 1) // (t - 1)
        blocks = ((0, 1),) + tuple((1 + s * (i - 1), 1 + s * i) for i in range(1, t))
    else:
        s = frames // t
        blocks = tuple((s * i, s * (i + 1)) for i in range(t))
    return Layout(frames, height, width, t, h, w, blocks, height // h, width // w)


def _takes_single_frames(tokenizer: TokenGrid, height: int, width: int) -> bool:
    """A causal tokenizer encodes one frame (an image) as one latent frame; a 3D-VQ cannot."""
    try:
        return tokenizer.token_shape(1, height, width)[0] == 1
    except MagvitError:
        return False


CONDITION_RULES = ("any", "all")  # see the module docstring
RULE_BEFORE_V2 = "all"  # the rule of model folders and token caches that do not record one


def rule_of(meta: Mapping[str, object]) -> str:
    """The condition rule a model folder / token cache was made with (older ones: the strict rule)."""
    return check_rule(str(meta.get("condition_rule", RULE_BEFORE_V2)))


def check_rule(rule: str) -> str:
    if rule not in CONDITION_RULES:
        raise MagvitError(f"condition_rule must be one of {', '.join(CONDITION_RULES)} (any: MAGVIT's, a block "
                          f"with a given pixel conditions; all: only fully given blocks), got {rule!r}")
    return rule


def latent_condition(given: Tensor, layout: Layout, expand: int = 0, rule: str = "any") -> Tensor:
    """given pixels (B, T, H, W) bool -> condition positions (B, t, h, w) bool, by `rule` (any | all)."""
    pool = "max" if check_rule(rule) == "any" else "min"  # any pixel / every pixel of a block
    per_frame = reduce(given.to(torch.uint8), "b f (h p) (w q) -> b f h w", pool, p=layout.fh, q=layout.fw)
    cond = torch.stack([reduce(per_frame[:, a:b], "b f h w -> b h w", pool) for a, b in layout.time_blocks],
                       1).bool()  # (B, t, h, w)
    if expand:
        grown = F.max_pool2d(rearrange(~cond, "b t h w -> (b t) h w").float(), 2 * expand + 1, 1, expand)
        cond = ~rearrange(grown > 0, "(b t) h w -> b t h w", t=layout.t)
    return cond


# ---------------------------------------------------------------------------------------------
# Padding: fill the pixels that are not given. video (B, 3, T, H, W), given (B, 1, T, H, W) bool


def _nearest_given(x: Tensor, given: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Fill every position that is not given with the nearest given one along `dim` (ties: the
    earlier). Returns the filled x and the new given mask (positions whose line had nothing stay)."""
    n = given.shape[dim]
    shape = [1] * given.ndim
    shape[dim] = n
    idx = torch.arange(n, device=given.device).view(shape).expand(given.shape)
    before = torch.where(given, idx, -1).cummax(dim).values  # last given at or before
    after = torch.where(given, idx, n).flip(dim).cummin(dim).values.flip(dim)  # first given at or after
    use_before = (before >= 0) & ((after >= n) | (idx - before <= after - idx))
    source = torch.where(use_before, before, after).clamp(0, n - 1)
    found = (before >= 0) | (after < n)
    filled = x.gather(dim, source.expand(x.shape))
    return torch.where(given, x, torch.where(found, filled, x)), given | found


@PADDINGS.register("replicate")
def replicate(video: Tensor, given: Tensor) -> Tensor:
    """Nearest given pixel: along time (frame prediction: the last frame repeats), then along rows,
    then along columns (for a given rectangle this is exactly edge padding); the rest zeros."""
    x = video
    for dim in (2, 4, 3):
        x, given = _nearest_given(x, given, dim)
    return torch.where(given, x, torch.zeros_like(x))


@PADDINGS.register("interpolate")
def interpolate(video: Tensor, given: Tensor) -> Tensor:
    """Linear interpolation in time between the nearest given frames before and after (frame
    interpolation); past the last given frame the nearest one repeats; never-given pixels are 0."""
    n = given.shape[2]
    idx = torch.arange(n, device=given.device).view(1, 1, n, 1, 1).expand(given.shape)
    before = torch.where(given, idx, -1).cummax(2).values
    after = torch.where(given, idx, n).flip(2).cummin(2).values.flip(2)
    a = video.gather(2, before.clamp(0, n - 1).expand(video.shape))
    b = video.gather(2, after.clamp(0, n - 1).expand(video.shape))
    both = (before >= 0) & (after < n)
    weight = torch.where(both, (idx - before) / (after - before).clamp(min=1), 0.0)
    value = torch.where(both, a + weight * (b - a), torch.where(before >= 0, a, b))
    value = torch.where((before >= 0) | (after < n), value, torch.zeros_like(value))
    return torch.where(given, video, value)


@PADDINGS.register("zeros")
def zeros(video: Tensor, given: Tensor) -> Tensor:
    """Zero (mid-grey) where not given."""
    return torch.where(given, video, torch.zeros_like(video))


@PADDINGS.register("none")
def keep(video: Tensor, given: Tensor) -> Tensor:
    """The clip as it is (MaskGIT editing encodes the whole image and masks the box's tokens)."""
    return video


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass
class Condition:
    """What a task makes of a clip: the padded clip, its tokens z~ and where they count."""

    pixels: Tensor  # (B, 3, T, H, W) the padded condition clip in [-1, 1]
    tokens: Tensor  # (B, t, h, w) int64 z~ = tokenizer.encode(pixels) (zeros when nothing is given)
    latent_mask: Tensor  # (B, t, h, w) bool: True = condition position
    pixel_mask: Tensor  # (B, 1, T, H, W) bool: True = pixel given (for paste-back)
    use_class: bool
    refine: bool = True  # COMMIT: condition positions are refined; False: fixed from the start


@dataclass(frozen=True)
class TaskOptions:
    """The options of a task's condition, typed and declared once (`Task.options` names the ones a
    task takes; None = not given). A model's trained options (`task_options: {fp: {cond_frames: 5}}` of
    a training config and of magvit.json) are this record; the caller's are laid over them (`over`)."""

    cond_frames: int | None = None  # fp / cfp: the first K frames are given
    box: tuple[int, int, int, int] | None = None  # (top, left, height, width) in the model's pixels
    mask: Tensor | None = None  # (H, W) or (B, H, W) bool, True = generate (Python only: a file is read first)

    def given(self) -> dict[str, object]:
        """{name: value} of the options that are set (a record's JSON form: magvit.json, a token cache)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def over(self, base: TaskOptions) -> TaskOptions:
        """`base` with the options set here replacing its own."""
        return replace(base, **self.given())


NO_OPTIONS = TaskOptions()
Region = Callable[[Layout, TaskOptions], Tensor]  # (layout, options) -> given pixels (1 | B, T, H, W) bool


@dataclass(frozen=True)
class Task:
    name: str
    help: str
    given: Region
    padding: str  # a PADDINGS name
    use_class: bool
    options: tuple[str, ...] = ()  # the TaskOptions fields the task takes
    refine: bool = True  # False: condition tokens are fixed from the start (image editing)
    expand: int = 0  # grow the generated region by this many tokens
    min_latent_frames: int = 1
    rule: str | None = None  # a fixed condition rule (image editing: "all"); None: the caller's

    def masks(self, tokenizer: TokenGrid, batch: int, frames: int, height: int, width: int, rule: str = "any",
              options: TaskOptions = NO_OPTIONS) -> tuple[Tensor, Tensor]:
        """-> pixel_mask (B, 1, T, H, W) bool (True = given), latent_mask (B, t, h, w) bool, on the CPU.

        `rule` (any | all) turns given pixels into condition positions; a task with a fixed rule
        ignores it. Given pixels that make no condition position, or a condition that leaves no
        position to generate, are one-line errors."""
        rule = self.rule or check_rule(rule)
        layout = layout_of(tokenizer, frames, height, width)
        if layout.t < self.min_latent_frames:
            raise MagvitError(f"task {self.name} needs a clip of at least {self.min_latent_frames} latent frames; "
                              f"{frames} frame(s) give {layout.t} with this tokenizer")
        if rule == "all" and "cond_frames" in self.options and options.cond_frames is None:
            # the strict rule's default: the frames of latent frame 0, the fewest that condition anything
            options = replace(options, cond_frames=layout.time_blocks[0][1])
        unknown = sorted(set(options.given()) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) if self.options else "none"
            raise MagvitError(f"task {self.name} takes no option {', '.join(unknown)} (its options: {takes})")
        try:
            given = self.given(layout, options)
        except MagvitError as e:
            raise MagvitError(f"task {self.name}: {e}") from None
        if given.shape[0] not in (1, batch):
            raise MagvitError(f"task {self.name}: a mask for {given.shape[0]} samples does not fit a batch of {batch}")
        given = given.expand(batch, -1, -1, -1)
        latent = latent_condition(given, layout, self.expand, rule)
        if self.rule is None and bool(given.any()) and not bool(latent.flatten(1).any(1).all()):
            raise MagvitError(f"task {self.name}: with condition_rule={rule} the given pixels fill no whole token "
                              f"block of this tokenizer ({layout.time_blocks[-1][1] - layout.time_blocks[-1][0]} "
                              f"frame(s) x {layout.fh}x{layout.fw} pixels per token), so nothing would condition; "
                              "use condition_rule=any (MAGVIT's) or give more")
        if bool(latent.flatten(1).all(1).any()):
            raise MagvitError(f"task {self.name}: the given pixels touch every token of the {layout.t}x{layout.h}x"
                              f"{layout.w} grid, so no token is left to generate; give less")
        return given.unsqueeze(1).clone(), latent

    @torch.no_grad()
    def condition(self, video: Tensor, tokenizer: TokenGrid, rule: str = "any",
                  options: TaskOptions = NO_OPTIONS) -> Condition:
        """video (B, 3, T, H, W) in [-1, 1] (for cg / uncond only its shape matters) -> Condition."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise MagvitError(f"task {self.name} takes video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        b, _, frames, height, width = video.shape
        pixel_mask, latent_mask = self.masks(tokenizer, b, frames, height, width, rule, options)
        pixel_mask, latent_mask = pixel_mask.to(video.device), latent_mask.to(video.device)
        pixels = PADDINGS[self.padding].build(video, pixel_mask)
        if latent_mask.any():
            tokens = tokenizer.encode(pixels).to(video.device)
        else:  # nothing is given: z~ is never read
            tokens = torch.zeros(latent_mask.shape, dtype=torch.long, device=video.device)
        return Condition(pixels, tokens, latent_mask, pixel_mask, self.use_class, self.refine)


def register(task: Task) -> Task:
    """Add a task to `TASKS` (its entry builds the task)."""
    TASKS.register(task.name, help=task.help)(lambda: task)
    return task


def build_task(name: str) -> Task:
    return TASKS.build(name)


# ---------------------------------------------------------------------------------------------
# COMMIT training input


KIND_ORIGINAL, KIND_REFINE, KIND_MASK, KIND_GIVEN = 0, 1, 2, 3  # commit_inputs' kinds of position


def commit_inputs(tokens: Tensor, cond: Condition | None, mask_token: int, generator: torch.Generator,
                  schedule: str = "cosine", conditioning: str = "commit") -> tuple[Tensor, Tensor]:
    """COMMIT's multivariate mask (MAGVIT section 3.2), or one of the alternatives it is compared with.

    tokens (B, t, h, w) the true codes z. Per sample r ~ U[0, 1), ratio = gamma(r) of `schedule`;
    scores s_i ~ U(0, 1) and the max(1, floor(N ratio)) lowest positions are masked. `conditioning`:
      commit  a masked condition position shows z~ (`cond.tokens`), a masked other position
              `mask_token`, the rest z;
      latent  (MaskGIT's latent masking) condition positions show z~ and are never masked; the mask
              is drawn over the other N' positions (floor(N' ratio) of them);
      prefix  the mask ignores the condition (the model sees z~ as a prefix, see the transformer).
    Returns inputs (B, t, h, w) int64 and kinds (B, t, h, w) int8: KIND_ORIGINAL, KIND_REFINE,
    KIND_MASK, or KIND_GIVEN (latent masking's fixed condition: no loss). With `cond=None` it is
    MaskGIT's MVTM mask. Random draws come from `generator`.
    """
    b, t, h, w = tokens.shape
    n = t * h * w
    given = (cond.latent_mask.to(tokens.device).view(b, n) if cond is not None and conditioning == "latent"
             else torch.zeros(b, n, dtype=torch.bool, device=tokens.device))  # (B, N)
    free = n - given.sum(1)  # (B,) positions the mask is drawn over
    r = torch.rand(b, generator=generator, device=generator.device, dtype=torch.float64)
    ratio = mask_ratio(schedule, r, n).to(tokens.device)
    count = torch.floor(free * ratio).long().clamp(min=1).minimum(free)  # (B,)
    scores = torch.rand(b, n, generator=generator, device=generator.device).to(tokens.device)
    rank = scores.masked_fill(given, 2.0).argsort(1).argsort(1)  # given positions rank last
    masked = (rank < count[:, None]).view(b, t, h, w)
    given = given.view(b, t, h, w)
    if cond is None or conditioning == "prefix":
        refine = torch.zeros_like(masked)
        z_cond = tokens
    else:
        refine = masked & cond.latent_mask.to(tokens.device)
        z_cond = cond.tokens.to(tokens.device)
    inputs = torch.where(refine | given, z_cond, torch.where(masked, torch.full_like(tokens, mask_token), tokens))
    kinds = masked.to(torch.int8) * 2 - refine.to(torch.int8) + given.to(torch.int8) * KIND_GIVEN
    return inputs, kinds


def prefix_tokens(tokens: Tensor, latent_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Prefix conditioning: z~ (B, ...) at the condition positions latent_mask (B, ...) -> ids (B, P)
    and flat positions (P,). Every sample of a batch must share its condition positions (true for
    the video tasks)."""
    where = latent_mask.flatten(1)  # (B, N)
    if not bool((where == where[:1]).all()):
        raise MagvitError("prefix conditioning needs the same condition positions for every sample of a batch")
    positions = where[0].nonzero().flatten()  # (P,)
    return tokens.flatten(1)[:, positions], positions

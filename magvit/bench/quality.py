"""`magvit bench quality`: generation quality of a trained model on moving digits, as tables: the
model's scores (magvit.evaluation) beside the references that bound them, per latent frame, and the
MaskGIT ablation of mask schedule (cosine, square, linear, sqrt) x steps (4, 8, 12, 16).
"""

from __future__ import annotations

import torch

from magvit.bench.report import Column, Table, environment
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.evaluation.digits import digit_classifier
from magvit.evaluation.scores import Evaluator

SCHEDULES = ("cosine", "square", "linear", "sqrt")
STEPS = (4, 8, 12, 16)


COLUMNS = [
    Column("method", "method"), Column("class_accuracy", "class accuracy %"),
    Column("frechet", "Frechet (classifier)"), Column("fp_psnr", "FP PSNR dB", 4), Column("fp_ssim", "FP SSIM"),
]
LATENT_COLUMNS = [
    Column("latent_frame", "latent frame"), Column("frames", "frames"), Column("condition", "given"),
    Column("tokenizer_psnr", "tokenizer PSNR dB", 4), Column("baseline_psnr", "copy-last PSNR dB", 4),
    Column("model_psnr", "model PSNR dB", 4), Column("token_accuracy", "model token acc."),
    Column("baseline_token_accuracy", "z~ token acc."),
]
SWEEP_COLUMNS = [Column("schedule", "schedule"), Column("steps", "steps"), *COLUMNS[1:], Column("seconds", "seconds")]


def bench_quality(
    checkpoint: str, cache_dir: str | None = None, num: int = 100, steps: int = 12, schedule: str = "cosine",
    sweep_schedules: tuple[str, ...] = SCHEDULES, sweep_steps: tuple[int, ...] = STEPS,
    device: torch.device | str = "cpu", batch_size: int = 50, seed: int = 0, quiet: bool = False,
    argv: list[str] | None = None, temperature: float = 1.0, guidance: float = 0.0, dtype: str = "fp32",
    compile: bool = False,
) -> list[Table]:
    """The quality table (model + reference rows) and the schedule x steps sweep table; every row decodes
    with `temperature`, and the class-conditional samples with classifier-free `guidance`. `dtype` and
    `compile` are the model's precision and torch.compile (magvit.runtime); the classifier stays fp32."""
    from magvit.pipeline import MagvitPipeline

    if num < 2 or batch_size < 1:
        raise MagvitError(f"--num needs at least 2 clips (a Frechet distance) and --batch-size 1, got {num}, "
                          f"{batch_size}")
    device = torch.device(device)
    release = MagvitPipeline.from_pretrained(checkpoint, device, dtype=dtype, compile=compile)
    classifier, info = digit_classifier(cache_dir, quiet=quiet)
    classifier = classifier.to(device)
    evaluator = Evaluator(release, classifier, num, batch_size, seed)
    if not (evaluator.cg or evaluator.uncond or evaluator.fp):
        raise MagvitError(f"{release.directory}: trained for {', '.join(release.info.tasks)}; the quality bench "
                          "needs cg (10 digit classes), uncond or fp")
    env = environment(device, argv)
    frames, size = release.clip[:2]

    main = Table("quality", f"Generation quality of {checkpoint} on {num} moving-digit test clips "
                 f"({frames}x{size}x{size})", COLUMNS, environment=env)
    decoding = dict(temperature=temperature, guidance=guidance, compile=compile)
    main.rows.append({"method": f"model ({schedule}, {steps} steps)",
                      **evaluator.score(DecodeConfig(steps=steps, schedule=schedule, **decoding))})
    main.note(f"decoding: temperature {temperature}, classifier-free guidance {guidance} (class-conditional only), "
              f"{dtype}{', compiled' if compile else ''}")
    main.rows += evaluator.references()
    acc = 100 * info.get("test_clip_accuracy", float("nan"))
    main.note(f"classifier: the project's digit CNN ({acc:.1f}% on real test clips at its worst canvas size when "
              "trained), frames resized to 16x16; Frechet distance over its 64-d clip features")
    if not evaluator.cg:
        main.note("class accuracy n/a: the model was not trained for cg with 10 classes"
                  + ("; Frechet distance of unconditional samples" if evaluator.uncond else ""))
    if evaluator.fp:
        main.note(f"frame prediction ({evaluator.fp}): {evaluator.cond_frames} given frame(s), scores on the "
                  f"{frames - evaluator.cond_frames} predicted ones")
    else:
        main.note("frame prediction n/a: the model was not trained for fp or cfp")
    tables = [main]
    if evaluator.fp == "fp":  # where frame prediction loses: per latent frame, with a greedy decode
        greedy = DecodeConfig(steps=steps, schedule=schedule, temperature=0.0, choice_temperature=0.0,
                              compile=compile)
        located = Table("quality_fp_latent_frames", f"Frame prediction per latent frame ({checkpoint}, {num} clips, "
                        "greedy decoding)", LATENT_COLUMNS, environment=env)
        located.rows = evaluator.latent_frames(evaluator.task_scores("fp", greedy))
        located.note("tokenizer: its round trip of the truth (the ceiling); baseline: copy-last-frame; token accuracy: "
                     "the model's ids against the tokenizer's ids of the truth, baseline: the condition tokens z~ "
                     "(the clip with its last given frame repeated, tokenized)")
        tables.append(located)

    sweep = Table("quality_sweep", f"Mask schedule x decoding steps ({checkpoint}, {num} clips)", SWEEP_COLUMNS,
                  environment=env)
    for name in sweep_schedules:
        for count in sweep_steps:
            row = evaluator.score(DecodeConfig(steps=count, schedule=name, **decoding))
            sweep.rows.append({"schedule": name, "steps": count, **row})
            if not quiet:
                print(f"sweep: {name}, {count} steps done ({row['seconds']:.1f} s)", flush=True)
    sweep.note("the same seed and clips for every setting; MaskGIT's ablation (concave schedules should win)")
    return [*tables, sweep]

"""`magvit eval`: every configs/eval/*.yaml loads as kind eval and runs end to end on a tiny copy of its
dataset in the real layout (tests/paper_fixtures.py), with random-weight models, a random Inception-I3D
(.safetensors) and a random torchvision Inception (.safetensors); the report puts the paper's number
beside ours; a missing weight file is one line; --help lists the flags."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from paper_fixtures import MAKERS
from safetensors.torch import save_file
from torch import nn

from magvit.cli import main
from magvit.evaluation.protocols import NAMES, EvalConfig
from magvit.kinds import load_config
from magvit.metrics import inception_score

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs" / "eval").glob("*.yaml"))
VIDEO_TASKS = ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp")
# per protocol: fewer tasks than the shipped multi-task configs (each task costs I3D passes on the CPU)
FEWER = {"ssv2_multitask": "tasks=[cfp, ipd]", "bair_multitask": "tasks=[fi, opd]"}


def _spread(model: nn.Module) -> dict:
    """A random network's state dict, its convolutions He-initialised so that its features still depend on
    the input after its many layers (with the default init they fade to a constant)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.state_dict()


class TinyClassifier(nn.Module):
    """An Inception stand-in as TorchScript: frames (N, 3, H, W) -> 10 logits, read as its FID features and,
    through a softmax, its IS class probabilities (the real network's 2048-d statistics cost seconds)."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 4, stride=4), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random stand-ins: an Inception-I3D (8 classes, .safetensors) and a scripted image classifier."""
    from magvit.evaluation.features import InceptionI3d

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_file(_spread(InceptionI3d(num_classes=8)), root / "i3d.safetensors")
    torch.jit.script(TinyClassifier()).save(str(root / "inception.pt"))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained model folders: video (causal3d tiny, 9x16x16 -> 3x4x4, MAGVIT's ten tasks, 3 classes)
    and image (vqgan2d tiny, 1x16x16 -> 1x4x4, cg, 3 classes)."""
    from magvit.release import ModelInfo, write_model_folder
    from magvit.tasks import TaskOptions
    from magvit.tokenizers import build_tokenizer
    from magvit.transformer import build_transformer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name, tokenizer_name, frames, grid, tasks in (("video", "causal3d", 9, (3, 4, 4), VIDEO_TASKS),
                                                      ("image", "vqgan2d", 1, (1, 4, 4), ("cg",))):
        tokenizer = build_tokenizer(tokenizer_name, "tiny")
        model = build_transformer("tiny", codebook_size=tokenizer.codebook_size, num_classes=3, grid=grid)
        one = TaskOptions(cond_frames=1)
        info = ModelInfo(tasks=tasks, task_options={"fp": one, "cfp": one},
                         num_classes=3, grid=grid, frames=frames, size=(16, 16), condition_rule="any")
        write_model_folder(root / name, model, tokenizer, info)
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Each paper dataset's fixture, made the first time a test asks for it."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = MAKERS[name](tmp_path_factory.mktemp(name))["root"]
        return made[name]

    return get


def test_every_shipped_protocol_loads_as_kind_eval():
    assert {p.stem for p in CONFIGS} >= {"bair_fp", "k600_fp", "ucf101_cg", "ssv2_multitask", "imagenet256_cg"}
    for path in CONFIGS:
        cfg = load_config(path)
        assert isinstance(cfg, EvalConfig) and cfg.kind == "eval"
        assert cfg.paper.name and cfg.paper.section and set(cfg.paper.values) == set(cfg.metrics), path
        assert not Path(cfg.checkpoint).exists() and cfg.out.startswith("runs/")  # a placeholder; out is ignored
        assert cfg.data.split in ("test", "val", "validation") and cfg.num_samples is None
    papers = {p.stem: dict(load_config(p).paper.values) for p in CONFIGS}
    assert papers["bair_fp"] == {"fvd": 62} and papers["k600_fp"] == {"fvd": 9.9}
    assert papers["ucf101_cg"] == {"fvd": 76} and papers["imagenet256_cg"] == {"fid": 6.18, "is": 182}
    assert papers["ssv2_multitask"] == {"fvd": None} and papers["bair_multitask"] == {"fvd": 22.8}


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is how Inception files ship
@pytest.mark.filterwarnings("ignore:Kinetics600. skipped 1 of 3")  # the fixture's clip gone from YouTube
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_protocol_runs_end_to_end_on_its_dataset(path, models, weights, datasets, tmp_path, capsys):
    shipped = yaml.safe_load(path.read_text())
    image = shipped["data"]["name"] == "imagenet"
    out = tmp_path / "report"
    argv = ["eval", str(path), f"checkpoint={models / ('image' if image else 'video')}",
            f"data.root={datasets(shipped['data']['name'])}", f"frames={1 if image else 9}", "size=16",
            "num_samples=2", "batch_size=2", "decode.steps=2", *([FEWER[path.stem]] if path.stem in FEWER else []),
            f"i3d={weights / 'i3d.safetensors'}", f"inception={weights / 'inception.pt'}",
            "--device", "cpu", "--out", str(out)]
    if path.stem == "bair_fp":  # the pixel metrics too
        argv += ["--metrics", "fvd", "psnr", "ssim"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    results = {r["metric"]: r for r in report["results"]}
    for metric, value in shipped["paper"]["values"].items():
        assert results[metric]["paper"] == value  # the paper's number beside ours
        assert math.isfinite(results[metric]["ours"]) and results[metric]["ours"] > 0  # noise is not the data
    assert report["clips"] == 2 and report["model"]["clip"] == ("1x16x16" if image else "9x16x16")
    assert {"command", "commit", "date", "device"} <= set(report["environment"])
    assert report["environment"]["command"].startswith(f"magvit eval {path}")
    markdown = (out / "report.md").read_text()
    assert shipped["paper"]["name"] in markdown and "| metric | ours | paper |" in markdown
    assert all(f"| {NAMES[r['metric']]} | " in markdown for r in report["results"])
    assert ("not stated" in markdown) == any(r["paper"] is None for r in report["results"])
    rerun = load_config(out / "settings.yaml")  # the resolved settings rerun the evaluation
    assert rerun.num_samples == 2 and rerun.decode.steps == 2
    if len(report["tasks"]) > 1:  # a multi-task benchmark: ours is the mean over the tasks
        fvds = [row["fvd"] for row in report["tasks"]]
        assert results["fvd"]["ours"] == pytest.approx(sum(fvds) / len(fvds)) and "| task |" in markdown
    if path.stem == "bair_fp":
        assert 0 < results["psnr"]["ours"] < 60 and -1 <= results["ssim"]["ours"] <= 1
        assert results["psnr"]["paper"] is None
    if image:
        assert 1 - 1e-6 <= results["is"]["ours"] <= 10 + 1e-6  # between 1 and the stand-in's 10 classes
    assert main(argv) == 2 and "exists: pass --overwrite" in capsys.readouterr().err  # kept unless --overwrite


def test_a_missing_weight_file_is_one_line_before_any_work(tmp_path, capsys):
    bair = str(ROOT / "configs" / "eval" / "bair_fp.yaml")
    assert main(["eval", bair, "--i3d", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--i3d" in err and "nope.safetensors" in err and "no such file" in err
    assert main(["eval", bair, "--out", str(tmp_path / "o")]) == 2  # the shipped config names no I3D
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fvd needs --i3d PATH" in err
    assert main(["eval", "--checkpoint", "x"]) == 2 and "no tasks: pass --tasks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_placeholder_checkpoint_says_what_to_replace(weights, tmp_path, capsys):
    argv = ["eval", str(ROOT / "configs" / "eval" / "bair_fp.yaml"), "--i3d", str(weights / "i3d.safetensors"),
            "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "runs/bair/transformer/model" in err and "--checkpoint" in err
    assert not (tmp_path / "o").exists(), "a failed run leaves no empty --out folder behind"


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["eval", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--checkpoint", "--tasks", "--cond-frames", "--frames", "--size", "--num-samples", "--metrics",
                 "--i3d", "--inception", "--steps", "--schedule", "--batch-size", "--seed", "--device", "--dtype",
                 "--out", "--overwrite", "key=value"):
        assert flag in text, flag


def test_a_torchvision_inception_file_gives_fid_features_and_is_probabilities(tmp_path):
    from torchvision.models import inception_v3

    from magvit.evaluation.features import load_image_extractor, load_image_probabilities

    net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False, num_classes=10)
    save_file(_spread(net), tmp_path / "inception.safetensors")
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        feats = load_image_extractor(tmp_path / "inception.safetensors", torch.device("cpu"))(frames)
        probs = load_image_probabilities(tmp_path / "inception.safetensors", torch.device("cpu"))(frames)
    assert feats.shape == (2, 2048) and probs.shape == (2, 10)
    assert torch.allclose(probs.sum(1), torch.ones(2)) and (probs >= 0).all()


def test_inception_score_runs_from_one_to_the_number_of_classes():
    confident = torch.eye(4).repeat(5, 1)  # 20 samples, each class 5 times, each sure of it
    assert inception_score(confident, splits=1) == pytest.approx(4)
    assert inception_score(torch.full((20, 4), 0.25), splits=2) == pytest.approx(1)
    assert inception_score(confident, splits=10) == pytest.approx(2)  # parts of 2: two classes each

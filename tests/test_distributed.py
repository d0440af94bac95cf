"""Data-parallel training on the CPU (gloo): two processes started from the test against one.

The module fixture launches this file under torchrun with 2 processes (``worker`` below). Each
rank runs ``vqgen train-vqvae`` through the CLI, then trains a tiny VQ-VAE and two tiny priors (a
PixelCNN, "prior", and a transformer), and their two-level twins (VQ-VAE-2, "vqvae2", and its top +
bottom prior, "prior2"), with per-process batch B/2, and dumps their weights; an audit hook records
every file it writes. The fixture then trains the same models in this process with batch B.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from vqgen import distributed as dist
from vqgen.formats.checkpoints import load_prior, load_vqvae
from vqgen.data import ImageData
from vqgen.errors import VQGenError
from vqgen.models import TransformerConfig, TwoLevelPriorConfig, build_prior
from vqgen.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.data.batches import make_loader
from vqgen.device import autocast, memory_format
from vqgen.logs import read_jsonl
from vqgen import config
from vqgen.train import prior as prior_stage
from vqgen.train import vqvae as vqvae_stage

WORLD = 2
BATCH = 8  # global batch: 1 process x 8 against 2 processes x 4
N_TRAIN, N_VAL = 24, 11  # 11 validation items do not split evenly over 2 ranks (nor into batches)


# ----------------------------------------------------------------------------- the runs


def image_data() -> ImageData:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(N_TRAIN + N_VAL, 1, 8, 8, generator=g)
    labels = torch.zeros(N_TRAIN + N_VAL, dtype=torch.long)
    return ImageData(
        train=TensorDataset(images[:N_TRAIN], labels[:N_TRAIN]),
        val=TensorDataset(images[N_TRAIN:], labels[N_TRAIN:]),
        spec={"data": "random-8x8"},
        label_names=None,
        channels=1,
        image_size=(8, 8),
    )


def vqvae_config() -> VQVAEConfig:
    # one dead-code check, at step 4 of 6; the raised threshold (the mean use) makes the rarer codes count as dead
    return VQVAEConfig(
        in_channels=1, image_size=(8, 8), hidden_channels=16, res_channels=8, num_res_blocks=1,
        num_downsamples=1, num_codes=16, code_dim=8, restart_every=4, dead_threshold=1.0,
    )  # fmt: skip


def code_file(root: Path) -> prior_stage.CodeFile:
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(16, (N_TRAIN + N_VAL, 4, 4), generator=g)
    labels = torch.randint(3, (N_TRAIN + N_VAL,), generator=g)
    meta = {"num_codes": 16, "latent_shape": [4, 4], "label_names": ["a", "b", "c"]}
    train, val = TensorDataset(codes[:N_TRAIN], labels[:N_TRAIN]), TensorDataset(codes[N_TRAIN:], labels[N_TRAIN:])
    return prior_stage.CodeFile(root / "codes.safetensors", meta, train, val)


def prior_config() -> PixelCNNConfig:
    return PixelCNNConfig(
        num_codes=16, latent_shape=(4, 4), channels=8, num_layers=2, kernel_size=3, num_classes=3, head_channels=16,
        dropout=0.0,  # dropout masks differ between 2 x 4 and 1 x 8 images: equality needs none
    )


def transformer_config() -> TransformerConfig:
    # no dropout: its masks differ between 2 x 4 and 1 x 8 maps, and equality needs none
    return TransformerConfig(num_codes=16, latent_shape=(4, 4), channels=16, num_layers=2, num_heads=2, num_classes=3,
                             dropout=0.0)


def two_level_vqvae_config() -> VQVAEConfig:
    # 8x8 images -> 4x4 bottom and 2x2 top maps; no restarts, so that the restart count above stays the one-level run's
    return VQVAEConfig(**{**vqvae_config().__dict__, "levels": 2, "restart_dead": False})


def two_level_code_file(root: Path) -> prior_stage.CodeFile:
    one = code_file(root)
    g = torch.Generator().manual_seed(3)
    top = torch.randint(16, (N_TRAIN + N_VAL, 2, 2), generator=g)
    meta = {**one.meta, "levels": 2, "latent_shape_top": [2, 2]}
    train, val = (TensorDataset(*split.tensors, t) for split, t in ((one.train, top[:N_TRAIN]), (one.val, top[N_TRAIN:])))
    return prior_stage.CodeFile(root / "codes2.safetensors", meta, train, val)


def two_level_prior_config() -> TwoLevelPriorConfig:
    return TwoLevelPriorConfig.for_maps(prior_config(), (2, 2))


PRIOR_CONFIGS = {"prior": prior_config, "transformer": transformer_config}  # by the name of the run


def train_both(folder: Path, batch_size: int) -> None:
    """Both stages (both priors) for 2 epochs (6 optimizer steps each), warm-up short enough that weights really move."""
    vq_opts = config.VQVAETrainOptions(epochs=2, batch_size=batch_size, lr=3e-3, warmup_steps=1, device="cpu", amp="off")
    vqvae_stage.train_vqvae(image_data(), vqvae_config(), vq_opts, folder / "vqvae.safetensors")
    prior_opts = config.PriorTrainOptions(epochs=2, batch_size=batch_size, lr=3e-3, warmup_steps=1, device="cpu", amp="off")
    with plain_sgd():
        for name, prior_cfg in PRIOR_CONFIGS.items():
            prior_stage.train_prior(code_file(folder), prior_cfg(), prior_opts, folder / f"{name}.safetensors")


@contextlib.contextmanager
def plain_sgd():
    """The priors' runs step with SGD instead of Adam. Adam's first steps move every weight by about +-lr
    whatever the size of its gradient, so a gradient component near zero whose sign differs in the last bit
    between one batch of 8 and two of 4 moves its weight by 2 lr: the comparison would test rounding, not
    DDP. SGD moves each weight in proportion to its gradient, so rounding stays rounding."""
    adam = torch.optim.Adam
    torch.optim.Adam = lambda params, lr: torch.optim.SGD(params, lr=lr * 30)  # steps that move the weights
    try:
        yield
    finally:
        torch.optim.Adam = adam


# each run's model as it starts (before training), by the name of its files
BUILD = {"vqvae": lambda: VQVAE(vqvae_config()), "vqvae2": lambda: VQVAE(two_level_vqvae_config()),
         "prior2": lambda: build_prior(two_level_prior_config()),
         **{name: (lambda cfg=cfg: build_prior(cfg())) for name, cfg in PRIOR_CONFIGS.items()}}


def train_two_levels(folder: Path, batch_size: int) -> str:
    """``train_both`` for the two-level models; returns what they told the console (kept apart from the
    one-level runs' lines, which the tests below count)."""
    vq_opts = config.VQVAETrainOptions(epochs=2, batch_size=batch_size, lr=3e-3, warmup_steps=1, device="cpu", amp="off")
    prior_opts = config.PriorTrainOptions(epochs=2, batch_size=batch_size, lr=3e-3, warmup_steps=1, device="cpu", amp="off")
    told = io.StringIO()
    with contextlib.redirect_stderr(told):
        vqvae_stage.train_vqvae(image_data(), two_level_vqvae_config(), vq_opts, folder / "vqvae2.safetensors")
        prior_stage.train_prior(two_level_code_file(folder), two_level_prior_config(), prior_opts,
                                folder / "prior2.safetensors")
    return told.getvalue()


def record_writes(folder: Path, writes: list[str]) -> None:
    """Audit hook: note every file opened for writing, renamed, created or removed under ``folder``."""
    folder = str(folder)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            paths = [path] if writing else []
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir"):
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for p in paths:
            if not isinstance(p, int) and os.fsdecode(p).startswith(folder):
                writes.append(f"{event} {os.fsdecode(p)}")

    sys.addaudithook(hook)


def worker(root: Path) -> None:
    """One rank under torchrun: the CLI, then both stages on this rank's shard; results to ``root/rank<r>``."""
    from conftest import TINY_VQVAE

    from vqgen.cli import app

    torch.set_num_threads(1)
    writes: list[str] = []
    record_writes(root / "ddp", writes)
    record_writes(root / "cli", writes)
    cli_args = ["train-vqvae", "--data", str(root / "images"), "--out", str(root / "cli" / "vqvae.safetensors")]
    cli_args += ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--val-fraction", "0.25", *TINY_VQVAE]
    app(cli_args, prog_name="vqgen", standalone_mode=False)

    made: dict[str, torch.nn.Module] = {}
    restarted: list[int] = []
    spy_on_training(made, restarted)
    train_both(root / "ddp", BATCH // WORLD)
    two_level_lines = train_two_levels(root / "ddp", BATCH // WORLD)

    # gather_rows keeps rank order and copes with ranks holding different numbers of rows
    rank = dist.rank()
    gathered = dist.gather_rows(torch.full((3 - 2 * rank, 2), float(rank)))
    assert gathered.tolist() == [[0.0, 0.0]] * 3 + [[1.0, 1.0]], gathered
    # gather_picked_rows: rows 0..2 live on rank 0, row 3 on rank 1; repeats and any order allowed
    mine = torch.tensor([[0.0], [1.0], [2.0]]) if rank == 0 else torch.tensor([[3.0]])
    picked = dist.gather_picked_rows(mine, torch.tensor([3, 0, 0, 2]))
    assert picked.flatten().tolist() == [3.0, 0.0, 0.0, 2.0], picked
    weights = {name: {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
               for name, model in made.items()}
    nan_message = nan_on_rank_1(root / "nan")  # builds another prior: the spy's one is kept above
    assert dist.is_distributed() and dist.world_size() == WORLD
    dist.cleanup()
    assert not dist.is_distributed()

    mine = root / f"rank{rank}"
    mine.mkdir()
    for name, state in weights.items():
        save_file(state, str(mine / f"{name}.safetensors"))
    record = {"writes": writes, "restarted": restarted, "nan_message": nan_message, "two_level_lines": two_level_lines}
    (mine / "record.json").write_text(json.dumps(record))


def nan_on_rank_1(folder: Path) -> str:
    """Train the prior with a loss that becomes NaN on rank 1 alone at step 3; return this rank's error."""
    loss = prior_stage.PriorTrainer.loss

    def poisoned(self, net, batch, step):
        result = loss(self, net, batch, step)
        if dist.rank() == 1 and step == 2:
            result.loss = result.loss * float("nan")
        return result

    prior_stage.PriorTrainer.loss = poisoned
    opts = config.PriorTrainOptions(epochs=2, batch_size=BATCH // WORLD, lr=3e-3, warmup_steps=1, device="cpu")
    try:
        prior_stage.train_prior(code_file(folder), prior_config(), opts, folder / "prior.safetensors")
    except VQGenError as e:
        return str(e)
    finally:
        prior_stage.PriorTrainer.loss = loss
    return "no error"


def spy_on_training(made: dict[str, torch.nn.Module], restarted: list[int]) -> None:
    """Keep hold of the models the stages build, and count dead-code restarts."""

    class RecordedVQVAE(VQVAE):
        def __init__(self, cfg):
            super().__init__(cfg)
            made["vqvae" if cfg.levels == 1 else "vqvae2"] = self

    build = prior_stage.build_prior

    def recorded_prior(cfg):
        name = "prior2" if isinstance(cfg, TwoLevelPriorConfig) else "prior" if cfg.arch == "pixelcnn" else cfg.arch
        made[name] = model = build(cfg)
        return model

    vqvae_stage.VQVAE = RecordedVQVAE
    prior_stage.build_prior = recorded_prior
    restart = VectorQuantizer._restart_dead_codes

    def counted(self, flat):
        n = restart(self, flat)
        restarted.append(n)
        return n

    VectorQuantizer._restart_dead_codes = counted


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("ddp")
    write_image_folder(root / "images", n_per_class=10, size=16)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
    result = subprocess.run(
        [*launch, __file__, str(root)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (root / "stdout.txt").write_text(result.stdout)
    (root / "stderr.txt").write_text(result.stderr)
    train_both(root / "single", BATCH)
    train_two_levels(root / "single", BATCH)
    return root


def states(root: Path, who: str, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(root / who / f"{name}.safetensors"))


# ----------------------------------------------------------------------------- 2 processes


@pytest.mark.parametrize("name", ["vqvae", "prior", "transformer", "vqvae2", "prior2"])
def test_weights_and_codebook_statistics_are_identical_on_every_rank(runs, name):
    rank0, rank1 = states(runs, "rank0", name), states(runs, "rank1", name)
    assert rank0.keys() == rank1.keys()
    if name == "vqvae":  # the EMA statistics, usage and step counter, not just the weights
        assert {"quantizer.cluster_size", "quantizer.embed_sum", "quantizer.usage", "quantizer.steps"} <= rank0.keys()
    if name == "vqvae2":  # the top level's codebook too
        assert {"top.quantizer.cluster_size", "top.quantizer.embed_sum", "top.quantizer.steps"} <= rank0.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{name}: {key} differs between ranks"


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(runs):
    messages = [json.loads((runs / f"rank{r}" / "record.json").read_text())["nan_message"] for r in range(WORLD)]
    assert all("the prior loss became" in m and "at step 3" in m for m in messages), messages
    assert messages[0].split(" became")[0] == messages[1].split(" became")[0]


def test_dead_code_restarts_happened_and_matched(runs):
    records = [json.loads((runs / f"rank{r}" / "record.json").read_text()) for r in range(WORLD)]
    assert records[0]["restarted"] == records[1]["restarted"]
    # some codes, not all: a full restart would reset every statistic and hide a rank that drifted
    assert len(records[0]["restarted"]) == 1 and 0 < records[0]["restarted"][0] < vqvae_config().num_codes


@pytest.mark.parametrize("name", ["vqvae", "prior", "transformer", "vqvae2", "prior2"])
def test_two_processes_with_half_batches_match_one_process(runs, name):
    ddp = states(runs, "rank0", name)
    load = load_vqvae if name.startswith("vqvae") else load_prior
    single = load(runs / "single" / f"{name}.safetensors")[0].state_dict()
    torch.manual_seed(0)
    init = BUILD[name]().state_dict()
    moved = max((single[k].float() - init[k].float()).abs().max().item() for k in init if init[k].is_floating_point())
    assert moved > 1e-3, "training barely moved the weights: the comparison would prove nothing"
    for key, value in single.items():
        if value.is_floating_point():
            off = (ddp[key] - value).abs().max().item()
            assert off <= 1e-5, f"{name}: {key} off by {off}"
        else:
            assert torch.equal(ddp[key], value), key


@pytest.mark.parametrize("name", ["vqvae", "prior", "transformer", "vqvae2", "prior2"])
def test_metrics_are_reduced_over_ranks_and_exact_on_the_validation_split(runs, name):
    ddp = read_jsonl(runs / "ddp" / f"{name}.metrics.jsonl")
    single = read_jsonl(runs / "single" / f"{name}.metrics.jsonl")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [3, 6]
    for a, b in zip(ddp, single):
        for key, value in b.items():
            if key.startswith(("train_", "val_")):
                assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_only_rank_0_writes_and_its_checkpoint_loads_in_one_process(runs):
    writes = [json.loads((runs / f"rank{r}" / "record.json").read_text())["writes"] for r in range(WORLD)]
    assert writes[1] == []  # neither in the CLI run nor in the stage runs
    ddp = runs / "ddp"
    renamed = {line.split(" ", 1)[1] for line in writes[0] if line.startswith("os.rename")}
    written = {str(ddp / f"{name}.safetensors") for name in ("vqvae", "prior", "transformer")}
    assert written <= renamed  # the hook saw rank 0 write
    assert not [p for p in ddp.rglob("*") if p.name.startswith(".")], "temporary files left behind"
    model, meta = load_vqvae(ddp / "vqvae.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, states(runs, "rank0", "vqvae")[key]), key
    assert meta["epoch"] == 2
    prior, _ = load_prior(ddp / "prior.safetensors")
    assert prior.cfg == prior_config().sized()  # as built: the choices left open made
    transformer, _ = load_prior(ddp / "transformer.safetensors")
    assert transformer.cfg == transformer_config()


# ----------------------------------------------------------------------------- torchrun itself


def test_two_level_runs_report_from_rank_0_only(runs):
    lines = [json.loads((runs / f"rank{r}" / "record.json").read_text())["two_level_lines"] for r in range(WORLD)]
    assert lines[1] == ""
    assert lines[0].count("vqvae epoch 2 ") == lines[0].count("prior epoch 2 ") == 1
    assert "top: perplexity" in lines[0] and "top " in lines[0].split("prior epoch 2 ")[1]


def test_torchrun_runs_the_cli_with_one_voice(runs):
    stdout, stderr = (runs / "stdout.txt").read_text(), (runs / "stderr.txt").read_text()
    assert stdout.count("wrote ") == 1, stdout  # rank 1 stays quiet
    # rank 0 alone reports: the CLI run (1 epoch) and the stage runs (2 epochs each) print each epoch once
    assert stderr.count("data ") == 1 and stderr.count("vqvae epoch 1 ") == 2, stderr
    assert stderr.count("vqvae epoch 2 ") == 1 and stderr.count("prior epoch 2 ") == 2, stderr  # PixelCNN, transformer
    out = runs / "cli" / "vqvae.safetensors"
    assert [p.name for p in out.parent.glob("*.safetensors") if "resume" not in p.name] == ["vqvae.safetensors"]
    model, meta = load_vqvae(out)
    assert meta["epoch"] == 1 and model.cfg.num_codes == 32


# ----------------------------------------------------------------------------- the pieces, in one process


@pytest.mark.parametrize(
    "n, batch, world, drop_last",
    [(24, 4, 2, True), (23, 3, 2, True), (11, 8, 2, False), (10, 4, 3, False), (5, 8, 2, True)],
)
def test_shards_together_read_what_one_process_reads(n, batch, world, drop_last):
    def batches(shard: int, num_shards: int, per_process: int) -> list[list[int]]:
        s = dist.ShardedBatchSampler(
            n, per_process, shuffle=True, seed=3, drop_last=drop_last, shard=shard, num_shards=num_shards
        )
        s.set_epoch(2)
        return list(s)

    single = batches(0, 1, batch * world)
    shards = [batches(r, world, batch) for r in range(world)]
    if drop_last:  # training: every rank takes every step
        assert len({len(s) for s in shards}) == 1
    steps = max(len(s) for s in shards)
    merged = [sum((s[i] for s in shards if i < len(s)), []) for i in range(steps)]
    assert merged == single
    seen = [i for b in single for i in b]
    assert len(seen) == len(set(seen))  # nothing repeated
    if not drop_last:
        assert sorted(seen) == list(range(n))  # an evaluation pass covers the split exactly once


def test_the_shuffle_depends_on_seed_and_epoch_only():
    def order(epoch: int | None, seed: int = 0) -> list[int]:
        s = dist.ShardedBatchSampler(20, 5, shuffle=True, seed=seed, drop_last=True, shard=0, num_shards=1)
        if epoch is not None:
            s.set_epoch(epoch)
        return [i for b in s for i in b]

    assert order(1) == order(1) and order(1) != order(2) and order(1, seed=1) != order(1)
    unset = dist.ShardedBatchSampler(20, 5, shuffle=True, seed=0, drop_last=True, shard=0, num_shards=1)
    assert [i for b in unset for i in b] != [i for b in unset for i in b]  # each pass reshuffles without set_epoch


def test_make_loader_in_one_process_reads_every_item_once():
    dataset = TensorDataset(torch.arange(10))
    loader = make_loader(dataset, 4, shuffle=True, seed=0, drop_last=False)
    loader.set_epoch(1)
    assert sorted(int(i) for (b,) in loader for i in b) == list(range(10))
    assert len(make_loader(dataset, 4, shuffle=True, seed=0, drop_last=True)) == 2


def test_a_training_split_smaller_than_the_world_is_refused():
    with pytest.raises(VQGenError, match="fewer than the 4 processes"):
        dist.ShardedBatchSampler(3, 8, shuffle=True, seed=0, drop_last=True, shard=0, num_shards=4)


def test_without_a_process_group_a_process_under_torchrun_is_alone(monkeypatch):
    """A command torchrun started that never joins the group: rank 0 of 1, so it reads every item once."""
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "3"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert not dist.is_distributed()
    sampler = dist.ShardedBatchSampler(10, 4, shuffle=True, seed=0, drop_last=False)
    seen = [i for b in sampler for i in b]
    assert sorted(seen) == list(range(10))
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.launch_rank()) == (0, 1, True, 1)


def test_one_process_commands_refuse_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(VQGenError, match=r"^vqgen extract-codes runs as one process; run it without torchrun$"):
        dist.refuse_under_torchrun("extract-codes")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dist.refuse_under_torchrun("extract-codes")  # torchrun with one process is one process


def test_collectives_are_no_ops_in_one_process():
    t = torch.arange(6.0).view(3, 2)
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world_size() == 1
    for collective in (dist.all_reduce_sum, dist.broadcast, dist.gather_rows):
        assert torch.equal(collective(t), t)
    assert dist.wrap(torch.nn.Linear(2, 2), torch.device("cpu")).__class__ is torch.nn.Linear
    dist.cleanup()  # harmless without a process group


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the autocast object for CUDA is built on a CPU box
def test_precision_helpers_on_cpu_and_for_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    context = autocast(cpu, "bf16")  # CPU autocast: bfloat16 (--amp auto picks it only with native units)
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    with pytest.raises(VQGenError, match="--amp"):
        autocast(cpu, "fp8")
    context = autocast(cuda, "fp16")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.float16
    assert autocast(cuda, "off").__class__ is not torch.autocast
    assert memory_format(cuda, "bf16") == torch.channels_last
    assert memory_format(cuda, "off") == torch.contiguous_format
    assert memory_format(cpu, "off") == torch.channels_last  # oneDNN's NHWC kernels are the faster ones


def test_channels_last_models_compute_the_same():
    """What --amp on CUDA switches on: NHWC weights must not change a forward or backward pass."""
    torch.manual_seed(0)
    images = torch.rand(4, 1, 8, 8)
    cfg = VQVAEConfig(**{**vqvae_config().__dict__, "kmeans_init": False})
    nchw = VQVAE(cfg).eval()
    nhwc = VQVAE(cfg).eval()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    outputs = []
    for model in (nchw, nhwc):
        recon, q = model(images)
        (recon.square().mean() + q.loss).backward()
        outputs.append((recon, model.decoder.net[0].weight.grad))
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-5)
    prior = GatedPixelCNN(prior_config())
    codes, labels = torch.randint(16, (2, 4, 4)), torch.tensor([0, 2])
    expected = prior(codes, labels)
    assert torch.allclose(prior.to(memory_format=torch.channels_last)(codes, labels), expected, atol=1e-5)


if __name__ == "__main__":  # one rank under torchrun, launched by the ``runs`` fixture
    worker(Path(sys.argv[1]))


@pytest.mark.parametrize("variants", [1, 3])
def test_a_seed_sweep_reads_independent_orders(variants):
    # seed s at epoch e + 1 must not replay the order (or the versions) of seed s + 1 at epoch e
    def order(seed: int, epoch: int) -> list[int]:
        s = dist.ShardedBatchSampler(60, 60, shuffle=True, seed=seed, drop_last=False, shard=0, num_shards=1,
                                variants=variants)
        s.set_epoch(epoch)
        return next(iter(s))

    assert order(2, 4) == order(2, 4)
    assert order(2, 5) != order(3, 4)

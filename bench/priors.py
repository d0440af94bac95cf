"""Prior benchmark: the gated PixelCNN against the transformer, at a matched parameter count and a matched
training time, on the codes of mnist5k and of a 5,000-image CIFAR-10 subset.

For each dataset: a VQ-VAE (the defaults, a few epochs; or --vqvae-mnist / --vqvae-cifar PATH), its codes,
a reference classifier (for `vqgen evaluate`), then four class-conditional priors:

* pixelcnn: the PixelCNN (default size) for --prior-epochs;
* transformer (params): the transformer with --transformer-layers blocks and the width whose parameter
  count is closest to the PixelCNN's, for --prior-epochs;
* transformer (default): the transformer of `train-prior --arch transformer` (its default size) for
  --prior-epochs (left out when that is the row above);
* transformer (time): the default transformer for the number of epochs that takes about as long as the
  PixelCNN's training (measured from the run above; the same run when that is --prior-epochs).

Each prior's row: parameters, epochs, training seconds, best validation bits per code, and for --samples
samples (`--label all`, cached sampler) the share classified as the asked class and the Fréchet distance
in the reference classifier's features to the validation images (vqgen.eval), and the seconds they took.
A second table times the samplers (cached vs full, batch --speed-batch) of randomly initialised priors of
the two default sizes at --speed-sizes, per 1,000 samples; the full sampler on maps of more than 64 positions
is timed on its first --full-positions positions and extrapolated (one whole pass per position).

CIFAR-10 comes from --cifar-npz (images (N, 32, 32, 3) uint8, labels (N,)), written out as an image
folder with one subfolder per class, which is what vqgen reads; vqgen itself does not know that file.

    python bench/priors.py --out bench-out/priors --cifar-npz CIFAR_NPZ   # docs/benchmarks.md's table (1 to 2 hours)
    python bench/priors.py --out /tmp/priors --tiny --datasets mnist5k   # a quick check that it all runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sampling import full_first_positions, parse_size  # bench/sampling.py
from vqgen.config import (
    PRIOR_EPOCHS,
    ClassifierTrainOptions,
    DataOptions,
    PixelCNNConfig,
    PriorConfig,
    PriorTrainOptions,
    TransformerConfig,
    VQVAEConfig,
    VQVAETrainOptions,
)
from vqgen.models import build_prior
from vqgen.sampling import sample_cached, sample_full

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ALWAYS_COMPLETE = 64  # maps with at most this many positions run the full sampler completely
TINY_VQVAE = dict(hidden_channels=16, res_channels=8, num_res_blocks=1, num_codes=32, code_dim=8)


def write_cifar_folder(npz: Path, folder: Path) -> Path:
    """The CIFAR-10 subset as an image folder, one subfolder per class (written once)."""
    from PIL import Image

    done = folder.with_name(folder.name + ".done")  # beside the folder: vqgen reads every file inside
    if done.is_file():
        return folder
    arrays = np.load(npz)
    for index, (image, label) in enumerate(zip(arrays["images"], arrays["labels"])):
        target = folder / CIFAR_CLASSES[int(label)] / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)
    done.write_text("")
    return folder


def param_count(cfg: PriorConfig) -> int:
    return sum(p.numel() for p in build_prior(cfg).parameters())


def matched_transformer(pixelcnn: PixelCNNConfig, layers: int, heads: int) -> TransformerConfig:
    """The transformer of ``layers`` blocks whose parameter count is closest to the PixelCNN's."""
    target = param_count(pixelcnn)
    shared = {k: getattr(pixelcnn, k) for k in ("num_codes", "latent_shape", "num_classes", "label_dropout")}
    best = None
    for width in range(heads, 1025, heads):  # any head width
        cfg = TransformerConfig(**shared, channels=width, num_layers=layers, num_heads=heads)
        count = param_count(cfg)
        if best is None or abs(count - target) < abs(best[0] - target):
            best = (count, cfg)
        if count > target:
            break
    return best[1]


def sized(cfg: PriorConfig, codes_meta: dict[str, Any]) -> PriorConfig:
    """``cfg`` for these codes (as train-prior sizes it), class-conditional."""
    return dataclasses.replace(cfg, num_codes=codes_meta["num_codes"], latent_shape=tuple(codes_meta["latent_shape"]),
                               num_classes=len(codes_meta["label_names"]))


def train_one(name: str, cfg: PriorConfig, epochs: int, codes: Path, work: Path, args) -> dict[str, Any]:
    from vqgen.stages.train_prior import run as train_prior_on

    out = work / f"{name}.safetensors"
    opts = PriorTrainOptions(epochs=epochs, device=args.device, amp=args.amp, seed=args.seed)
    started = time.perf_counter()
    metrics = train_prior_on(codes, dataclasses.replace(cfg), opts, out, conditional=True)
    return {"name": name, "path": out, "params": param_count(cfg), "epochs": epochs,
            "train_s": time.perf_counter() - started, "val_bits_per_code": metrics["best_val_bits_per_code"]}


def sample_scores(row: dict[str, Any], classifier: Path, work: Path, args) -> None:
    """Draw --samples samples of the row's prior (one block per class) and score them with vqgen.eval."""
    from vqgen.eval import EvaluateRequest, evaluate
    from vqgen.stages.sample import run as sample

    folder = work / f"{row['name']}-samples"
    started = time.perf_counter()
    sample(row["path"], folder, args.samples, batch_size=args.speed_batch, seed=args.seed, device=args.device)
    row["sample_s"] = time.perf_counter() - started
    scores = evaluate(EvaluateRequest(samples=folder, classifier=classifier, device=args.device, seed=args.seed))
    row["in_class"], row["fd"] = scores["samples"].get("class_agreement"), scores["samples"]["fd"]
    row["fd_floor"] = scores["samples"]["floor_fd"]  # real against real images, at the same count


def bench_dataset(name: str, data: str, vqvae: Path | None, args) -> tuple[list[dict[str, Any]], list[PriorConfig]]:
    from vqgen.formats.files import read_metadata
    from vqgen.data import image_data_from_spec
    from vqgen.stages.extract_codes import run as extract_codes_for
    from vqgen.train.classifier import train_classifier
    from vqgen.stages.train_vqvae import run as train_vqvae_on

    work = args.out / name
    if vqvae is None:
        vqvae = work / "vqvae.safetensors"
        vq_cfg = VQVAEConfig(**(TINY_VQVAE if args.tiny else {}))
        vq_opts = VQVAETrainOptions(epochs=args.vqvae_epochs, device=args.device, amp=args.amp, seed=args.seed)
        train_vqvae_on(DataOptions(data=data), vq_cfg, vq_opts, vqvae)
    codes = work / "codes.safetensors"
    extract_codes_for(vqvae, codes, device=args.device)
    meta = read_metadata(codes)
    classifier = work / "classifier.safetensors"
    clf_opts = ClassifierTrainOptions(epochs=args.classifier_epochs, device=args.device, seed=args.seed)
    train_classifier(image_data_from_spec(meta["dataset"]), clf_opts, classifier)

    pixelcnn = sized(PixelCNNConfig(num_layers=args.pixelcnn_layers, channels=args.pixelcnn_channels), meta)
    matched = matched_transformer(pixelcnn, args.transformer_layers, args.transformer_heads)
    default = sized(TransformerConfig(label_dropout=pixelcnn.label_dropout), meta)  # train-prior's own size
    if args.tiny:
        default = dataclasses.replace(default, channels=16, num_layers=1, num_heads=2)
    rows = [train_one("pixelcnn", pixelcnn, args.prior_epochs, codes, work, args),
            train_one("transformer-params", matched, args.prior_epochs, codes, work, args)]
    if default != matched:
        rows.append(train_one("transformer-default", default, args.prior_epochs, codes, work, args))
    for row in rows:
        sample_scores(row, classifier, work, args)
    epochs = max(1, round(args.prior_epochs * rows[0]["train_s"] / rows[-1]["train_s"]))
    if epochs == args.prior_epochs:  # the run above took about as long already
        rows.append({**rows[-1], "name": "transformer-time"})
    else:
        rows.append(train_one("transformer-time", default, epochs, codes, work, args))
        sample_scores(rows[-1], classifier, work, args)
    return rows, [pixelcnn, default]


def sampler_seconds(cfg: PriorConfig, size: tuple[int, int], args) -> dict[str, Any]:
    """Seconds per 1,000 samples of a random unconditional prior of ``cfg``'s size, cached and full."""
    torch.manual_seed(args.seed)
    model = build_prior(dataclasses.replace(cfg, latent_shape=size, num_classes=0, label_dropout=0.0)).eval()
    per_1000 = 1000 / args.speed_batch
    started = time.perf_counter()
    cached = sample_cached(model, args.speed_batch, generator=torch.Generator().manual_seed(args.seed))
    cached_s = (time.perf_counter() - started) * per_1000
    total = size[0] * size[1]
    positions = total if total <= ALWAYS_COMPLETE else min(args.full_positions, total)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    if positions == total:
        full = sample_full(model, args.speed_batch, generator=generator)
        same = bool(torch.equal(full, cached))
    else:
        full_first_positions(model, args.speed_batch, positions, 1.0, None, generator)
        same = None
    full_s = (time.perf_counter() - started) * per_1000 * total / positions
    return {"cached_s": cached_s, "full_s": full_s, "same_codes": same, "full_positions": positions}


def tables(results: dict[str, list[dict[str, Any]]], speed: list[dict[str, Any]], args) -> list[str]:
    lines = [f"| data | prior | params | epochs | train s | val bits/code | in-class | FD ({args.samples} samples) | "
             f"FD floor | sample s ({args.samples}) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for data, rows in results.items():
        for r in rows:
            in_class = "" if r["in_class"] is None else f"{r['in_class']:.1%}"
            lines.append(f"| {data} | {r['name']} | {r['params']:,} | {r['epochs']} | {r['train_s']:.0f} | "
                         f"{r['val_bits_per_code']:.3f} | {in_class} | {r['fd']:.2f} | {r['fd_floor']:.2f} | {r['sample_s']:.1f} |")
    lines += ["", "| latent | prior | cached s / 1,000 | full s / 1,000 | speed-up | codes = full | full timing |",
              "|---|---|---:|---:|---:|---|---|"]
    for s in speed:
        timing = "measured" if s["same_codes"] is not None else f"estimated from {s['full_positions']} positions"
        same = {True: "yes", False: "NO", None: ""}[s["same_codes"]]
        lines.append(f"| {s['size']} | {s['prior']} | {s['cached_s']:.1f} | {s['full_s']:.1f} | "
                     f"{s['full_s'] / s['cached_s']:.1f}x | {same} | {timing} |")
    return lines


NPZ_HELP = "an .npz of CIFAR-10 images, arrays images (N, 32, 32, 3) uint8 and labels (N,)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out/priors"), help="work folder (models, samples)")
    parser.add_argument("--datasets", default="mnist5k,cifar10", help="mnist5k and/or cifar10")
    parser.add_argument("--cifar-npz", type=Path, help=f"{NPZ_HELP} (needed for the cifar10 rows)")
    parser.add_argument("--vqvae-mnist", type=Path, help="a VQ-VAE trained on mnist5k (default: train one)")
    parser.add_argument("--vqvae-cifar", type=Path, help="a VQ-VAE trained on the CIFAR folder (default: train one)")
    parser.add_argument("--vqvae-epochs", type=int, default=10)
    parser.add_argument("--prior-epochs", type=int, default=PRIOR_EPOCHS["pixelcnn"])
    parser.add_argument("--pixelcnn-layers", type=int, default=PixelCNNConfig.num_layers)
    parser.add_argument("--pixelcnn-channels", type=int, default=PixelCNNConfig.channels)
    parser.add_argument("--transformer-layers", type=int, default=TransformerConfig.num_layers)
    parser.add_argument("--transformer-heads", type=int, default=TransformerConfig.num_heads)
    parser.add_argument("--classifier-epochs", type=int, default=ClassifierTrainOptions.epochs)
    parser.add_argument("--samples", type=int, default=1000, help="samples scored per prior")
    parser.add_argument("--speed-sizes", default="7x7,16x16")
    parser.add_argument("--speed-batch", type=int, default=64)
    parser.add_argument("--full-positions", type=int, default=16, help="positions timed to estimate the full sampler")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default=PriorTrainOptions.amp, help="training precision, as --amp of train-prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny models, epochs and sample counts: does it all run?")
    args = parser.parse_args()
    if "cifar10" in args.datasets.split(",") and (args.cifar_npz is None or not args.cifar_npz.is_file()):
        missing = "" if args.cifar_npz is None else f" ({args.cifar_npz} does not exist)"
        sys.exit(f"error: the cifar10 rows need --cifar-npz PATH{missing}: {NPZ_HELP}; or pass --datasets mnist5k")
    if args.tiny:
        args.vqvae_epochs = args.prior_epochs = args.classifier_epochs = 1
        args.pixelcnn_layers, args.pixelcnn_channels, args.transformer_layers, args.transformer_heads = 2, 8, 1, 2
        args.samples, args.speed_sizes, args.speed_batch, args.full_positions = 40, "3x3,9x9", 4, 4
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    sources = {"mnist5k": ("mnist5k", args.vqvae_mnist),
               "cifar10": (lambda: str(write_cifar_folder(args.cifar_npz, args.out / "cifar10_5k-images")), args.vqvae_cifar)}
    results, configs = {}, []
    for name in args.datasets.split(","):
        data, vqvae = sources[name]
        results[name], configs = bench_dataset(name, data() if callable(data) else data, vqvae, args)
    speed = []
    for text in args.speed_sizes.split(","):
        size = parse_size(text)
        for cfg in configs:  # the last dataset's sizes (K, classes): K is the VQ-VAE default unless given
            speed.append({"size": text, "prior": cfg.arch, **sampler_seconds(cfg, size, args)})
            print(f"done speed {text} {cfg.arch}", flush=True)
    lines = tables(results, speed, args)
    print("\n".join(lines))
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "priors": results, "speed": speed}
    (args.out / "priors.json").write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()

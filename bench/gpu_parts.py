"""The parts of the GPU check (bench/gpu_check.py) that run vqgen's models in this process.

    env                      device, driver, torch/CUDA/cuDNN versions, free memory
    sampling                 the cached and the full sampler draw identical codes (both priors)
    masked-sampling          seconds to draw 1,000 maps: the masked prior's parallel steps against the cached
                             PixelCNN (issue 33's targets: 5x at 16x16, 20x at 32x32)
    throughput-*             images (or code maps) per second and peak memory of training steps in
                             float32, bf16 autocast and bf16 + torch.compile

Each is started by gpu_check.py as ``python bench/gpu_parts.py --part NAME RESULT_JSON WORK_DIR
[--cpu] [--quick]``. The models are built from their configurations as plain dicts (the form
checkpoints record), with generated tensors as data: throughput only, the same batch every step.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

import torch
import torch.nn.functional as F

# every name this check takes from vqgen: when the package moves one, this block is the place to follow it
from vqgen.config import VQVAEConfig, prior_config_from_dict
from vqgen.device import autocast, memory_format
from vqgen.losses import reconstruction_loss
from vqgen.models import VQVAE, build_prior
from vqgen.sampling import sample_cached, sample_full, sample_masked

from gpu_check import Mode, PartRecord, part_main

# (warm-up steps, timed steps) by Mode.scale; the warm-up also holds torch.compile's compilation
STEPS = {"gpu": (5, 20), "gpu-quick": (3, 10), "cpu": (1, 3), "cpu-quick": (1, 2)}
PRECISIONS = {"fp32": ("off", False), "bf16": ("bf16", False), "bf16+compile": ("bf16", True)}  # amp, compile

# part -> (what, config changes from the default VQ-VAE, batch on a GPU, batch on the CPU)
VQVAES = {
    "throughput-vqvae-28": ("default, 28x28x1", {}, 128, 8),
    "throughput-vqvae-32-rgb": ("--channel-mult 1,2,2 --norm group, 32x32x3",
                                {"in_channels": 3, "image_size": (32, 32), "channel_mult": "1,2,2", "norm": "group"},
                                128, 8),
    "throughput-vqvae2-128": ("--levels 2 --downsamples 3 --channel-mult 1,1,2,2 --norm group --attention, 128x128x3",
                              {"in_channels": 3, "image_size": (128, 128), "levels": 2, "num_downsamples": 3,
                               "channel_mult": "1,1,2,2", "norm": "group", "attention": True}, 32, 2),
}
TINY_VQVAE = {"hidden_channels": 16, "res_channels": 8, "num_res_blocks": 1, "num_codes": 32, "code_dim": 8}

PRIOR_MAPS = {"gpu": (8, 16, 32), "gpu-quick": (16,), "cpu": (4, 8), "cpu-quick": (4,)}  # square code maps
PRIOR_BATCH = {"gpu": 64, "cpu": 8}
# sampling: (map sizes, batches)
SAMPLING = {"gpu": ((16, 32), (64, 256)), "gpu-quick": ((16,), (64, 256)), "cpu": ((4, 6), (4, 16)),
            "cpu-quick": ((4,), (4,))}
# masked-sampling: (map sizes, maps drawn, batch, masked steps)
MASKED_SAMPLING = {"gpu": ((16, 32), 1000, 250, (4, 8, 12)), "gpu-quick": ((16, 32), 1000, 250, (8,)),
                   "cpu": ((4, 6), 16, 8, (2, 4)), "cpu-quick": ((4,), 8, 8, (2,))}
TINY_PRIORS = {"pixelcnn": {"channels": 8, "num_layers": 3}, "transformer": {"channels": 16, "num_layers": 2,
                                                                              "num_heads": 2},
               "masked": {"channels": 16, "num_layers": 2}}
NUM_CLASSES = 10  # class-conditional priors, as on mnist5k's labelled codes


def device_of(mode: Mode) -> torch.device:
    if mode.cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible to torch (the CPU check: --cpu)")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work before reading the clock (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- env


def nvidia_smi() -> dict:
    query = "name,driver_version,memory.total,memory.free"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return {"nvidia-smi": "not found"}
    return {"nvidia-smi": "; ".join(out) or "no output"}


def described(read) -> str:
    """``read()`` as text, or what stopped it: these lines inform, they do not fail the part."""
    try:
        value = read()
    except Exception as e:  # noqa: BLE001
        return f"unknown ({type(e).__name__}: {e})"
    return ".".join(map(str, value)) if isinstance(value, tuple) else str(value)


def cuda_items(device: torch.device) -> dict:
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    return {
        "device": torch.cuda.get_device_name(device), "devices": torch.cuda.device_count(),
        "compute capability": f"{props.major}.{props.minor}", "memory free / total GiB":
        f"{free / 2**30:.1f} / {total / 2**30:.1f}", "CUDA (torch built with)": torch.version.cuda,
        "cuDNN": described(torch.backends.cudnn.version), "NCCL": described(torch.cuda.nccl.version),
        "bf16 supported": torch.cuda.is_bf16_supported(), "nvidia-smi": described(nvidia_smi),
        # the float32 training rows run with these (PyTorch's defaults); the samplers turn both off
        "TF32 cuDNN / matmul": f"{torch.backends.cudnn.allow_tf32} / {torch.backends.cuda.matmul.allow_tf32}",
    }


def nvidia_smi() -> str:
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.free", "--format=csv,noheader"]
    return "; ".join(subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines())


def env(record: PartRecord, mode: Mode, work) -> None:
    import vqgen

    items = {"python": platform.python_version(), "torch": torch.__version__, "vqgen": vqgen.__version__,
             "cpu threads": torch.get_num_threads()}
    if mode.cpu:
        items["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    else:
        items.update(cuda_items(device_of(mode)))
    for item, value in items.items():
        record.add(item=item, value=value)


# ----------------------------------------------------------------------------- throughput


def train_rate(build, make_batch, loss_of, batch: int, precision: str, mode: Mode) -> dict:
    """Images per second of ``loss_of(net, model, inputs)`` training steps (Adam) after a warm-up, and peak memory."""
    device, (warmup, steps) = device_of(mode), STEPS[mode.scale]
    amp, compiled = PRECISIONS[precision]
    torch.manual_seed(0)
    if compiled:
        torch.compiler.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build().to(device, memory_format=memory_format(device, amp))
    # on the CPU the compile row checks the tracing only: inductor's C++ code generation takes minutes there
    net = torch.compile(model, backend="aot_eager" if device.type == "cpu" else "inductor") if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = make_batch(batch, device)

    def step() -> torch.Tensor:
        with autocast(device, amp):
            loss = loss_of(net, model, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    timed = time.perf_counter()
    for _ in range(steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - timed
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss.item()} after {warmup + steps} steps")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"images/s": batch * steps / seconds, "ms/step": 1e3 * seconds / steps, "peak MiB": peak,
            "warm-up s": timed - started}


def precisions(mode: Mode, part: str) -> list[str]:
    """--quick compiles the default VQ-VAE only: each compilation costs tens of seconds."""
    return [p for p in PRECISIONS if not (mode.quick and PRECISIONS[p][1] and part != "throughput-vqvae-28")]


def vqvae_throughput(part: str):
    what, changes, gpu_batch, cpu_batch = VQVAES[part]

    def run(record: PartRecord, mode: Mode, work) -> None:
        cfg = VQVAEConfig.from_dict({**changes, **(TINY_VQVAE if mode.cpu else {})})
        batch = cpu_batch if mode.cpu else gpu_batch
        shape = (cfg.in_channels, *cfg.image_size)

        def images(n: int, device: torch.device) -> torch.Tensor:
            return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)).to(device)

        def loss(net, model, x):
            recon, q = net(x)
            return reconstruction_loss(recon.float(), model.to_model(x), "psnr") + q.loss

        for precision in precisions(mode, part):
            record.attempt({"model": what, "batch": batch, "precision": precision},
                           lambda: train_rate(lambda: VQVAE(cfg), images, loss, batch, precision, mode))

    return run


def prior_config(arch: str, size: int, mode: Mode):
    return prior_config_from_dict({"arch": arch, "num_codes": 32 if mode.cpu else 512, "latent_shape": (size, size),
                                   "num_classes": NUM_CLASSES, "label_dropout": 0.1,
                                   **(TINY_PRIORS[arch] if mode.cpu else {})})


def prior_throughput(arch: str):
    def run(record: PartRecord, mode: Mode, work) -> None:
        batch = PRIOR_BATCH["cpu" if mode.cpu else "gpu"]

        def loss(net, model, inputs):
            codes, labels = inputs
            return F.cross_entropy(net(codes, labels).float(), codes)

        for size in PRIOR_MAPS[mode.scale]:
            cfg = prior_config(arch, size, mode)

            def codes(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
                g = torch.Generator().manual_seed(0)
                return (torch.randint(cfg.num_codes, (n, size, size), generator=g).to(device),
                        (torch.arange(n) % NUM_CLASSES).to(device))

            for precision in precisions(mode, f"throughput-{arch}"):
                record.attempt({"prior": f"{arch}, {size}x{size} codes", "batch": batch, "precision": precision},
                               lambda: train_rate(lambda: build_prior(cfg), codes, loss, batch, precision, mode))

    return run


# ----------------------------------------------------------------------------- sampling


def compare_samplers(arch: str, size: int, batch: int, mode: Mode) -> dict:
    """Seconds of the full and the cached sampler for the same seed; raises unless their codes are identical."""
    device = device_of(mode)
    torch.manual_seed(0)
    model = build_prior(prior_config(arch, size, mode)).to(device).eval()
    labels = torch.arange(batch) % NUM_CLASSES
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    cudnn.allow_tf32 = matmul.allow_tf32 = True  # the worst case (cuDNN's default): the samplers must switch TF32 off
    codes, seconds = {}, {}
    for name, sampler in (("full", sample_full), ("cached", sample_cached)):
        synchronize(device)
        started = time.perf_counter()
        codes[name] = sampler(model, batch, labels, 1.0, None, torch.Generator().manual_seed(0), device=device)
        synchronize(device)
        seconds[name] = time.perf_counter() - started
    if not (cudnn.allow_tf32 and matmul.allow_tf32):
        raise RuntimeError("the samplers did not restore the TF32 flags")
    differ = int((codes["full"] != codes["cached"]).sum())
    if differ:
        raise AssertionError(f"the cached codes differ from the full sampler's at {differ} of "
                             f"{codes['full'].numel()} positions")
    if codes["full"].unique().numel() < 2:
        raise AssertionError("degenerate draw: every code the same")
    return {"full s": seconds["full"], "cached s": seconds["cached"], "speed-up": seconds["full"] / seconds["cached"],
            "identical": True}


def sampling(record: PartRecord, mode: Mode, work) -> None:
    sizes, batches = SAMPLING[mode.scale]
    for arch in ("pixelcnn", "transformer"):
        for size in sizes:
            for batch in batches:
                record.attempt({"prior": arch, "map": f"{size}x{size}", "batch": batch},
                               lambda: compare_samplers(arch, size, batch, mode))


def seconds_to_draw(draw, n: int, batch: int, device: torch.device) -> float:
    """Wall seconds of ``draw(count, labels)`` called for ``n`` maps in batches of ``batch`` (one warm-up
    batch first, untimed: CUDA's kernels load on first use)."""
    draw(min(batch, n), torch.arange(min(batch, n)) % NUM_CLASSES)
    synchronize(device)
    started = time.perf_counter()
    for first in range(0, n, batch):
        count = min(batch, n - first)
        draw(count, torch.arange(first, first + count) % NUM_CLASSES)
    synchronize(device)
    return time.perf_counter() - started


def masked_sampling(record: PartRecord, mode: Mode, work) -> None:
    """The masked prior's default network drawing whole maps in parallel steps, against the cached PixelCNN at
    its defaults for the same map (class-conditional, no guidance, untrained weights: the time does not
    depend on them)."""
    device = device_of(mode)
    sizes, n, batch, step_counts = MASKED_SAMPLING[mode.scale]
    for size in sizes:
        torch.manual_seed(0)
        pixelcnn = build_prior(prior_config("pixelcnn", size, mode)).to(device).eval()
        masked = build_prior(prior_config("masked", size, mode)).to(device).eval()
        generator = torch.Generator().manual_seed(0)  # the samplers draw their noise on the CPU
        cached = {}

        def base() -> dict:
            cached["s"] = seconds_to_draw(lambda count, labels: sample_cached(
                pixelcnn, count, labels.to(device), generator=generator, device=device), n, batch, device)
            return {"seconds": cached["s"], "speed-up": 1.0}

        record.attempt({"map": f"{size}x{size}", "prior": "PixelCNN, cached", "steps": size * size, "maps": n}, base)
        for steps in step_counts:
            def parallel(steps: int = steps) -> dict:
                seconds = seconds_to_draw(lambda count, labels: sample_masked(
                    masked, count, labels.to(device), generator=generator, device=device, steps=steps),
                    n, batch, device)
                return {"seconds": seconds, "speed-up": cached["s"] / seconds if "s" in cached else None}

            record.attempt({"map": f"{size}x{size}", "prior": "masked", "steps": steps, "maps": n}, parallel)


PARTS = {"env": env, "sampling": sampling, "masked-sampling": masked_sampling,
         **{part: vqvae_throughput(part) for part in VQVAES}, "throughput-pixelcnn": prior_throughput("pixelcnn"), "throughput-transformer": prior_throughput("transformer")}

if __name__ == "__main__":
    part_main(PARTS)

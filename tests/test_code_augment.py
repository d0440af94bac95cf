"""Codes of shifted copies of the training images (`extract-codes --augment-copies`), and a prior that reads
one encoding of each image per epoch."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import TINY_PRIOR, run_cli
from vqgen import distributed as dist
from vqgen.formats.checkpoints import load_vqvae
from vqgen.formats.files import load_vqgen_file, read_metadata, save_vqgen_file
from vqgen.config import ExtractOptions, PixelCNNConfig, PriorTrainOptions, copies_kind
from vqgen.data import image_data_from_spec
from vqgen.data.augment import draw_copy_shifts, shift_images
from vqgen.data.batches import make_loader
from vqgen.errors import VQGenError
from vqgen.stages.extract_codes import extract_codes
from vqgen.formats.codes import load_codes
from vqgen.train.prior import PriorTrainer


def epoch_indices(sampler: dist.ShardedBatchSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return [i for batch in sampler for i in batch]


def test_each_epoch_reads_every_item_once_in_a_version_drawn_per_epoch():
    n, versions = 10, 4
    sampler = dist.ShardedBatchSampler(n, 3, shuffle=True, seed=0, drop_last=False, shard=0, num_shards=1,
                                       variants=versions)
    seen = torch.zeros(n, versions, dtype=torch.long)
    for epoch in range(12):
        indices = epoch_indices(sampler, epoch)
        assert sorted(i % n for i in indices) == list(range(n)) and max(indices) < n * versions
        seen[torch.tensor(indices) % n, torch.tensor(indices) // n] += 1
    assert (seen.sum(1) == 12).all() and (seen > 0).sum(1).min() >= 2  # every item in several versions
    # the item order is the shuffle of the sampler without versions; two shards read what one does
    plain = dist.ShardedBatchSampler(n, 3, shuffle=True, seed=0, drop_last=False, shard=0, num_shards=1)
    assert [i % n for i in epoch_indices(sampler, 5)] == epoch_indices(plain, 5)
    shards = [dist.ShardedBatchSampler(n, 3, shuffle=True, seed=0, drop_last=False, shard=r, num_shards=2,
                                       variants=versions) for r in range(2)]
    one = dist.ShardedBatchSampler(n, 6, shuffle=True, seed=0, drop_last=False, shard=0, num_shards=1,
                                   variants=versions)
    assert sorted(epoch_indices(shards[0], 3) + epoch_indices(shards[1], 3)) == sorted(epoch_indices(one, 3))


def test_extract_codes_appends_the_codes_of_shifted_copies_of_the_training_images(tiny_pipeline, tmp_path):
    vqvae_path = tiny_pipeline["vqvae"]
    model, vq_meta = load_vqvae(vqvae_path, "cpu")
    spec = {**vq_meta["dataset"], "image_size": vq_meta["image"]["size"], "channels": vq_meta["image"]["channels"]}
    data = image_data_from_spec(spec)
    augment = ExtractOptions(augment_copies=2, augment_shift=1, augment_seed=5)
    meta = extract_codes(vqvae_path, data, tmp_path / "copies.safetensors", device="cpu", augment=augment)
    extract_codes(vqvae_path, data, tmp_path / "plain.safetensors", device="cpu",
                  augment=ExtractOptions(augment_copies=0))
    copies, _ = load_vqgen_file(tmp_path / "copies.safetensors", "codes")
    plain, plain_meta = load_vqgen_file(tmp_path / "plain.safetensors", "codes")
    n = len(data.train)
    assert meta["num_train"] == 3 * n and plain_meta["num_train"] == n and meta["num_val"] == plain_meta["num_val"]
    assert meta["augment"] == {"augment_copies": 2, "augment_shift": 1, "flip": False, "augment_seed": 5,
                               "num_train_images": n}  # grey digits: no mirror images unless asked
    assert copies_kind(meta["augment"]) == "shifted"
    assert meta["codebook_audit"] == plain_meta["codebook_audit"]  # the audit is that of the images themselves
    assert torch.equal(copies["train_codes"][:n], plain["train_codes"])
    assert torch.equal(copies["val_codes"], plain["val_codes"])
    assert torch.equal(copies["train_labels"], plain["train_labels"].repeat(3))
    images = torch.cat([x for x, _ in make_loader(data.train, 512, shuffle=False, seed=0)])
    for copy in range(2):
        shifted = shift_images(images, draw_copy_shifts(n, 1, 5, copy))
        with torch.no_grad():
            expected = model.encode(shifted)
        assert torch.equal(copies["train_codes"][(copy + 1) * n:(copy + 2) * n].long(), expected.long())
    changed = (copies["train_codes"][n:2 * n] != plain["train_codes"]).float().mean()
    assert changed > 0.01  # a one-pixel shift gives other codes (here a few in a hundred; 6 in 7 on command 1)


def test_asked_for_mirror_images_every_other_copy_is_mirrored(tiny_pipeline, tmp_path):
    vqvae_path = tiny_pipeline["vqvae"]
    model, vq_meta = load_vqvae(vqvae_path, "cpu")
    spec = {**vq_meta["dataset"], "image_size": vq_meta["image"]["size"], "channels": vq_meta["image"]["channels"]}
    data = image_data_from_spec(spec)
    augment = ExtractOptions(augment_copies=3, augment_shift=1, flip=True, augment_seed=5)
    meta = extract_codes(vqvae_path, data, tmp_path / "mirrored.safetensors", device="cpu", augment=augment)
    codes, _ = load_vqgen_file(tmp_path / "mirrored.safetensors", "codes")
    assert meta["augment"]["flip"] is True
    assert copies_kind(meta["augment"]) == "shifted and mirrored"  # what extract-codes and train-prior report
    n = len(data.train)
    images = torch.cat([x for x, _ in make_loader(data.train, 512, shuffle=False, seed=0)])
    for copy, mirrored in enumerate([True, False, True]):
        shifted = shift_images(images, draw_copy_shifts(n, 1, 5, copy))
        with torch.no_grad():
            expected = model.encode(shifted.flip(-1) if mirrored else shifted)
        assert torch.equal(codes["train_codes"][(copy + 1) * n:(copy + 2) * n].long(), expected.long())


def test_the_prior_reads_one_encoding_of_each_training_image_per_epoch(tmp_path):
    n, copies = 40, 3
    versions = torch.arange(copies + 1).repeat_interleave(n)  # every map of version v holds the code v only
    tensors = {"train_codes": versions[:, None, None].expand(-1, 4, 4).to(torch.int16).contiguous(),
               "train_labels": (torch.arange(n) % 2).repeat(copies + 1),
               "val_codes": torch.zeros(8, 4, 4, dtype=torch.int16), "val_labels": torch.arange(8) % 2}
    meta = {"kind": "codes", "num_codes": 16, "latent_shape": [4, 4], "label_names": ["a", "b"],
            "vqvae_sha256": "0" * 64, "vqvae_path": "vqvae.safetensors", "dataset": {"data": "test"},
            "image": {"channels": 1, "size": [16, 16]}, "num_train": n * (copies + 1), "num_val": 8,
            "augment": {"augment_copies": copies, "augment_shift": 1, "augment_seed": 0, "num_train_images": n}}
    save_vqgen_file(tmp_path / "codes.safetensors", tensors, meta)
    codes = load_codes(tmp_path / "codes.safetensors")
    assert codes.variants == copies + 1
    cfg = PixelCNNConfig(num_codes=16, latent_shape=(4, 4), num_layers=2, channels=8)
    trainer = PriorTrainer(codes, cfg, PriorTrainOptions(batch_size=8, device="cpu"), torch.device("cpu"),
                           tmp_path / "p.safetensors")
    assert len(trainer.train_batches) == n // 8
    read = []
    for epoch in range(2):
        trainer.train_batches.set_epoch(epoch)
        read.append(torch.cat([x[:, 0, 0] for x, _ in trainer.train_batches]))
    assert all(len(r) == n for r in read)
    counts = torch.bincount(torch.cat(read), minlength=copies + 1)
    assert (counts > 0).all()  # every version is read, about equally often
    assert not torch.equal(read[0], read[1])
    save_vqgen_file(tmp_path / "bad.safetensors", {**tensors, "train_codes": tensors["train_codes"][:-1],
                                                   "train_labels": tensors["train_labels"][:-1]},
                    {**meta, "num_train": n * (copies + 1) - 1})
    with pytest.raises(VQGenError, match="are not 4 encodings of each image"):
        load_codes(tmp_path / "bad.safetensors")


def test_train_prior_reports_the_copies_and_steps_through_each_image_once_an_epoch(tiny_pipeline, tmp_path):
    out = tmp_path / "prior.safetensors"
    result = run_cli("train-prior", tiny_pipeline["codes"], "--out", out, "--epochs", "1", "--device", "cpu",
                     *TINY_PRIOR)
    images = read_metadata(tiny_pipeline["codes"])["augment"]["num_train_images"]
    assert f"each of {images} images and 3 shifted copies" in result.output
    assert re.search(r"val code maps, (conditional on \d+ classes|unconditional)", result.output)
    assert read_metadata(out)["metrics"]["step"] == images // 64

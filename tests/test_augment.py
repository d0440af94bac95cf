"""Whole-pixel shifts and mirror images: exact pixel values, a fixed shift and flip per (seed, epoch, index)."""

import pytest
import torch

from vqgen import distributed as dist
from vqgen.config import VQVAETrainOptions, is_photo
from vqgen.data.augment import draw_flips, draw_shifts, flip_images, shift_images
from vqgen.data import TensorImages
from vqgen.errors import VQGenError
from vqgen.data.batches import Batches, make_loader


def numbered_images(n: int = 10, size: int = 6) -> TensorImages:
    """Images whose pixels are all different, so any misplaced pixel shows."""
    pixels = torch.arange(n * size * size).view(n, size, size) % 251
    return TensorImages(pixels.to(torch.uint8), torch.arange(n), (size, size), 1)


def test_a_shift_moves_content_and_repeats_the_edge():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    down_left = shift_images(image, torch.tensor([[1, -1]]))[0, 0]
    assert torch.equal(down_left[1:, :3], image[0, 0, :3, 1:])  # content moved one down, one left
    assert torch.equal(down_left[0], down_left[1])  # the uncovered top row repeats its neighbour
    assert torch.equal(down_left[:, 3], down_left[:, 2])  # and so does the uncovered right column


def test_each_image_gets_its_own_shift_and_keeps_its_pixel_values():
    images = torch.rand(5, 2, 8, 8)
    shifts = torch.tensor([[0, 0], [2, 0], [0, -2], [-1, 1], [2, 2]])
    moved = shift_images(images, shifts)
    for image, out, (dy, dx) in zip(images, moved, shifts.tolist()):
        expected = torch.roll(image, (dy, dx), dims=(1, 2))
        inside = (slice(None), slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0)))
        assert torch.equal(out[inside], expected[inside])  # whole pixels: values copied, not resampled


def test_no_shift_is_the_identity():
    images = torch.rand(3, 1, 5, 5)
    assert torch.equal(shift_images(images, torch.zeros(3, 2, dtype=torch.long)), images)


def test_shifts_are_in_range_and_fixed_by_seed_and_epoch():
    shifts = draw_shifts(2000, 2, seed=0, epoch=1)
    assert shifts.shape == (2000, 2) and shifts.min() == -2 and shifts.max() == 2
    assert torch.equal(shifts, draw_shifts(2000, 2, seed=0, epoch=1))
    assert not torch.equal(shifts, draw_shifts(2000, 2, seed=0, epoch=2))
    assert not torch.equal(shifts, draw_shifts(2000, 2, seed=1, epoch=1))


def test_loader_serves_the_same_images_as_without_augmentation_but_shifted():
    dataset = numbered_images()
    plain = make_loader(dataset, 4, shuffle=True, seed=3, drop_last=True)
    shifted = make_loader(dataset, 4, shuffle=True, seed=3, drop_last=True, max_shift=1)
    plain.set_epoch(2)
    shifted.set_epoch(2)
    shifts = draw_shifts(len(dataset), 1, seed=3, epoch=2)
    for (x, y), (xs, ys) in zip(plain, shifted):
        assert torch.equal(y, ys)  # same order: the shuffle does not change
        assert torch.equal(shift_images(x, shifts[y]), xs)  # labels here are the indices
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(plain, shifted))


def test_shards_together_read_the_images_one_process_reads():
    dataset = numbered_images(12)

    def read(batch, shard, shards):
        batches = Batches(dataset, dist.ShardedBatchSampler(
            12, batch, shuffle=True, seed=0, drop_last=True, shard=shard, num_shards=shards), 2, True, {})
        batches.set_epoch(5)
        return [x for x, _ in batches]

    one = read(4, 0, 1)
    two = [read(2, r, 2) for r in range(2)]
    for step, whole in enumerate(one):
        assert torch.equal(whole, torch.cat([two[0][step], two[1][step]]))


def test_a_negative_shift_is_refused():
    with pytest.raises(VQGenError, match="--augment-shift"):
        make_loader(numbered_images(), 4, shuffle=True, seed=0, max_shift=-1)


def test_a_seed_sweep_draws_independent_shifts_every_epoch():
    # seed s at epoch e + 1 must not replay seed s + 1 at epoch e (as seed + epoch did)
    for seed, epoch in ((0, 0), (3, 5)):
        assert not torch.equal(draw_shifts(500, 2, seed, epoch + 1), draw_shifts(500, 2, seed + 1, epoch))


def test_extract_codes_copies_do_not_reuse_the_training_shifts():
    from vqgen.data.augment import draw_copy_shifts

    for copy in range(3):
        assert not torch.equal(draw_copy_shifts(500, 2, 0, copy), draw_shifts(500, 2, 0, copy))
    assert torch.equal(draw_copy_shifts(500, 2, 7, 1), draw_copy_shifts(500, 2, 7, 1))


def test_flip_images_mirrors_exactly_the_flagged_images():
    images = torch.stack([numbered_images()[i][0] for i in range(4)])
    flips = torch.tensor([True, False, False, True])
    out = flip_images(images, flips)
    for i in range(4):
        expected = images[i].flip(-1) if flips[i] else images[i]
        assert torch.equal(out[i], expected)
    assert not torch.equal(images[0].flip(-1), images[0])  # the test images are not symmetric


def test_flips_are_fixed_by_seed_and_epoch_and_mirror_about_half():
    a, b = draw_flips(2000, seed=1, epoch=3), draw_flips(2000, seed=1, epoch=3)
    assert torch.equal(a, b) and a.dtype == torch.bool
    assert not torch.equal(a, draw_flips(2000, seed=1, epoch=4)) and not torch.equal(a, draw_flips(2000, seed=2, epoch=3))
    assert 0.45 < a.double().mean() < 0.55


def test_loader_with_flips_serves_the_shifted_images_mirrored_as_drawn():
    dataset = numbered_images()
    plain = make_loader(dataset, 4, shuffle=True, seed=3, drop_last=True)
    augmented = make_loader(dataset, 4, shuffle=True, seed=3, drop_last=True, max_shift=1, flip=True)
    plain.set_epoch(2)
    augmented.set_epoch(2)
    shifts, flips = draw_shifts(len(dataset), 1, seed=3, epoch=2), draw_flips(len(dataset), seed=3, epoch=2)
    for (x, y), (xa, ya) in zip(plain, augmented):
        assert torch.equal(y, ya)
        assert torch.equal(flip_images(shift_images(x, shifts[y]), flips[y]), xa)
    flip_only = make_loader(dataset, 4, shuffle=True, seed=3, drop_last=True, flip=True)
    flip_only.set_epoch(2)
    for (x, y), (xf, _) in zip(plain, flip_only):
        assert torch.equal(flip_images(x, flips[y]), xf)


def test_mirror_images_and_the_discriminator_follow_the_image_kind_unless_asked():
    assert is_photo(3, (32, 32)) and not is_photo(1, (32, 32)) and not is_photo(3, (8, 8))
    photos, digits = VQVAETrainOptions().settled_for(3, (32, 32)), VQVAETrainOptions().settled_for(1, (28, 28))
    assert (photos.flip, photos.gan.gan) == (True, True) and (digits.flip, digits.gan.gan) == (False, False)
    asked = VQVAETrainOptions(flip=False).settled_for(3, (32, 32))
    assert asked.flip is False and asked.gan.gan is True
    assert VQVAETrainOptions(flip=True).settled_for(1, (28, 28)).flip is True


def test_the_vqvae_epochs_follow_the_image_kind_and_quantizer_unless_given():
    from vqgen.config import VQVAE_EPOCHS, VQVAE_EPOCHS_RVQ_PHOTOS

    assert VQVAETrainOptions().epochs is None and VQVAE_EPOCHS_RVQ_PHOTOS < VQVAE_EPOCHS
    assert VQVAETrainOptions().settled_for(3, (32, 32), "rvq").epochs == VQVAE_EPOCHS_RVQ_PHOTOS
    assert VQVAETrainOptions().settled_for(3, (32, 32), "vq").epochs == VQVAE_EPOCHS
    assert VQVAETrainOptions().settled_for(1, (28, 28), "rvq").epochs == VQVAE_EPOCHS  # measured on photos only
    assert VQVAETrainOptions(epochs=3).settled_for(3, (32, 32), "rvq").epochs == 3


@pytest.mark.parametrize("quantizer, expected", [(None, "rvq photos"), ("vq", "others")])
def test_train_vqvae_settles_the_epochs_for_the_quantizer_it_builds(monkeypatch, tmp_path, quantizer, expected):
    import vqgen.train.vqvae as stage
    from vqgen.config import VQVAE_EPOCHS, VQVAE_EPOCHS_RVQ_PHOTOS, VQVAEConfig

    seen = {}
    monkeypatch.setattr(stage, "train", lambda make, opts, out, resume: seen.setdefault("opts", opts))
    stage.train_vqvae(None, VQVAEConfig(in_channels=3, image_size=(32, 32), quantizer=quantizer), VQVAETrainOptions(),
                      tmp_path / "vqvae.safetensors")
    assert seen["opts"].epochs == (VQVAE_EPOCHS_RVQ_PHOTOS if expected == "rvq photos" else VQVAE_EPOCHS)

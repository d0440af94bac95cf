"""Sample grids that read in an image viewer: each class a block of rows at most 16 wide, small images enlarged."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import run_cli
from vqgen.formats.images import save_grid, viewer_scale
from vqgen.stages.sample import GRID_COLUMNS, grid_cells, parse_labels


def test_each_class_wraps_into_a_block_of_rows_parted_by_a_blank_row():
    labels, rows = parse_labels("all", [str(c) for c in range(10)], True, 1000)
    images = torch.stack([torch.full((1, 4, 4), (label + 1) / 20) for label in labels])
    cells, columns = grid_cells(images, rows)
    assert columns == GRID_COLUMNS == 16
    block = 7 * 16  # 100 samples in rows of 16: 6 full rows and 4 in the seventh
    assert len(cells) == 10 * block + 9 * 16  # and a blank row between blocks
    for c in range(10):
        start = c * (block + 16)
        assert torch.all(cells[start : start + 100] == (c + 1) / 20)  # the class's samples, in order
        assert torch.all(cells[start + 100 : start + block + (16 if c < 9 else 0)] == 0.5)  # then blanks


def test_short_classes_keep_one_row_each():
    labels, rows = parse_labels("all", ["a", "b", "c"], True, 8)  # 3, 3, 2
    cells, columns = grid_cells(torch.rand(8, 1, 4, 4), rows)
    assert columns == 3 and len(cells) == 9 and torch.all(cells[8] == 0.5)


@pytest.mark.parametrize("size, columns, scale", [
    (28, 7, 2),    # --n 64 of digits, one row per class: 408 px wide
    (28, 16, 2),   # small images are enlarged even when the grid is wide already
    (28, 3, 5),    # a narrow grid grows to 400 px
    (64, 16, 1),   # large images stay as they are
    (256, 1, 2),
    (4, 1, 8),     # at most 8x
])
def test_viewer_scale(size, columns, scale):
    assert viewer_scale(size, columns) == scale
    width = lambda s: columns * (s * size + 2) + 2  # noqa: E731  (the grid's width at scale s)
    assert width(scale) >= 400 or scale == 8
    assert scale == (2 if size < 64 else 1) or width(scale - 1) < 400  # no larger than it needs to be


def test_grid_cells_are_the_images_enlarged_by_nearest_neighbour(tmp_path):
    images = torch.rand(3, 3, 5, 5)
    save_grid(images, tmp_path / "grid.png", nrow=3, scale=3)
    grid = np.asarray(Image.open(tmp_path / "grid.png")).astype(int)
    assert grid.shape == (2 + 15 + 2, 2 + 3 * (15 + 2), 3)
    second = grid[2 : 2 + 15, 2 + 17 : 2 + 17 + 15]
    expected = (images[1].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(int)
    assert np.array_equal(second, expected.repeat(3, axis=0).repeat(3, axis=1))


def test_sample_grid_wraps_and_enlarges_while_the_pngs_keep_their_size(tiny_pipeline, tmp_path):
    out = tmp_path / "samples"
    run_cli("sample", tiny_pipeline["prior"], "--n", "200", "--label", "all", "--out", out, "--device", "cpu")
    with Image.open(out / "0000.png") as one:
        assert one.size == (28, 28)
    cell = 2 * 28 + 2
    with Image.open(out / "grid.png") as grid:
        # 20 a class: two rows of 16 each, and a blank row between classes: 10 x 2 + 9 rows
        assert grid.size == (16 * cell + 2, (10 * 2 + 9) * cell + 2)
        pixels = np.asarray(grid).astype(int)
    with Image.open(out / "0017.png") as seventeenth:  # class 0's 18th sample: second row, second column
        expected = np.asarray(seventeenth).astype(int).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(pixels[2 + cell : 2 + cell + 56, 2 + cell : 2 + cell + 56], expected)

"""Glyphs: a small convolutional network that learns to read digits and letters drawn with Pillow.

Each peer renders its own pool of glyphs (Pillow's built-in scalable font at a random size, position,
rotation, stroke and brightness) from its seed, once per process, and reads the pool in its own
order; every batch gets a fresh random shift and noise, so no two epochs show the same pixels.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from hiveling.core.recipes import Plan, RecipeError

# No I or O: in this font they are drawn like 1 and 0, and a label the image cannot show is noise.
CHARACTERS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
IMAGE_SIZE = 28
POOL_SIZE = 32_768  # rendered once per seed and process: about 0.5 s and 25 MB
EPOCH_SAMPLES = 1 << 20  # minutes per epoch even on a GPU
MAX_SHIFT = 2  # pixels a batch moves each image, on top of the position drawn into the pool
INIT_SEED = 0  # every peer builds the same initial weights
# Peers' data seeds are 32-bit (run.data_seed): this one draws glyphs none of them trains on.
HELD_OUT_SEED = 1 << 40
HELD_OUT_SIZE = 512  # about 0.1 s to score on one CPU thread


class GlyphNet(pl.LightningModule):
    """Two convolutional stages and a small classifier head."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(dict(hparams))
        width = int(hparams["width"])
        hidden = int(hparams["hidden"])
        self.lr = float(hparams["lr"])
        self.weight_decay = float(hparams["weight_decay"])
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = IMAGE_SIZE // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(float(hparams["dropout"])),
            nn.Linear(hidden, len(CHARACTERS)),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(images))
        return logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("loss", loss, on_step=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warmup = max(1, int(self.hparams.get("warmup_steps", 1)))
        # A linear warm-up: at full rate from the first step, Adam can silence every ReLU of this
        # small network for good (seen: 130 collaborative steps at chance). One step per
        # collaborative step: the strategy drives it.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class GlyphPool(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``length`` samples that cycle through a pool of rendered images (uint8) and their labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, length: int) -> None:
        self.images = images
        self.labels = labels
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index %= len(self.images)
        return self.images[index], self.labels[index]


class Augment:
    """Collates a batch: scales to [0, 1], shifts each image a little and adds noise."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image for image, _ in items]).float().div_(255)
        labels = torch.stack([label for _, label in items])
        count = len(items)
        padded = F.pad(images, (MAX_SHIFT,) * 4)
        dy, dx = torch.randint(0, 2 * MAX_SHIFT + 1, (2, count, 1), generator=self.generator)
        span = torch.arange(IMAGE_SIZE)
        rows = (dy + span)[:, :, None]
        columns = (dx + span)[:, None, :]
        images = padded[torch.arange(count)[:, None, None], rows, columns]
        level = 0.15 * torch.rand(count, 1, 1, generator=self.generator)
        images = images + level * torch.randn(images.shape, generator=self.generator)
        return images.unsqueeze(1), labels


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Without FreeType, Pillow returns its fixed-size bitmap font; glyphs then vary in all but size.
    return ImageFont.load_default(size=size)


def draw_stamp(
    character: str, typeface: ImageFont.FreeTypeFont | ImageFont.ImageFont, stroke: int
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """``character`` upright, at full brightness, centred in an ``IMAGE_SIZE`` square."""
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), character, font=typeface, stroke_width=stroke)
    origin = (IMAGE_SIZE / 2 - (left + right) / 2, IMAGE_SIZE / 2 - (top + bottom) / 2)
    draw.text(origin, character, fill=255, font=typeface, stroke_width=stroke)
    return np.asarray(image, dtype=np.uint8)


@functools.cache
def stamp(label: int, size: int, stroke: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return draw_stamp(CHARACTERS[label], font(size), stroke)


@functools.lru_cache(maxsize=2)
def render_pool(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` glyph images (uint8) and their labels; the same seed and Pillow give the same pool.

    Pillow draws each character, size and stroke once (about a thousand stamps); every image is a
    stamp moved, rotated and dimmed at random, all at once with ``grid_sample``: drawing 32,768
    glyphs one by one took 5 s of each peer's start on a slow CPU, this takes a tenth of that.
    """
    rng = random.Random(seed)
    labels: list[int] = []
    stamps: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
    moves: list[tuple[float, float, float, float]] = []  # angle, x and y offset, brightness
    for _ in range(count):
        labels.append(rng.randrange(len(CHARACTERS)))
        stamps.append(stamp(labels[-1], rng.randint(12, 26), rng.choice((0, 0, 1))))
        moves.append((rng.uniform(-20, 20), rng.uniform(-3, 3), rng.uniform(-3, 3), rng.randint(140, 255)))
    images = torch.from_numpy(np.stack(stamps)) if stamps else torch.empty(0, IMAGE_SIZE, IMAGE_SIZE)
    return _move(images, torch.tensor(moves, dtype=torch.float64)), torch.tensor(labels, dtype=torch.long)


# Each pixel's centre as (x, y, 1) in grid_sample's coordinates (what affine_grid builds, 5x slower).
_CENTRES_1D = (torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5) * 2 / IMAGE_SIZE - 1
_PIXEL_CENTRES = torch.stack(
    [
        _CENTRES_1D.expand(IMAGE_SIZE, -1),
        _CENTRES_1D[:, None].expand(-1, IMAGE_SIZE),
        torch.ones(IMAGE_SIZE, IMAGE_SIZE),
    ],
    dim=-1,
)


def _move(stamps: torch.Tensor, moves: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Each stamp rotated about its new centre, shifted by its offset (pixels) and dimmed (0-255)."""
    out = torch.empty(stamps.shape, dtype=torch.uint8)
    for begin in range(0, len(stamps), chunk):
        part = moves[begin : begin + chunk]
        angle = torch.deg2rad(part[:, 0])
        cos, sin = torch.cos(angle), torch.sin(angle)
        # grid_sample's coordinates run from -1 to 1 across the image: an offset of d pixels is 2d/size.
        centre_x, centre_y = 2 * part[:, 1] / IMAGE_SIZE, 2 * part[:, 2] / IMAGE_SIZE
        # Output point p reads the stamp at R (p - c), c the glyph's new centre.
        theta = torch.stack(
            [
                torch.stack([cos, -sin, -(cos * centre_x - sin * centre_y)], dim=1),
                torch.stack([sin, cos, -(sin * centre_x + cos * centre_y)], dim=1),
            ],
            dim=1,
        ).float()
        source = stamps[begin : begin + chunk].unsqueeze(1).float()
        grid = torch.einsum("hwk,nik->nhwi", _PIXEL_CENTRES, theta)
        moved = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        dimmed = moved.squeeze(1) * (part[:, 3].float() / 255)[:, None, None]
        out[begin : begin + chunk] = dimmed.round_().clamp_(0, 255).to(torch.uint8)
    return out


def build(hparams: Mapping[str, Any], seed: int) -> Plan:
    """The glyph classifier (identical on every peer) and a loader of this peer's glyphs."""
    for key in ("width", "hidden"):
        if int(hparams[key]) < 1:
            raise RecipeError(
                f"glyphs: hyperparameter {key} must be a positive integer, not {hparams[key]!r}"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        module = GlyphNet(hparams)
    seed %= 1 << 63

    def make_loader(batch_size: int) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        dataset = GlyphPool(*render_pool(seed, POOL_SIZE), length=EPOCH_SAMPLES)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
            collate_fn=Augment(seed + 1),
            drop_last=True,
            num_workers=0,
        )

    return Plan(module=module, make_loader=make_loader, evaluate=accuracy)


def accuracy(module: pl.LightningModule) -> float:
    """The share of held-out glyphs the module reads right."""
    images, labels = render_pool(HELD_OUT_SEED, HELD_OUT_SIZE)
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            logits = module(images.to(device).float().div_(255).unsqueeze(1))
        return float((logits.argmax(1).cpu() == labels).float().mean())
    finally:
        module.train(was_training)

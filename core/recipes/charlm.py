"""Charlm: a small GPT-style transformer that learns to write like Python's own documentation.

The text is the documentation bundled with Python (``pydoc_data.topics``, about 465k characters) or,
where a distribution leaves that out, the docstrings of a fixed set of standard modules. The
vocabulary is the 256 byte values, so every machine agrees on it whatever its text. Each peer reads
every window of the text in its own order.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

from hiveling.core.recipes import Plan, RecipeError

VOCABULARY = 256
INIT_SEED = 0  # every peer builds the same initial weights
# Read for their docstrings where pydoc_data is missing: documented, and free of import side effects.
DOCSTRING_MODULES = (
    "builtins",
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "http.client",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "math",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a feed-forward layer."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.feed_forward_norm = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, length, width))
        result: torch.Tensor = x + self.feed_forward(self.feed_forward_norm(x))
        return result


class CharLM(pl.LightningModule):
    """Byte embeddings plus learned positions, ``layers`` blocks and a byte classifier."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(dict(hparams))
        width = int(hparams["width"])
        self.context = int(hparams["context"])
        self.lr = float(hparams["lr"])
        self.weight_decay = float(hparams["weight_decay"])
        self.embedding = nn.Embedding(VOCABULARY, width)
        self.position = nn.Embedding(self.context, width)
        self.blocks = nn.Sequential(
            *(Block(width, int(hparams["heads"])) for _ in range(int(hparams["layers"])))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCABULARY)
        self.apply(initialize)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.blocks(self.embedding(tokens) + self.position(positions))
        logits: torch.Tensor = self.head(self.norm(hidden))
        return logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        tokens, targets = batch
        loss = F.cross_entropy(self(tokens).flatten(0, 1), targets.flatten())
        self.log("loss", loss, on_step=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @torch.no_grad()
    def generate(self, prompt: bytes, length: int, temperature: float = 0.8) -> bytes:
        """``prompt`` continued by ``length`` sampled bytes (for looking at what the model learned)."""
        tokens = torch.tensor(list(prompt) or [10], device=self.device)[None]
        for _ in range(length):
            logits = self(tokens[:, -self.context :])[:, -1] / max(temperature, 1e-3)
            following = torch.multinomial(F.softmax(logits, dim=-1), 1)
            tokens = torch.cat([tokens, following], dim=1)
        return bytes(tokens[0, len(prompt) :].tolist())


def initialize(module: nn.Module) -> None:
    # GPT-2's small normal initialization; torch's defaults train visibly slower here.
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Windows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Every window of ``context`` bytes of the text, as (input, next bytes)."""

    def __init__(self, data: torch.Tensor, context: int) -> None:
        self.data = data
        self.context = context

    def __len__(self) -> int:
        return len(self.data) - self.context

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.data[index : index + self.context + 1].long()
        return window[:-1], window[1:]


def documentation_text() -> bytes:
    """Python's bundled documentation, or the docstrings of standard modules where it is missing."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return docstring_text()
    return "\n\n".join(topics[name] for name in sorted(topics)).encode()


def docstring_text() -> bytes:
    """The docstrings of :data:`DOCSTRING_MODULES` and their public members, in a fixed order."""
    parts: list[str] = []
    for name in DOCSTRING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        parts.append(inspect.getdoc(module) or "")
        for member_name, member in sorted(vars(module).items()):
            if not member_name.startswith("_"):
                parts.append(inspect.getdoc(member) or "")
    return "\n\n".join(dict.fromkeys(part for part in parts if part)).encode()


@functools.cache
def corpus() -> torch.Tensor:
    return torch.frombuffer(bytearray(documentation_text()), dtype=torch.uint8)


def build(hparams: Mapping[str, Any], seed: int) -> Plan:
    """The language model (identical on every peer) and a loader of text windows in this peer's order."""
    for key in ("width", "heads", "layers", "context"):
        if int(hparams[key]) < 1:
            raise RecipeError(
                f"charlm: hyperparameter {key} must be a positive integer, not {hparams[key]!r}"
            )
    if int(hparams["width"]) % int(hparams["heads"]):
        raise RecipeError(
            f"charlm: width {hparams['width']} must be a multiple of heads {hparams['heads']}; "
            f"try width={math.ceil(int(hparams['width']) / int(hparams['heads'])) * int(hparams['heads'])}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        module = CharLM(hparams)
    seed %= 1 << 63

    def make_loader(batch_size: int) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        dataset = Windows(corpus(), module.context)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
            drop_last=True,
            num_workers=0,
        )

    return Plan(module=module, make_loader=make_loader)

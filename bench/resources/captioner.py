"""The language backbone of TExplain: a frozen image captioner whose decoder can be conditioned on anything.

TExplain (Asgari Taghanaki et al., arXiv 2309.00733) steers an independently trained, frozen
captioning decoder with a classifier's features. A decoder trained on text alone cannot be steered
(a trial here: a text-only GPT-2 kept its unconditioned loss under a prefix mapper), so, as in the
paper, the decoder is first trained as an image captioner, then frozen.

`Captioner` wraps any transformers decoder in one of two conditioning modes:
- "cross": the decoder cross-attends to memory tokens (BLIP's text decoder; GPT-2 with
  add_cross_attention). The memory is what an image encoder would give it.
- "prefix": memory tokens are prepended to the token embeddings (a GPT-2 prefix LM, ClipCap style).

The embedded default (resource `captioner`) is a small GPT-2 with cross-attention trained jointly
with ITS OWN small CNN image encoder on the synthetic world's captions, so it depends neither on
the subjects nor on the CLIP-style resource; it is cached by a hash of its full config and the
world's version, saved with `save_pretrained` (safetensors) and loaded back through the same code
that loads a pretrained captioner by name or path (`load_captioner`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fexbench.core import threads as thread_policy
from fexbench.data import world
from fexbench.core.cache import atomic_write, atomic_write_json, build_once, stable_hash
from fexbench.data.imageset import DataError
from fexbench.models.subjects import to_tensor

CARD = "fexbench_captioner.json"
ENCODER_WEIGHTS = "image_encoder.safetensors"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(texts: Sequence[str]) -> Any:
    """A word-level tokenizer over the words of `texts` (lower-cased, split on whitespace), built offline.

    The world's captions use ~100 distinct words, so whole words are the natural unit: every token
    the decoder samples is a word the counting step can read back without merging sub-words.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, decoders
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *words))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


# ---------------------------------------------------------------- the embedded image encoder

class ImageEncoder(nn.Module):
    """A small CNN that turns an image into memory tokens: a 2x2 grid of mean-pooled cells plus one max-pooled token.

    Mean-pooled cells carry the background's texture, the max-pooled token the object's parts
    (max pooling is what let the world's small classifiers see shape quickly). Batch norm speeds up
    learning; the encoder is frozen and used in eval mode only after training.
    """

    def __init__(self, width: int = 16, dim: int = 64, grid: int = 2):
        super().__init__()
        self.width, self.dim, self.grid = width, dim, grid

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(3, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width))
        self.project = nn.Linear(4 * width, dim)
        self.position = nn.Parameter(torch.zeros(self.n_tokens, dim))
        self.norm = nn.LayerNorm(dim)

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        cells = nn.functional.adaptive_avg_pool2d(f, self.grid).flatten(2).transpose(1, 2)
        tokens = torch.cat([cells, f.amax(dim=(2, 3))[:, None]], dim=1)
        return self.norm(self.project(tokens) + self.position)


# ---------------------------------------------------------------- the captioner

class Captioner:
    """A frozen decoder plus its tokenizer, conditioned on memory tokens (cross-attention or prefix).

    `memory_dim` is the width of one memory token, `n_memory` the number of tokens its own image
    encoder gives (the translator's default). `image_encoder` is None for a decoder loaded without
    one (the translator replaces it anyway).
    """

    def __init__(self, decoder: nn.Module, tokenizer: Any, mode: str, memory_dim: int, n_memory: int,
                 bos_id: int, eos_id: int, pad_id: int, image_encoder: nn.Module | None = None,
                 card: dict[str, Any] | None = None, source: str = "embedded"):
        if mode not in ("cross", "prefix"):
            raise ValueError(f"conditioning mode must be 'cross' or 'prefix', not {mode!r}")
        self.decoder = decoder.eval()
        self.tokenizer, self.mode, self.memory_dim, self.n_memory = tokenizer, mode, memory_dim, n_memory
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.image_encoder = image_encoder.eval() if image_encoder is not None else None
        self.card, self.source = dict(card or {}), source
        self._hash: str | None = None
        self._cache_arg: str | None = None
        for p in self.decoder.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def to(self, device: str | torch.device) -> "Captioner":
        self.decoder.to(device)
        if self.image_encoder is not None:
            self.image_encoder.to(device)
        return self

    # -- identity ------------------------------------------------------------------------------
    @property
    def weights_hash(self) -> str:
        """sha256 over the decoder's (and image encoder's) tensors: names the captioner in cache keys."""
        if self._hash is None:
            h = hashlib.sha256(self.mode.encode())
            for module in (self.decoder, self.image_encoder):
                if module is None:
                    continue
                for name, tensor in sorted(module.state_dict().items()):
                    h.update(name.encode())
                    h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._hash = h.hexdigest()
        return self._hash

    # -- conditioning --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
        """Memory tokens (N, n_memory, memory_dim) of uint8 NHWC images from the captioner's own encoder."""
        if self.image_encoder is None:
            raise RuntimeError(f"captioner {self.source!r} has no image encoder of its own")
        return torch.cat([self.image_encoder(to_tensor(images[i:i + batch_size]).to(self.device))
                          for i in range(0, len(images), batch_size)])

    def encode_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [BOS] caption [EOS] [PAD]... and the mask of real tokens."""
        tokens = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        rows = [[self.bos_id, *t, self.eos_id] for t in tokens]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = True
        return ids.to(self.device), mask.to(self.device)

    @property
    def cache_argument(self) -> str:
        """The keyword under which the decoder's forward takes its KV cache, and the output field
        that returns it: `cache` in current transformers (where `past_key_values` is deprecated),
        `past_key_values` in releases before the rename (4.40 ...). Read from the forward's
        signature, never guessed from a version string."""
        if self._cache_arg is None:
            params = inspect.signature(self.decoder.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
        return self._cache_arg

    def _forward(self, ids: torch.Tensor, memory: torch.Tensor, cache: Any = None, first: bool = True,
                 use_cache: bool = False) -> Any:
        """Decoder output for `ids` given the memory (and the KV cache, if any).

        With use_cache and no cache yet, the decoder builds its own (a self- plus cross-attention
        cache where it cross-attends) and returns it in the output. Cross mode passes the memory at
        every call (the cache keeps its keys and values after the first); prefix mode prepends it
        on the first call only, later calls extend the cache.
        """
        kwargs = {"use_cache": use_cache}
        if cache is not None:
            kwargs[self.cache_argument] = cache
        if self.mode == "cross":
            return self.decoder(input_ids=ids, encoder_hidden_states=memory, **kwargs)
        if first:
            embeds = torch.cat([memory, self.decoder.get_input_embeddings()(ids)], dim=1)
            return self.decoder(inputs_embeds=embeds, **kwargs)
        return self.decoder(input_ids=ids, **kwargs)

    def loss(self, memory: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Captioning cross-entropy of the tokens after [BOS], given memory tokens (gradients flow to memory)."""
        attention = mask.long()  # right padding: causal attention never reads it; the mask says so
        if self.mode == "cross":
            logits = self.decoder(input_ids=ids, attention_mask=attention, encoder_hidden_states=memory,
                                  use_cache=False).logits
        else:
            embeds = torch.cat([memory, self.decoder.get_input_embeddings()(ids)], dim=1)
            attention = torch.cat([torch.ones(memory.shape[:2], dtype=torch.long, device=ids.device), attention], 1)
            logits = self.decoder(inputs_embeds=embeds, attention_mask=attention,
                                  use_cache=False).logits[:, memory.shape[1]:]
        logits, target, keep = logits[:, :-1], ids[:, 1:], mask[:, 1:]
        return nn.functional.cross_entropy(logits[keep], target[keep])

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, memory: torch.Tensor, seed: int, top_p: float = 0.9, temperature: float = 1.0,
               max_tokens: int = 20, batch_size: int = 1000, use_cache: bool = True) -> list[str]:
        """One nucleus-sampled sentence per memory row, in batches, with the KV cache by default.

        One torch.Generator seeded by `seed` drives every draw, so (memory, seed, batch_size)
        gives the same sentences every time. Nucleus filtering is transformers' TopPLogitsWarper.
        """
        from transformers.generation.logits_process import TopPLogitsWarper

        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if memory.ndim != 3 or memory.shape[-1] != self.memory_dim:
            raise ValueError(f"memory must be (N, tokens, {self.memory_dim}), got {tuple(memory.shape)}")
        warp = TopPLogitsWarper(top_p) if top_p < 1 else None
        device = self.device
        gen = torch.Generator(device=device).manual_seed(int(seed) % (2**63))
        out: list[str] = []
        for start in range(0, len(memory), batch_size):
            mem = memory[start:start + batch_size].to(device, next(self.decoder.parameters()).dtype)
            n = len(mem)
            ids = torch.full((n, 1), self.bos_id, dtype=torch.long, device=device)
            done = torch.zeros(n, dtype=torch.bool, device=device)
            cache = None
            step_ids = ids
            for step in range(max_tokens):
                if use_cache:
                    result = self._forward(step_ids, mem, cache, first=step == 0, use_cache=True)
                    cache = getattr(result, self.cache_argument)
                else:
                    result = self._forward(ids, mem, None, first=True)
                logits = result.logits[:, -1].float() / temperature
                if warp is not None:
                    logits = warp(ids, logits)
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(1)
                # a finished row repeats its end token (decode stops at the first); never a pad, which
                # transformers would take for unmasked padding
                nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
                done |= nxt == self.eos_id
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                step_ids = nxt[:, None]
                if bool(done.all()):
                    break
            out.extend(self.decode(ids[:, 1:]))
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        texts = []
        for row in ids.tolist():
            if self.eos_id in row:
                row = row[:row.index(self.eos_id)]
            texts.append(self.tokenizer.decode([t for t in row if t != self.pad_id], skip_special_tokens=True).strip())
        return texts

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """save_pretrained for decoder and tokenizer (safetensors), plus the image encoder and a card."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.decoder.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        card = {**self.card, "format": 1, "mode": self.mode, "n_memory": self.n_memory,
                "memory_dim": self.memory_dim, "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}
        if self.image_encoder is not None:
            enc = self.image_encoder
            card["image_encoder"] = {"width": enc.width, "dim": enc.dim, "grid": enc.grid}
            state = {k: v.contiguous() for k, v in enc.state_dict().items()}
            atomic_write(folder / ENCODER_WEIGHTS, lambda tmp: save_file(state, tmp))
        atomic_write_json(folder / CARD, card)
        return folder


def load_captioner(name_or_path: str | Path, n_memory: int = 8) -> Captioner:
    """A frozen captioner from a local folder or a hub name, through transformers' own loaders.

    - BLIP (`Salesforce/blip-image-captioning-base`, the paper's closest): its text decoder,
      cross-attending; bos = [DEC], eos = [SEP] as BLIP generates.
    - any causal LM (GPT-2 ...): "cross" if its config has add_cross_attention, else "prefix".
    - a folder written by `Captioner.save` (a GPT-2 folder plus fexbench_captioner.json and the
      image encoder) is the same GPT-2 case, with its card and encoder restored.
    `n_memory` is the default number of memory tokens when the folder does not say (BLIP's own
    577 patch tokens would make the translator's output layer needlessly wide).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # no folder, no network, not a transformers model
        raise FileNotFoundError(f"cannot load captioner {source!r}: {type(exc).__name__}: {exc} "
                                "(give a local folder saved with save_pretrained)") from exc
    folder = Path(source)
    card = json.loads((folder / CARD).read_text()) if (folder / CARD).is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(source)
    if config.model_type == "blip":
        from transformers import BlipForConditionalGeneration

        decoder = BlipForConditionalGeneration.from_pretrained(source).text_decoder
        text = config.text_config
        mode, memory_dim = "cross", text.encoder_hidden_size
        bos, eos, pad = text.bos_token_id, text.sep_token_id, text.pad_token_id
    else:
        decoder = AutoModelForCausalLM.from_pretrained(source)
        cross = bool(getattr(config, "add_cross_attention", False))
        mode = "cross" if cross else "prefix"
        memory_dim = (getattr(config, "encoder_hidden_size", None) or config.hidden_size) if cross \
            else decoder.get_input_embeddings().embedding_dim
        bos = card.get("bos_id", tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id)
        eos = card.get("eos_id", tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id)
        pad = card.get("pad_id", tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    if bos is None or eos is None:
        raise DataError(f"captioner {source!r}: its tokenizer/config name no bos or eos token")
    encoder = None
    if "image_encoder" in card:
        encoder = ImageEncoder(**card["image_encoder"])
        encoder.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS)))
    return Captioner(decoder, tokenizer, mode, int(memory_dim), int(card.get("n_memory", n_memory)),
                     int(bos), int(eos), int(pad if pad is not None else eos), encoder, card, source)


# ---------------------------------------------------------------- the embedded captioner

@dataclass(frozen=True)
class CaptionerConfig:
    """Everything that determines the embedded captioner (its cache key, with world.VERSION)."""

    n_train: int = 6000
    captions_per_image: int = 2
    image_size: int = 32
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    encoder_width: int = 16
    seed: int = 0
    data_seed: int = 7_001  # distinct from the tasks' seeds, which are hashes of (env seed, split)
    attribute_weight: float = 1.0  # auxiliary attribute classification on the encoder (0: captioning loss only)
    attributes: tuple[str, ...] = ("shape",)  # what the auxiliary heads classify
    n_heldout: int = 600
    heldout_seed: int = 7_002


def _world_data(n: int, seed: int, image_size: int, captions_per_image: int) -> tuple[np.ndarray, world.Scenes, list[list[str]]]:
    """All 9 shapes on all 9 backgrounds, independently (no shape-background correlation to learn)."""
    scenes, _ = world.imagenet9_scenes(n, seed, p_native=0.0)
    images = world.render(scenes, image_size)[0]
    texts = [list(world.captions(scenes, seed + 1000 * k)) for k in range(captions_per_image)]
    return images, scenes, texts


def train_captioner(config: CaptionerConfig, progress: bool = False) -> Captioner:
    """Train encoder and decoder jointly as a captioner (plus the encoder's auxiliary loss), then freeze both."""
    from transformers import GPT2Config, GPT2LMHeadModel

    t0 = time.perf_counter()
    images, scenes, texts = _world_data(config.n_train, config.data_seed, config.image_size, config.captions_per_image)
    all_texts = [t for per_k in texts for t in per_k]
    tokenizer = build_tokenizer(all_texts)
    torch.manual_seed(config.seed)
    decoder = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, add_cross_attention=True, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    encoder = ImageEncoder(config.encoder_width, config.n_embd)
    cap = Captioner(decoder, tokenizer, "cross", config.n_embd, encoder.n_tokens, tokenizer.bos_token_id,
                    tokenizer.eos_token_id, tokenizer.pad_token_id, encoder)
    for p in decoder.parameters():
        p.requires_grad_(True)
    decoder.train(), encoder.train()
    # Auxiliary attribute heads (discarded after training), the stand-in for BLIP's ImageNet-pretrained
    # image encoder: they classify each training scene's attributes (default: its shape) from its
    # memory tokens. With the captioning loss alone the encoder learnt colour and background but not
    # shape (captions named it 13% of the time after 6 epochs, chance 11%; a bag-of-words auxiliary
    # loss left a linear probe on the memory at 24%); with the shape head, captions name it 56%.
    sizes = {"shape": len(world.SHAPES), "colour": len(world.COLOURS), "background": len(world.BACKGROUNDS)}
    heads = nn.ModuleDict({name: nn.Linear(encoder.n_tokens * config.n_embd, sizes[name])
                           for name in config.attributes})
    labels = {name: torch.from_numpy(getattr(scenes, name)) for name in config.attributes}
    x_all = to_tensor(images)
    n = len(images)
    gen = torch.Generator().manual_seed(config.seed)

    def attribute_loss(memory: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        flat = memory.flatten(1)
        return sum(nn.functional.cross_entropy(head(flat), labels[name][idx]) for name, head in heads.items())

    encoded = [cap.encode_text(t) for t in texts]
    opt = torch.optim.AdamW([*decoder.parameters(), *encoder.parameters(), *heads.parameters()],
                            lr=config.lr, weight_decay=0.01)
    steps = max(1, config.epochs * ((n + config.batch_size - 1) // config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    losses = []
    for epoch in range(config.epochs):
        ids_all, mask_all = encoded[epoch % len(encoded)]
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            memory = encoder(x_all[idx])
            loss = lm = cap.loss(memory, ids_all[idx], mask_all[idx])
            if config.attribute_weight:
                loss = loss + config.attribute_weight * attribute_loss(memory, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(lm.detach()))
        if progress:
            print(f"captioner epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses[-20:]):.3f}", file=sys.stderr)
    cap = Captioner(decoder, tokenizer, "cross", config.n_embd, encoder.n_tokens, tokenizer.bos_token_id,
                    tokenizer.eos_token_id, tokenizer.pad_token_id, encoder)
    cap.card = {"config": asdict(config), "world_version": world.VERSION, "final_loss": float(np.mean(losses[-20:])),
                "train_time_s": time.perf_counter() - t0, "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
                "encoder_parameters": sum(p.numel() for p in encoder.parameters())}
    cap.card["quality"] = caption_quality(cap, config.n_heldout, config.heldout_seed, config.image_size)
    return cap


def caption_quality(cap: Captioner, n: int, seed: int, image_size: int = 32, top_p: float = 0.9) -> dict[str, float]:
    """Rates at which one nucleus-sampled caption of a held-out scene names its true shape, background, colour."""
    from fexbench.data.world_concepts import world_vocabulary

    vocab = world_vocabulary()
    images, scenes, _ = _world_data(n, seed, image_size, 1)
    texts = cap.sample(cap.encode_images(images), seed=seed, top_p=top_p)
    hits = {"shape": [], "background": [], "colour": [], "all_three": []}
    for text, s, b, c in zip(texts, scenes.shape, scenes.background, scenes.colour):
        named = {concept.name for concept in vocab.lookup(text)}
        row = (world.SHAPES[s] in named, world.BACKGROUNDS[b] in named, world.COLOUR_NAMES[c] in named)
        for key, hit in zip(("shape", "background", "colour"), row):
            hits[key].append(hit)
        hits["all_three"].append(all(row))
    rates = {f"{k}_named": float(np.mean(v)) for k, v in hits.items()}
    rates.update({"n": n, "top_p": top_p, "chance_shape": 1 / len(world.SHAPES),
                  "chance_background": 1 / len(world.BACKGROUNDS)})
    return rates


def embedded_captioner(cache_dir: str | Path, config: CaptionerConfig = CaptionerConfig(),
                       progress: bool = False, threads: int | None = None) -> Captioner:
    """The embedded captioner: loaded from <cache>/captioner/<hash>/ or trained, saved and reloaded."""
    key = stable_hash({"captioner": "gpt2-cross+cnn/v1", "config": asdict(config), "world": world.VERSION}, 24)
    folder = Path(cache_dir) / "captioner" / key

    def train() -> Captioner:
        tmp = folder.with_name(f".{key}.{time.time_ns()}.tmp")
        # one thread by default (fexbench.core.threads): the same weights on every machine
        with thread_policy.component("captioner-training", threads):
            cap = train_captioner(config, progress)
        cap.save(tmp)
        tmp.replace(folder)  # a whole folder appears at once (the build lock keeps others out)
        return load_captioner(folder)

    # read back only when every file of the folder matches the digests recorded when it was saved
    cap = build_once(folder, lambda: load_captioner(folder), train)
    cap.card["cache_key"] = key
    return cap


def factory(env: Any, model: str | None = None, n_memory: int = 8, n_train: int | None = None,
            captions_per_image: int | None = None, epochs: int | None = None, batch_size: int | None = None,
            n_embd: int | None = None, n_layer: int | None = None, n_head: int | None = None,
            encoder_width: int | None = None, n_heldout: int | None = None) -> Captioner:
    """Resource provider `captioner` (entry point group fexbench.resources).

    No `model`: the embedded captioner; the size options (CaptionerConfig fields: n_train, epochs,
    n_embd, ...) shrink it, e.g. for the smoke preset and `fexbench check-explainer`. `model`: a
    pretrained captioner by hub name or local folder (`[resources.captioner] model =
    "Salesforce/blip-image-captioning-base"` in a run config), read from the arguments or, when the
    harness does not pass them, from env.resource_configs.
    """
    options = dict((getattr(env, "resource_configs", None) or {}).get("captioner", {}))
    model = model if model is not None else options.get("model")
    n_memory = int(options.get("n_memory", n_memory))
    sizes = {k: v for k, v in dict(n_train=n_train, captions_per_image=captions_per_image, epochs=epochs,
                                   batch_size=batch_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                   encoder_width=encoder_width, n_heldout=n_heldout).items() if v is not None}
    if model:
        cap = load_captioner(model, n_memory=n_memory)
    else:
        cap = embedded_captioner(env.cache_dir, CaptionerConfig(**sizes), progress=bool(getattr(env, "progress", False)))
    return cap.to(getattr(env, "device", "cpu") or "cpu")

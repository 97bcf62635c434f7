"""The captioner: tokenizer, reproducible KV-cache sampling, save/load by path, pretrained architectures by path."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fexbench.resources import captioner as C

TINY = C.CaptionerConfig(n_train=96, captions_per_image=1, epochs=1, batch_size=32, n_embd=16, n_layer=1, n_head=2,
                         encoder_width=4, n_heldout=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return C.embedded_captioner(tmp_path_factory.mktemp("cap"), TINY)


def memory_rows(cap, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, cap.n_memory, cap.memory_dim, generator=g).repeat_interleave(n // 4, dim=0)


def test_word_level_tokenizer_round_trips_and_knows_its_words():
    tok = C.build_tokenizer(["a red five-pointed star on the sea", "a disk"])
    ids = tok("A red five-pointed star on the sea", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "a red five-pointed star on the sea"
    assert tok("a purple disk", add_special_tokens=False)["input_ids"][1] == tok.unk_token_id


def test_embedded_captioner_is_a_cross_attention_gpt2_with_its_own_encoder(tiny):
    from transformers import GPT2LMHeadModel
    assert isinstance(tiny.decoder, GPT2LMHeadModel) and tiny.decoder.config.add_cross_attention
    assert tiny.mode == "cross" and tiny.image_encoder is not None
    assert tiny.n_memory == tiny.image_encoder.n_tokens and tiny.memory_dim == TINY.n_embd
    assert all(not p.requires_grad for p in tiny.decoder.parameters())
    quality = tiny.card["quality"]
    assert 0 <= quality["shape_named"] <= 1 and quality["n"] == TINY.n_heldout


def test_sampling_is_reproducible_with_a_seed(tiny):
    mem = memory_rows(tiny)
    a = tiny.sample(mem, seed=3, batch_size=16)
    assert a == tiny.sample(mem, seed=3, batch_size=16)
    assert len(a) == len(mem) and all(isinstance(t, str) for t in a)
    assert a != tiny.sample(mem, seed=4, batch_size=16)


def test_kv_cache_samples_what_full_recomputation_samples(tiny):
    mem = memory_rows(tiny)
    assert tiny.sample(mem, seed=1, use_cache=True) == tiny.sample(mem, seed=1, use_cache=False)


def test_top_p_restricts_the_vocabulary(tiny):
    mem = memory_rows(tiny, n=200)
    narrow = {w for t in tiny.sample(mem, seed=0, top_p=0.05) for w in t.split()}
    wide = {w for t in tiny.sample(mem, seed=0, top_p=1.0) for w in t.split()}
    assert len(narrow) < len(wide)
    with pytest.raises(ValueError, match="top_p"):
        tiny.sample(mem, seed=0, top_p=0.0)


def test_saved_and_loaded_by_path_samples_the_same_sentences(tiny, tmp_path):
    folder = tiny.save(tmp_path / "saved")
    assert (folder / "model.safetensors").is_file() and (folder / C.ENCODER_WEIGHTS).is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    loaded = C.load_captioner(folder)
    assert loaded.weights_hash == tiny.weights_hash
    images, _, _ = C._world_data(6, 5, 32, 1)
    mem = tiny.encode_images(images)
    assert torch.equal(mem, loaded.encode_images(images))
    assert loaded.sample(mem, seed=9) == tiny.sample(mem, seed=9)


def test_embedded_captioner_is_cached_by_config(tmp_path, tiny):
    first = C.embedded_captioner(tmp_path, TINY)
    again = C.embedded_captioner(tmp_path, TINY)
    assert first.card["cache_key"] == again.card["cache_key"] and first.weights_hash == again.weights_hash
    assert len([p for p in (tmp_path / "captioner").iterdir() if p.is_dir()]) == 1  # beside it: digest, lock
    other = C.embedded_captioner(tmp_path, C.CaptionerConfig(**{**TINY.__dict__, "seed": 1}))
    assert other.card["cache_key"] != first.card["cache_key"]
    assert other.weights_hash != first.weights_hash


def test_captioning_loss_reaches_the_memory_only(tiny):
    ids, mask = tiny.encode_text(["a red circle on grass", "a blue star against the sea"])
    mem = torch.zeros(2, tiny.n_memory, tiny.memory_dim, requires_grad=True)
    tiny.loss(mem, ids, mask).backward()
    assert mem.grad is not None and mem.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.decoder.parameters())


# ---------------------------------------------------------------- pretrained architectures, by path

def _bert_tokenizer(folder):
    from transformers import BertTokenizerFast
    words = "a an the red blue green circle square star on in of photo picture sea grass sand".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt")), len(vocab)


def test_a_tiny_blip_saved_with_save_pretrained_loads_and_samples_by_path(tmp_path):
    from transformers import BlipConfig, BlipForConditionalGeneration
    folder = tmp_path / "tiny-blip"
    tok, vocab_size = _bert_tokenizer(folder)
    config = BlipConfig(
        text_config=dict(vocab_size=vocab_size + 1, hidden_size=32, encoder_hidden_size=24, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=40,
                         bos_token_id=vocab_size, sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16))
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    cap = C.load_captioner(folder, n_memory=6)
    assert cap.mode == "cross" and cap.memory_dim == 24 and cap.n_memory == 6
    assert (cap.bos_id, cap.eos_id, cap.pad_id) == (vocab_size, 3, 0)
    mem = torch.randn(8, 6, 24, generator=torch.Generator().manual_seed(0))
    texts = cap.sample(mem, seed=2, max_tokens=8)
    assert texts == C.load_captioner(folder, n_memory=6).sample(mem, seed=2, max_tokens=8)
    assert texts == cap.sample(mem, seed=2, max_tokens=8, use_cache=False)
    ids, mask = cap.encode_text(["a red circle on the sea"])
    assert torch.isfinite(cap.loss(mem[:1], ids, mask))


def test_a_gpt2_without_cross_attention_is_a_prefix_lm(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    folder = tmp_path / "tiny-gpt2"
    tok = C.build_tokenizer(["a red circle on the sea", "a blue star on grass"])
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    cap = C.load_captioner(folder, n_memory=3)
    assert cap.mode == "prefix" and cap.memory_dim == 16 and cap.image_encoder is None
    mem = torch.randn(6, 3, 16, generator=torch.Generator().manual_seed(0))
    texts = cap.sample(mem, seed=1, max_tokens=10)
    assert texts == cap.sample(mem, seed=1, max_tokens=10, use_cache=False)
    ids, mask = cap.encode_text(["a red circle on the sea"])
    mem1 = mem[:1].clone().requires_grad_(True)
    cap.loss(mem1, ids, mask).backward()
    assert mem1.grad.abs().sum() > 0


def test_the_resource_reads_a_model_from_the_run_config(tmp_path, tiny):
    folder = tiny.save(tmp_path / "by-config")
    env = SimpleNamespace(cache_dir=tmp_path / "cache", device="cpu", progress=False,
                          resource_configs={"captioner": {"model": str(folder)}})
    cap = C.factory(env)
    assert cap.weights_hash == tiny.weights_hash and not (tmp_path / "cache").exists()


def test_a_missing_captioner_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-captioner"):
        C.load_captioner(tmp_path / "no-such-captioner")


def test_sampling_benchmark_prints_its_figures(tmp_path, tiny, capsys):
    folder = tiny.save(tmp_path / "bench")
    from fexbench.perf.sampling import sampling_benchmark
    assert sampling_benchmark(["--captioner", str(folder), "--n", "40", "--loop-n", "8", "--max-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "sentences/s" in out and "speed-up" in out


class _PastKeyValuesDecoder(torch.nn.Module):
    """A decoder with the pre-rename cache API (transformers 4.x: `past_key_values` in and out),
    delegating to a current one: the compatibility branch of Captioner.sample runs through it."""

    def __init__(self, inner, inner_argument):
        super().__init__()
        self.inner, self.inner_argument = inner, inner_argument

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, inputs_embeds=None, encoder_hidden_states=None, past_key_values=None,
                use_cache=None):
        kwargs = {"use_cache": use_cache}
        if past_key_values is not None:
            kwargs[self.inner_argument] = past_key_values
        out = self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                         **kwargs)
        return SimpleNamespace(logits=out.logits, past_key_values=getattr(out, self.inner_argument))


def test_sampling_uses_the_decoders_own_cache_argument_and_warns_of_nothing(tiny):
    """The cache keyword comes from the forward's signature; sampling raises no deprecation warning
    (transformers attributes its FutureWarning to its own frame, so the test suite's fexbench-module
    filter alone would not catch it)."""
    import inspect
    import warnings

    expected = "cache" if "cache" in inspect.signature(tiny.decoder.forward).parameters else "past_key_values"
    assert tiny.cache_argument == expected
    mem = memory_rows(tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        tiny.sample(mem, seed=5, batch_size=16)


def test_the_past_key_values_branch_samples_the_same_sentences(tiny):
    old_api = C.Captioner(_PastKeyValuesDecoder(tiny.decoder, tiny.cache_argument), tiny.tokenizer, tiny.mode, tiny.memory_dim,
                          tiny.n_memory, tiny.bos_id, tiny.eos_id, tiny.pad_id)
    assert old_api.cache_argument == "past_key_values"
    mem = memory_rows(tiny)
    assert old_api.sample(mem, seed=2, batch_size=16) == tiny.sample(mem, seed=2, batch_size=16)

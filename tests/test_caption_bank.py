"""The caption bank: exact vs FAISS retrieval, FALCON's softmax scores, content caching, bad input."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.special import softmax

from fexbench.perf.retrieval import retrieval_benchmark
from fexbench.resources.caption_bank import CaptionBank, exact_top_k, world_bank_captions
from fexbench.data.imageset import DataError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered_bank(n: int = 3000, d: int = 32, clusters: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, d)))
    emb = _unit(centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d) * 4)
    queries = _unit(emb[rng.integers(0, n, 50)] + 0.05 * rng.standard_normal((50, d)))
    return emb, queries


class FakeClip:
    """Deterministic text 'embeddings' from a hash of each text: enough to test caching and I/O."""

    name, weights_hash = "fake-clip", "fake-weights"

    def __init__(self):
        self.calls = 0

    def encode_texts(self, texts):
        self.calls += 1
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(8)
                for t in texts]
        return _unit(np.stack(rows))


def test_exact_top_k_matches_a_full_sort():
    emb, queries = _clustered_bank(500)
    sims, idx = exact_top_k(emb, queries, 5, chunk=128)  # several chunks
    full = queries @ emb.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert np.array_equal(idx, expected)
    assert np.allclose(sims, np.take_along_axis(full, expected, axis=1))


def test_faiss_index_agrees_with_exact_search():
    emb, queries = _clustered_bank()
    captions = tuple(f"caption {i}" for i in range(len(emb)))
    exhaustive = CaptionBank(captions, emb, exact_max=0, nlist=16, nprobe=16)  # every list probed: exact
    assert exhaustive.method == "faiss-ivf"
    exact_s, exact_i = exhaustive.search(queries, 5, method="exact")
    ivf_s, ivf_i = exhaustive.search(queries, 5)
    assert np.array_equal(exact_i, ivf_i)
    assert np.allclose(exact_s, ivf_s, atol=1e-5)
    partial = CaptionBank(captions, emb, exact_max=0, nlist=32, nprobe=4)
    _, part_i = partial.search(queries, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_i, part_i)])
    assert recall >= 0.9  # clustered data, queries near bank items


def test_top_k_softmax_is_falcons_softmax_over_the_whole_bank():
    emb, queries = _clustered_bank(700)
    bank = CaptionBank(tuple(map(str, range(len(emb)))), emb)
    probs, idx = bank.top_k_softmax(queries, k=5, scale=100.0)
    full = softmax(100.0 * (queries.astype(np.float64) @ emb.T.astype(np.float64)), axis=1)
    assert np.allclose(probs, np.take_along_axis(full, idx, axis=1), rtol=1e-4, atol=1e-9)
    assert np.array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :5])
    # an indexed bank normalises over its top neighbours: close to exact at scale 100
    indexed = CaptionBank(bank.captions, emb, exact_max=0, nlist=8, nprobe=8)
    probs_ivf, idx_ivf = indexed.top_k_softmax(queries, k=5, normaliser_k=700)
    assert np.array_equal(idx_ivf, idx)
    assert np.allclose(probs_ivf, probs, rtol=1e-4)


def test_bank_embeddings_are_cached_by_content(tmp_path):
    clip = FakeClip()
    path_a, path_b = tmp_path / "a.txt", tmp_path / "b.txt"
    path_a.write_text("a red disk on the sea\n\nbricks\nbricks\n")
    path_b.write_text("a red disk on the sea\nbricks\n")  # same captions, another file name
    bank = CaptionBank.from_text_file(path_a, clip, tmp_path / "cache")
    assert bank.captions == ("a red disk on the sea", "bricks")
    again = CaptionBank.from_text_file(path_b, clip, tmp_path / "cache")
    assert clip.calls == 1 and np.array_equal(bank.embeddings, again.embeddings)
    path_b.write_text("a red disk on the sea\nlava\n")
    CaptionBank.from_text_file(path_b, clip, tmp_path / "cache")
    assert clip.calls == 2


def test_bad_banks_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        CaptionBank.from_text_file(tmp_path / "missing.txt", FakeClip())
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="empty.txt"):
        CaptionBank.from_text_file(tmp_path / "empty.txt", FakeClip())
    with pytest.raises(DataError, match="embeddings of shape"):
        CaptionBank(("a", "b"), np.zeros((3, 4), np.float32))
    bank = CaptionBank(("a", "b"), _unit(np.eye(2, 4)))
    with pytest.raises(ValueError, match="dimension"):
        bank.search(np.ones((1, 3)), 1)


def test_a_dataset_column_is_a_bank(tmp_path):
    """The Hugging Face path (COCO, CC3M ...), here on a local data folder the same call reads."""
    folder = tmp_path / "captions"
    folder.mkdir()
    (folder / "train.csv").write_text('caption,url\n"a dog on grass",u1\n"lava at night",u2\n"a dog on grass",u3\n')
    bank = CaptionBank.from_hf_dataset(str(folder), "caption", FakeClip(), split="train")
    assert bank.captions == ("a dog on grass", "lava at night") and bank.embeddings.shape == (2, 8)
    with pytest.raises(DataError, match="no column 'text'.*caption"):
        CaptionBank.from_hf_dataset(str(folder), "text", FakeClip(), split="train")


def test_world_bank_mixes_scene_captions_and_distractors():
    captions = world_bank_captions(n_scenes=300, n_distractors=150, seed=0)
    assert captions == world_bank_captions(n_scenes=300, n_distractors=150, seed=0)
    assert len(set(captions)) == len(captions)
    assert any("lava" in c for c in captions) and any("guitar" in c or "bicycle" in c for c in captions)
    # distractors pair world objects with non-world things, and non-world things with world backgrounds
    assert any(c.endswith(("a car", "a house", "a clock", "a lamp", "a book")) for c in captions)


def test_retrieval_benchmark_prints_its_figures(capsys):
    assert retrieval_benchmark(["--n", "4000", "--dim", "16", "--queries", "20", "--nprobe", "64"]) == 0
    out = capsys.readouterr().out
    assert "build" in out and "recall@5" in out and "queries near a bank item" in out

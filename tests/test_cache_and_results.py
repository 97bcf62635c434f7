"""Content-keyed caches, atomic writes and the results schema."""
import json

import numpy as np
import pytest

from fexbench.core.cache import ArrayCache, atomic_write_json, atomic_write_text, stable_hash
from fexbench.data.imageset import ImageSet, cached_imageset, load_imageset, save_imageset
from fexbench.core.metrics import Metric, MetricValue
from fexbench.core.results import SCHEMA_VERSION, JobResult, ResultsError, read_result, write_result


def _imageset(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return ImageSet("toy", rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, n),
                    ("a", "b"), {"place": rng.integers(0, 2, n)}, {"place": ("land", "water")},
                    tuple(f"id{i}" for i in range(n)), tuple(f"cap {i}" for i in range(n)), {"src": "test"})


def test_stable_hash_ignores_key_order_but_not_values():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_array_cache_is_keyed_by_content_not_name(tmp_path):
    cache, calls = ArrayCache(tmp_path), []

    def compute(v):
        calls.append(v)
        return {"x": np.full(3, v, np.float32)}

    a = cache.get_or_compute("acts", {"data": "hash-A"}, lambda: compute(1.0))
    b = cache.get_or_compute("acts", {"data": "hash-A"}, lambda: compute(2.0))
    c = cache.get_or_compute("acts", {"data": "hash-B"}, lambda: compute(3.0))
    assert calls == [1.0, 3.0]
    assert b["x"][0] == 1.0 and c["x"][0] == 3.0 and a["x"][0] == 1.0


def test_array_cache_recomputes_a_torn_file(tmp_path):
    cache = ArrayCache(tmp_path)
    path = cache.path("acts", {"k": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    out = cache.get_or_compute("acts", {"k": 1}, lambda: {"x": np.ones(2, np.float32)})
    assert out["x"].tolist() == [1.0, 1.0]


def test_imageset_content_hash_tracks_pixels():
    a, b = _imageset(0), _imageset(0)
    assert a.content_hash == b.content_hash
    pixels = a.images.copy()
    pixels[0, 0, 0, 0] ^= 1
    changed = ImageSet(a.name, pixels, a.labels, a.class_names, a.metadata, a.metadata_values, a.ids, a.captions)
    assert changed.content_hash != a.content_hash


def test_imageset_round_trips_through_safetensors(tmp_path):
    data = _imageset(1)
    back = load_imageset(save_imageset(tmp_path / "s.safetensors", data))
    assert back.content_hash == data.content_hash and back.ids == data.ids and back.provenance == {"src": "test"}


def test_cached_imageset_builds_once(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return _imageset(2)

    first = cached_imageset(tmp_path, {"seed": 2}, build)
    second = cached_imageset(tmp_path, {"seed": 2}, build)
    assert len(calls) == 1 and first.content_hash == second.content_hash


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    class Boom(Exception):
        pass

    from fexbench.core.cache import atomic_write

    def bad(tmp):
        with open(tmp, "w") as f:
            f.write('{"v": ')
        raise Boom()

    with pytest.raises(Boom):
        atomic_write(path, bad)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def _result(**kw):
    m = Metric("m", "d", True, (0.0, 1.0), "cat", 0.5)
    base = dict(task="t", explainer="e", oracle=False, status="ok", job_key="k", seed=3,
                metrics=(MetricValue.of(m, 0.7, (0.6, float("nan")), 10),), per_subject={"s": {"x": np.float64(1.5)}})
    base.update(kw)
    return JobResult(**base)


def test_result_round_trip_with_nan_as_null(tmp_path):
    path = write_result(tmp_path, _result())
    raw = json.loads(path.read_text())
    assert raw["metrics"][0]["ci_high"] is None and raw["schema_version"] == SCHEMA_VERSION
    assert "torch" in raw["versions"] and raw["per_subject"]["s"]["x"] == 1.5
    back = read_result(path)
    assert back.metric("m").value == 0.7 and np.isnan(back.metric("m").ci_high) and back.seed == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("job_key"), "job_key"),
    (lambda d: d.update(status="maybe"), "status"),
    (lambda d: d.update(surprise=1), "surprise"),
])
def test_malformed_results_name_the_file_and_field(tmp_path, mutate, message):
    path = write_result(tmp_path, _result())
    data = json.loads(path.read_text())
    mutate(data)
    atomic_write_text(path, json.dumps(data))
    with pytest.raises(ResultsError, match="does not match its recorded digest") as info:
        read_result(path)  # an edit under the recorded digest is caught first
    assert str(path) in str(info.value)
    del data["digest"]  # a file without a digest (an older fexbench's) still has every field checked
    atomic_write_text(path, json.dumps(data))
    with pytest.raises(ResultsError, match=message) as info:
        read_result(path)
    assert str(path) in str(info.value)


def test_result_digest_is_written_checked_and_optional(tmp_path):
    path = write_result(tmp_path, _result())
    raw = json.loads(path.read_text())
    assert len(raw["digest"]) == 64 and read_result(path).digest == raw["digest"]
    raw["metrics"][0]["value"] = 0.12  # a plausible edit: same job key, another number
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsError, match="digest"):
        read_result(path)
    del raw["digest"]
    path.write_text(json.dumps(raw))
    assert read_result(path).digest is None  # unverified: readable, but never resumed by the runner


def test_results_keep_seed_values_and_version_1_files_still_read(tmp_path):
    m = Metric("m", "d", True, (0.0, 1.0), "cat", 0.5)
    pooled = MetricValue.of(m, 0.5, (0.4, 0.6), 10, seed_values=(0.4, float("nan"), 0.6))
    path = write_result(tmp_path, _result(metrics=(pooled,), config={"explainer_seeds": [3, 77, 91]}))
    back = read_result(path)
    assert back.metric("m").seed_values[::2] == (0.4, 0.6) and np.isnan(back.metric("m").seed_values[1])
    assert back.explainer_seeds == [3, 77, 91]
    raw = json.loads(path.read_text())  # a version-1 file: no seed values, no explainer seeds, no digest
    del raw["metrics"][0]["seed_values"], raw["config"]["explainer_seeds"], raw["digest"]
    raw["schema_version"] = 1
    path.write_text(json.dumps(raw))
    old = read_result(path)
    assert old.metric("m").seed_values == () and old.explainer_seeds == [3]
    raw["schema_version"] = 9
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsError, match="schema_version 9"):
        read_result(path)

"""The results schema file: generated from the dataclasses, shipped equal to the generated one,
and every result file checked against it (types and ranges) on read and by `fexbench validate`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fexbench.core import results
from fexbench.core.cache import atomic_write_text
from fexbench.core.metrics import Metric, MetricValue
from fexbench.core.results import SCHEMA_VERSION, JobResult, ResultsError, read_result, write_result
from fexbench.cli import main  # the CLI as a user calls it

ROOT = Path(__file__).resolve().parents[1]


def _result(**kw) -> JobResult:
    m = Metric("m", "d", True, (0.0, 1.0), "cat", 0.5)
    base = dict(task="t", explainer="e", oracle=False, status="ok", job_key="k", seed=3,
                metrics=(MetricValue.of(m, 0.7, (0.6, 0.8), 10),))
    base.update(kw)
    return JobResult(**base)


def _written(tmp_path: Path, mutate) -> Path:
    """A result file edited by `mutate`, its digest dropped (as an older fexbench's file)."""
    path = write_result(tmp_path, _result())
    data = json.loads(path.read_text())
    del data["digest"]
    mutate(data)
    atomic_write_text(path, json.dumps(data))
    return path


def test_shipped_schema_file_is_the_generated_one():
    shipped = (ROOT / "bench/core/results.schema.json").read_text(encoding="utf-8")
    assert shipped == results.schema_text(), "regenerate it: fexbench schema --write"
    loaded = json.loads(shipped)
    assert loaded["x-fexbench-schema-version"] == SCHEMA_VERSION
    assert {"task", "explainer", "status", "job_key"} <= set(loaded["required"])


def test_schema_command_prints_the_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == results.generate_schema()


def test_a_valid_result_passes_and_reads(tmp_path):
    path = write_result(tmp_path, _result())
    assert results.validate_file(path) == []
    assert read_result(path).metric("m").value == 0.7


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["metrics"][0].update(value=1.7), "metrics[0] (m).value: 1.7 is outside"),
    (lambda d: d["metrics"][0].update(ci_high=1.2), "metrics[0] (m).ci_high: 1.2 is outside"),
    (lambda d: d["metrics"][0].update(ci_low=0.9, ci_high=0.1), "ci_low 0.9 > ci_high 0.1"),
    (lambda d: d["metrics"][0].update(ci_low="low"), "metrics[0].ci_low: 'low' is not valid"),
    (lambda d: d["metrics"][0].pop("n"), "metrics[0]: 'n' is a required property"),
    (lambda d: d.update(wall_time_s=-1), "wall_time_s: -1 is less than the minimum"),
    (lambda d: d["metrics"][0].update(value_range=[1.0, 0.0]), "value_range: low 1.0 > high 0.0"),
    (lambda d: d.update(hashes={"data": 3}), "hashes.data: 3 is not of type 'string'"),
])
def test_bad_values_are_named_by_file_and_field(tmp_path, mutate, field):
    path = _written(tmp_path, mutate)
    with pytest.raises(ResultsError) as info:
        read_result(path)
    assert str(path) in str(info.value) and field in str(info.value)
    assert any(field in p and str(path) in p for p in results.validate_file(path))



# one metric's unit values: one replicate, one explainer seed, 4 units in 2 clusters (subjects)
CLUSTERED = {"m": {"statistic": "fexbench.core.metrics:nanmean", "replicates": [[[[0.0, 1.0, 1.0, None]]]],
                   "clusters": [[0, 0, 1, 1]]}}


def _clustered(clusters):
    return lambda d: d.update(unit_values={"m": {**CLUSTERED["m"], "clusters": clusters}})


def test_unit_values_with_cluster_ids_pass_validate_and_read_back(tmp_path, capsys):
    from fexbench.harness.pooling import replicated_from_result

    path = write_result(tmp_path / "run", _result(unit_values=CLUSTERED))
    assert results.validate_file(path) == []
    assert main(["validate", str(tmp_path / "run")]) == 0, capsys.readouterr().out
    rebuilt = replicated_from_result(read_result(path).unit_values, "m")
    assert rebuilt.cluster_key == ((0, 0, 1, 1),) and rebuilt.value == pytest.approx(2 / 3)
    no_ids = {"m": {k: v for k, v in CLUSTERED["m"].items() if k != "clusters"}}  # as files before cluster ids
    assert replicated_from_result(no_ids, "m").cluster_key == (None,)


@pytest.mark.parametrize("mutate, field", [
    (_clustered([[0, 0, 1]]), "unit_values.m.clusters[0]: 3 cluster ids for 4 units"),
    (_clustered([[0, 0, 1, 1], None]), "unit_values.m.clusters: 2 entries for 1 replicates"),
    (_clustered([[0, 0.5, 1, 1]]), "unit_values.m.clusters[0]: [0, 0.5, 1, 1] is not valid"),
    (_clustered([[0, "a", 1, 1]]), "unit_values.m.clusters[0]: [0, 'a', 1, 1] is not valid"),
    (_clustered([[0, True, 1, 1]]), "unit_values.m.clusters[0]: [0, True, 1, 1] is not valid"),
    (_clustered([0, 0, 1, 1]), "unit_values.m.clusters[0]: 0 is not valid"),
    (lambda d: d.update(unit_values={"m": {**CLUSTERED["m"], "cluster": [[0, 0, 1, 1]]}}),
     "unit_values.m: Additional properties are not allowed ('cluster' was unexpected)"),
])
def test_malformed_cluster_ids_are_named(tmp_path, mutate, field):
    path = _written(tmp_path, mutate)
    assert any(field in p and str(path) in p for p in results.validate_file(path)), results.validate_file(path)
    with pytest.raises(ResultsError, match="unit_values.m"):
        read_result(path)


def test_validate_names_every_bad_file_and_exits_1(tmp_path, capsys):
    good = write_result(tmp_path / "run", _result(explainer="good"))
    bad = _written(tmp_path / "run", lambda d: d["metrics"][0].update(value=-3.0))
    assert main(["validate", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: metrics[0] (m).value: -3.0 is outside" in out and f"{good}:" not in out
    bad.unlink()
    assert main(["validate", str(tmp_path / "run")]) == 0
    assert "all valid" in capsys.readouterr().out


def test_validate_reads_the_published_older_schema_board(capsys):
    board = ROOT / "leaderboard/default"
    if not board.is_dir():
        pytest.skip("no published board in this checkout")
    assert main(["validate", str(board)]) == 0, capsys.readouterr().out

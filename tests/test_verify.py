"""`fexbench verify`: a submission re-run on a private seed (fexbench.analysis.verify).

One tiny waterbirds-spurious design (12 subjects: enough for an honest method to beat the controls
significantly) is run on the public seed with test-only explainers; the private seed's world and zoo
are trained once, in a cache the verifications share.

- an honest method (it reads the probe pixels only) is consistent: exit 0;
- a memorising method, right only on the world it has seen (it recognises the public probe images),
  is INCONSISTENT: exit 1, naming the controls it no longer beats;
- a submission whose stored numbers were doctored (re-digested) to look much better than the
  method is: INCONSISTENT, exit 1, naming the two intervals;
- a missing, unsafe, group-readable or malformed secret file, the public seed itself, a submission
  without the explainer: one line, exit 2, the seed never printed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fexbench import cli
from fexbench.core import registry
from fexbench.core.contract import Explainer, Explanation
from fexbench.explainers.baselines import ClassNameExplainer, target_scores

TASK = "waterbirds-spurious"
DESIGN = dict(rhos=[0.5, 0.75, 0.9, 0.98], seeds=[0, 1, 2], n_train=300, n_probe=100, n_test=100, epochs=2,
              base_epochs=0, n_bootstrap=50)
SECRET = 12345
MODULE = Path(__file__).stem  # the explainers below, as a submitter names them: module:Class


def fingerprint(images: np.ndarray) -> str:
    a = np.ascontiguousarray(images)
    return hashlib.sha256(repr((a.shape, str(a.dtype))).encode() + a.tobytes()).hexdigest()


def _pixel_words(targets, context) -> list[Explanation]:
    """For the target's top probe images, is the image border (the background) bluer or greener
    than across the probe set? Weight on water or land by that enrichment, against an object word."""
    images = np.asarray(context.probe.images, dtype=np.float32)
    if images.shape[-1] != 3:
        images = np.moveaxis(images, 1, -1)
    n = len(images)
    border = np.concatenate([images[:, :3].reshape(n, -1, 3), images[:, -3:].reshape(n, -1, 3)], axis=1)
    blue = (border[..., 2] - border[..., 1]).mean(axis=1) > 0
    out = []
    for t in targets:
        scores = target_scores(t, context)
        top = np.argsort(-scores, kind="stable")[: max(1, n // 5)]
        gain = float(blue[top].mean() - blue.mean())
        out.append(Explanation.from_weights(t, {"water": max(gain, 0.0) + 1e-6, "land": max(-gain, 0.0) + 1e-6,
                                                "circle": 0.05}))
    return out


class Honest(Explainer):
    """A method that reads only what every explainer may: the probe pixels and the subject's scores."""
    name = "verify-honest"

    def explain(self, subject, targets, context):
        return _pixel_words(targets, context)


class Memoriser(Explainer):
    """Tuned to the public seed: the honest answer on a world whose probe images it has seen
    (`known` fingerprints), the class name anywhere else."""
    name = "verify-memoriser"

    def __init__(self, known: tuple[str, ...] | list[str] = ()):
        self.known = list(known)

    def explain(self, subject, targets, context):
        if fingerprint(context.probe.images) in self.known:
            return _pixel_words(targets, context)
        return ClassNameExplainer().explain(subject, targets, context)


TEST_EXPLAINERS = (Honest, Memoriser)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    for cls in TEST_EXPLAINERS:
        registry.register_explainer(cls.name, cls, override=True)
    yield
    for cls in TEST_EXPLAINERS:
        registry.explainers.unregister(cls.name)


def _config(path: Path, explainers: list[str], extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""
        [run]
        replicates = 1
        tasks = ["{TASK}"]
        explainers = {json.dumps(explainers)}
        explainer_seeds = 2
        executor = "local"
        progress = false

        [tasks.{TASK}]
        """) + "".join(f"{k} = {json.dumps(v)}\n" for k, v in DESIGN.items()) + extra)
    return path


def _secret(path: Path, text: str = f"{SECRET}\n", mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two submissions on the public seed (0): the honest method's and the memoriser's (which has
    seen the public world), each with the controls and the oracle; a shared private cache."""
    from fexbench.core.contract import Environment

    root = tmp_path_factory.mktemp("verify")
    builtins = ["random", "class-name", "oracle"]
    assert cli.main(["run", "--config", str(_config(root / "honest.toml", ["verify-honest"] + builtins)),
                     "--cache-dir", str(root / "cache"), "--out", str(root / "honest"), "--quiet"]) == 0
    env = Environment(cache_dir=root / "cache", out_dir=root / "scratch", seed=0, progress=False)
    prepared = registry.tasks.get(TASK)(**DESIGN).prepare(env)  # cached: the public world the memoriser saw
    known = sorted({fingerprint(c.context.probe.images) for c in prepared.cases})
    config = _config(root / "memoriser.toml", ["verify-memoriser"] + builtins,
                     f"\n[explainers.verify-memoriser]\nknown = {json.dumps(known)}\n")
    assert cli.main(["run", "--config", str(config), "--cache-dir", str(root / "cache"),
                     "--out", str(root / "memoriser"), "--quiet"]) == 0
    return root


def _verify(made: Path, submission: Path, explainer: str, out: Path, *extra: str, secret: Path | None = None) -> int:
    secret = secret or _secret(out.parent / f"{out.name}.seed")
    return cli.main(["verify", str(submission), "--explainer", explainer, "--secret-seed-file", str(secret),
                     "--out", str(out), "--cache-dir", str(made / "private-cache"), *extra])


def _headline(folder: Path, explainer: str) -> float:
    data = json.loads((folder / TASK / f"{explainer}.json").read_text())
    return data["metrics"][0]["value"]


def test_the_memoriser_matches_the_honest_method_on_the_public_seed(made):
    """The premise: on the public seed nothing tells the two apart."""
    assert _headline(made / "memoriser", "verify-memoriser") == pytest.approx(_headline(made / "honest", "verify-honest"))
    assert _headline(made / "memoriser", "verify-memoriser") > _headline(made / "memoriser", "random") + 0.3


def test_an_honest_method_is_consistent_on_the_private_seed(made, tmp_path, capsys):
    rc = _verify(made, made / "honest", f"{MODULE}:Honest", tmp_path / "private")
    out, err = capsys.readouterr()
    assert rc == 0, out + err[-3000:]
    assert f"{TASK}: consistent" in out and "VERIFIED" in out and "Traceback" not in err
    assert str(SECRET) not in out + err  # the seed is never printed
    record = json.loads((tmp_path / "private" / "verification.json").read_text())
    assert record["verified"] is True and record["tasks"][TASK]["verdict"] == "consistent"
    assert record["explainer"]["name"] == "verify-honest" and record["compared_with"] == ["class-name", "oracle", "random"]
    assert str(SECRET) not in json.dumps(record) and record["secret_seed_hash"].startswith("pbkdf2-sha256:")
    assert record["secret_seed_hash"][:30] in out
    submitted = json.loads((made / "honest" / TASK / "verify-honest.json").read_text())
    assert record["submission"]["digests"][f"{TASK}/verify-honest"] == submitted["digest"]
    assert record["submission"]["public_seed"] == 0
    # the private run: the secret seed, the same design, the submitted explainer and its references
    private = json.loads((tmp_path / "private" / TASK / "verify-honest.json").read_text())
    assert private["seed"] == SECRET and private["seed"] != submitted["seed"]
    assert sorted(p.stem for p in (tmp_path / "private" / TASK).glob("*.json")) == \
        ["class-name", "oracle", "random", "verify-honest"]


def test_a_memorising_method_is_inconsistent(made, tmp_path, capsys):
    rc = _verify(made, made / "memoriser", f"{MODULE}:Memoriser", tmp_path / "private")
    out, err = capsys.readouterr()
    assert rc == 1, out + err[-3000:]
    line = next(line for line in out.splitlines() if line.startswith(f"{TASK}: "))
    assert line.startswith(f"{TASK}: INCONSISTENT: public ") and ", private " in line
    assert "publicly, not privately" in line and "class-name" in line
    assert "NOT VERIFIED" in out and str(SECRET) not in out + err
    record = json.loads((tmp_path / "private" / "verification.json").read_text())
    assert record["verified"] is False and record["tasks"][TASK]["verdict"] == "INCONSISTENT"
    # its options (what it memorised) are the submission's own
    assert record["explainer"]["options"]["known"]


def test_a_doctored_submission_is_inconsistent(made, tmp_path, capsys):
    """The stored headline made much better than the method is, the digest recomputed: the file is
    read as valid, and the private seed shows the claim does not hold."""
    from fexbench.core.results import canonical_digest

    forged = tmp_path / "forged"
    shutil.copytree(made / "honest", forged)
    path = forged / TASK / "verify-honest.json"
    data = json.loads(path.read_text())
    data["metrics"][0].update(value=0.99, ci_low=0.98, ci_high=1.0)
    data["digest"] = canonical_digest(data)
    path.write_text(json.dumps(data))
    rc = _verify(made, forged, "verify-honest", tmp_path / "private")
    out, err = capsys.readouterr()
    assert rc == 1, out + err[-3000:]
    assert f"{TASK}: INCONSISTENT: public 0.99 [0.98, 1.00], private " in out


@pytest.mark.parametrize("case", ["missing", "group-readable", "fifo", "not-an-integer", "too-large",
                                  "the-public-seed"])
def test_a_bad_secret_file_is_one_line_and_exit_2(made, tmp_path, capsys, case):
    path = tmp_path / "seed"
    if case == "group-readable":
        _secret(path, mode=0o640)
    elif case == "fifo":
        os.mkfifo(path, 0o600)
    elif case == "not-an-integer":
        _secret(path, f"{SECRET} # my seed\n")
    elif case == "too-large":
        _secret(path, str(2 ** 40))
    elif case == "the-public-seed":
        _secret(path, "0")
    rc = _verify(made, made / "honest", "verify-honest", tmp_path / "private", secret=path)
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fexbench: error: secret seed file"), err
    assert str(SECRET) not in err and not (tmp_path / "private").exists()


def test_a_submission_without_the_explainer_or_a_bad_option_is_exit_2(made, tmp_path, capsys):
    assert _verify(made, made / "honest", f"{MODULE}:Memoriser", tmp_path / "a") == 2
    assert "no result of explainer 'verify-memoriser'" in capsys.readouterr().err
    assert _verify(made, made / "honest", "verify-honest", tmp_path / "b", "--options", "[1]") == 2
    assert "--options must be a JSON object" in capsys.readouterr().err
    assert _verify(made, tmp_path, "verify-honest", tmp_path / "c") == 2
    assert "no run configuration" in capsys.readouterr().err
    assert _verify(made, made / "honest", "verify-honest", made / "honest" / "inside") == 2
    assert "inside the submission folder" in capsys.readouterr().err

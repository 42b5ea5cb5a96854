"""Hostile but honest inputs against the dataset, tracking, inspection and studies surfaces (the
README's Reliability section lists them): each is one line naming the culprit (file, line or row,
key) or is handled as a user would expect, and a refused run changes no output, ``data/`` and
``dvc.lock`` included. The end-to-end tests (marked slow) run ``dvc repro`` on a manifest dataset."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dml.data.formats import FORMATS
from dml.data.config import DataConfig
from dml.errors import DatasetError
from tests import miniatures as mini
from tests.test_pipeline import ROOT, ran_stages, run, set_params, tiny_project
from tests.test_reliability import _run_stage_in_process


# Stages run in-process and child processes (the tracking and sweep commands); the end-to-end
# cases through dvc repro are marked e2e.
pytestmark = pytest.mark.integration


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny project whose prepare stage has run once (glyphs): the output a refused run must keep."""
    repo = tiny_project(tmp_path_factory.mktemp("hostile"))
    assert _run_stage_in_process(repo, "prepare")[0] == 0
    return repo


def prepare_with(repo: Path, **data) -> tuple[int, str]:
    """Stage prepare run in-process with ``data`` set in params.yaml (restored after): (exit code, stderr)."""
    original = (repo / "params.yaml").read_text()
    set_params(repo, data=data)
    try:
        return _run_stage_in_process(repo, "prepare")
    finally:
        (repo / "params.yaml").write_text(original)


def refused(repo: Path, **data) -> str:
    """Stage prepare with ``data`` set: exit 1 and one stderr line (returned without its prefix),
    and nothing under data/ (no extraction left either) nor dvc.lock changed."""
    before = _files(repo / "data"), (repo / "dvc.lock").read_bytes()
    code, err = prepare_with(repo, **data)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error in stage prepare: "), err
    assert (_files(repo / "data"), (repo / "dvc.lock").read_bytes()) == before
    return lines[0].removeprefix("error in stage prepare: ")


def prepared(repo: Path, **data) -> dict:
    """Stage prepare with ``data`` set succeeds; its dataset.json."""
    code, err = prepare_with(repo, **data)
    assert code == 0, err
    return json.loads((repo / "data/prepared/dataset.json").read_text())


# ----------------------------------------------------------------------------- 1. manifest


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_file_is_prepared_by_the_stage(repo, tmp_path, fmt):
    """Case 1: data.root a CSV or Parquet manifest file is read (was: 'a file but not a dataset
    archive' for every manifest)."""
    path = mini.write_manifest_file(tmp_path, fmt, classes=6, per_class=3)
    info = prepared(repo, name="manifest", root=str(path))
    assert info["name"] == "manifest" and info["images"] == 18 and info["classes"] == 6


# ----------------------------------------------------------------------------- 2. outbox


def _damage_line(path: Path, number: int) -> bytes:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1][:25] + b"\xff}{ damaged"
    path.write_bytes(b"\n".join(lines))
    return lines[number - 1]


def _tracking_cli(repo: Path, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(repo)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dml.tracking", command], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_damaged_outbox_record_is_kept_aside_once_and_the_rest_syncs(tmp_path, monkeypatch):
    """Case 2: one damaged middle line of an unsent training outbox: `status` and `sync` report it
    once (file and line), it is copied to the quarantine file and stays in the outbox, and every
    other record reaches MLflow."""
    import mlflow

    from dml.config import parse_params
    from dml.tracking import TrainingRun

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # down: the records wait
    training = TrainingRun(parse_params({}), "f" * 64, "damaged")
    for epoch in (1, 2, 3):
        training.log_epoch(epoch, {"loss": 1.0 / epoch})
    training.finish()
    outbox = training.outbox.path
    damaged = _damage_line(outbox, 3)  # epoch 2's record
    kept = outbox.read_bytes()

    status = _tracking_cli(tmp_path, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr
    warning = f"warning: {outbox} line 3: damaged tracking record (not UTF-8 text), kept aside in {outbox.with_suffix('.quarantine')}"
    assert status.stderr.strip().splitlines() == [warning + "; the other records sync"]
    assert "1 run(s) with records waiting" in status.stdout and "damaged records kept aside" in status.stdout
    synced = _tracking_cli(tmp_path, "sync")
    assert synced.returncode == 0 and "warning" not in synced.stderr, synced.stderr  # reported once
    assert "synced 1 run(s)" in synced.stdout and "0 still waiting" in synced.stdout

    entry = json.loads(outbox.with_suffix(".quarantine").read_text())
    assert entry["line"] == 3 and entry["text"].encode("utf-8", "surrogateescape") == damaged
    assert outbox.read_bytes() == kept  # nothing deleted
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("glyphs-dml").experiment_id])
    assert found.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "train/loss")] == [(1, 1.0), (3, 1 / 3)]


def test_training_goes_on_when_its_opening_record_is_damaged(tmp_path, monkeypatch, capsys):
    """Case 2, training: a resumed training whose outbox lost its opening record records it anew
    and goes on; its run syncs with every epoch."""
    import mlflow

    from dml.config import parse_params
    from dml.tracking import TrainingRun

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = parse_params({})
    first = TrainingRun(params, "e" * 64, "resume")
    first.log_epoch(1, {"loss": 0.5})
    _damage_line(first.outbox.path, 1)
    again = TrainingRun(params, "e" * 64, "resume")
    again.log_epoch(2, {"loss": 0.25})
    again.finish()
    assert capsys.readouterr().err.count("damaged tracking record") == 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_ = client.get_run(again.run_id)
    assert run_.info.status == "FINISHED" and run_.data.params["optim.lr"] == "0.001"
    assert [m.step for m in client.get_metric_history(again.run_id, "train/loss")] == [1, 2]


# ----------------------------------------------------------------------------- 4. archives


def _bomb(path: Path, size: int = 30_000_000) -> Path:
    """An archive of one member of ``size`` zero bytes (about a thousand times its packed size)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("photos/class_a/zeros.jpg", bytes(size))
    else:
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("photos/class_a/zeros.jpg")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


@pytest.mark.parametrize("suffix", [".zip", ".tgz"])
def test_decompression_bomb_is_refused_and_leaves_nothing(repo, tmp_path, suffix):
    """Case 4: an archive that unpacks to ~1000 times its size is refused with one line naming it
    and data.max_compression_ratio; nothing stays in data/extracted."""
    bomb = _bomb(tmp_path / f"photos{suffix}")
    line = refused(repo, name="imagefolder", root=str(bomb))
    assert line.startswith(f"{bomb}: unpacks to more than 100 times its ") and "data.max_compression_ratio" in line


def test_archive_over_the_size_limit_is_refused_and_leaves_nothing(repo, tmp_path):
    """Case 4: data.max_unpacked_gb is checked member by member (tar sizes are known only while
    unpacking): the refusal names the archive, the key and the member, and leaves nothing."""
    packed = mini.make_archive(mini.write_imagefolder(tmp_path / "photos"), tmp_path / "photos.tgz")
    line = refused(repo, name="imagefolder", root=str(packed), max_unpacked_gb=1e-5)
    assert line.startswith(f"{packed}: unpacks to more than data.max_unpacked_gb: 1e-05 (10.") and "with member 'photos/" in line


# ----------------------------------------------------------------------------- 5. links


def test_class_folder_linked_to_the_root_is_refused(repo, tmp_path):
    """Case 5: ``alias -> .`` would copy the whole dataset into a made-up class: one line naming
    the link, and no output rewritten."""
    folder = mini.write_imagefolder(tmp_path / "photos")
    (folder / "alias").symlink_to(".")
    line = refused(repo, name="imagefolder", root=str(folder))
    assert line.startswith(f"data.root: class folder {folder / 'alias'} is a link to the dataset root itself")


def test_links_are_followed_only_inside_the_root_and_never_make_a_class_twice(tmp_path):
    """Case 5: a class folder linked to a folder inside the root that is no class is followed; a
    link to another class, or a file link leading outside the root, is one line naming it."""
    folder = mini.write_imagefolder(tmp_path / "photos", classes=4)
    mini.write_jpeg(folder / ".store" / "extra" / "a.jpg", 1)
    (folder / "class_x").symlink_to(".store/extra")
    ds = FORMATS["imagefolder"](folder, DataConfig())
    assert sorted(set(ds.class_names)) == ["class_a", "class_b", "class_c", "class_d", "class_x"]
    assert ds.paths.count("class_x/a.jpg") == 1

    (folder / "class_y").symlink_to("class_a")
    with pytest.raises(DatasetError, match=rf"^data.root: class folder {folder / 'class_y'} is a link to the same folder as class folder"):
        FORMATS["imagefolder"](folder, DataConfig())
    (folder / "class_y").unlink()
    (folder / "class_a" / "outside.jpg").symlink_to(mini.write_jpeg(tmp_path / "elsewhere.jpg", 2))
    with pytest.raises(DatasetError, match=rf"^data.root: {folder / 'class_a' / 'outside.jpg'} is a link to .*, outside the dataset root"):
        FORMATS["imagefolder"](folder, DataConfig())


# ----------------------------------------------------------------------------- 6. smaller ones


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("a.jpg,x\nb.jpg,\nc.jpg,y\n", "line 3: empty label"),
        ("a.jpg,x\nb.jpg,  \n", "line 3: empty label"),
        ("a.jpg,0\nb.jpg,0.0\nc.jpg,class0\n", "line 3: label '0.0' is the number of label '0' (line 2) written another way"),
        ("a.jpg,7\nb.jpg,07\n", "line 3: label '07' is the number of label '7' (line 2) written another way"),
        (",x\nb.jpg,y\n", "line 2: empty path"),
    ],
    ids=["empty", "blank", "0-vs-0.0", "7-vs-07", "empty-path"],
)
def test_manifest_labels_are_text_and_empty_or_ambiguous_ones_are_refused(repo, tmp_path, rows, expected):
    """Case 6: a label is its text: an empty one, or one number written two ways, would make up a
    class or split one; one line naming the file and line."""
    (tmp_path / "list.csv").write_text("path,label\n" + rows)
    assert refused(repo, name="manifest", root=str(tmp_path / "list.csv")).startswith(f"{tmp_path / 'list.csv'}: {expected}")


def test_manifest_labels_how_they_are_read(tmp_path):
    """Case 6, as documented: all-integer labels are the label numbers; otherwise each distinct
    text is a class, numbered in sorted order; a Parquet null is one line naming the row."""
    (tmp_path / "ints.csv").write_text("path,label\na.jpg,7\nb.jpg,-3\nc.jpg, 7 \n")
    ints = FORMATS["manifest"](tmp_path / "ints.csv", DataConfig())
    assert ints.labels == [7, -3, 7] and ints.class_names == ["7", "-3", "7"]
    (tmp_path / "text.csv").write_text("path,label\na.jpg,class0\nb.jpg,0\nc.jpg,Class0\n")
    text = FORMATS["manifest"](tmp_path / "text.csv", DataConfig())
    assert text.labels == [2, 0, 1] and text.class_names == ["class0", "0", "Class0"]
    pq.write_table(pa.table({"path": ["a.jpg", "b.jpg"], "label": [1, None]}), tmp_path / "list.parquet")
    with pytest.raises(DatasetError, match=r"list.parquet: row 2: empty label$"):
        FORMATS["manifest"](tmp_path / "list.parquet", DataConfig())
    pq.write_table(pa.table({"path": ["a.jpg"], "label": [1.0]}), tmp_path / "float.parquet")
    with pytest.raises(DatasetError, match=r"float.parquet: column 'label' has type double; expected integers or text$"):
        FORMATS["manifest"](tmp_path / "float.parquet", DataConfig())


def test_corrupt_tgz_is_one_line(repo, tmp_path):
    """Case 6: not a tar archive of any compression: one line (was five, one per method tried)."""
    bad = tmp_path / "CUB_200_2011.tgz"
    bad.write_bytes(bytes(range(256)) * 12)
    assert refused(repo, name="cub200", root=str(bad)) == f"{bad}: unreadable tar archive (not a gzip, bzip2, xz or plain tar file)"


@pytest.mark.parametrize("sha256", [None, "a" * 64])
def test_missing_data_root_names_the_key(repo, tmp_path, sha256):
    """Case 6: a data.root that does not exist is one line naming the key (with data.sha256 set,
    too: it said 'not an archive')."""
    assert refused(repo, name="cub200", root=str(tmp_path / "nowhere.tgz"), sha256=sha256) == f"data.root: {tmp_path / 'nowhere.tgz'} does not exist"


def test_archive_with_one_top_level_folder_is_read_through_it(repo, tmp_path):
    """Case 6: ``photos.zip`` holding ``photos/<class>/<image>`` is the image folder inside it
    (was: every image one class 'photos', then "no 'test' images"); a folder of one class is one
    line saying so."""
    packed = mini.make_archive(mini.write_imagefolder(tmp_path / "photos", classes=6), tmp_path / "photos.zip")
    info = prepared(repo, name="imagefolder", root=str(packed))
    assert info["classes"] == 6 and info["splits"]["train"]["classes"] == 3 and info["splits"]["test"]["classes"] == 3
    one = tmp_path / "one"
    mini.write_jpeg(one / "cat" / "a.jpg", 1)
    mini.write_jpeg(one / "cat" / "b.jpg", 2)
    assert refused(repo, name="imagefolder", root=str(one)).startswith(f"data.root: {one} has images of one class only ({one / 'cat'})")


def _sweep(tmp_path: Path, text: str) -> Path:
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    path = tmp_path / "sweeps" / "s.yaml"
    path.write_text(text)
    return path


def test_variant_name_dvc_would_reject_fails_the_check(tmp_path):
    """Case 6: ``a..b`` is no git ref name, so `dvc exp run -n` rejects every experiment of it:
    `--check` refuses it with one line, before Prefect, DVC or MLflow start; a grid value that
    makes such a name too."""
    _sweep(tmp_path, "name: s\nvariants:\n  - {name: a..b, overrides: {train.epochs: 1}}\nseeds: [0]\n")
    result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--check", "--root", str(tmp_path), "sweeps/s.yaml"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["sweeps/s.yaml: variants[0].name: 'a..b' is not a valid name (letters, digits, '_', "
                                          "'.', '-'; no leading '-' or '.', no trailing '-' or '.', no '..')"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".dml").exists()

    from dml.studies.sweep import SweepError, plan

    path = _sweep(tmp_path, "name: s\ngrid: {tracking.experiment: ['a..b']}\nseeds: [0]\n")
    with pytest.raises(SweepError, match=r"grid point 'a..b' makes no valid experiment name"):
        plan(path, tmp_path / "params.yaml")


def test_check_of_a_large_grid_asks_dvc_once_per_override_and_reports_progress(tmp_path, monkeypatch):
    """Case 6: `--check` of a 1,024-variant grid asks DVC's -S machinery once per distinct
    override (21), not once per variant (it took 0.17 s each: 29 min for 10,000), and reports its
    progress; every run is still validated."""
    from dml.studies import dvc_overrides, sweep as sweep_module

    keys = {"model.embed_dim": [64, 128], "train.batch_size": [32, 64], "optim.lr": [0.001, 0.002], "optim.weight_decay": [0.0, 0.0004],
            "train.epochs": [1, 2], "eval.kmeans_iters": [5, 6], "embed.batch_size": [64, 128], "index.nprobe": [1, 2],
            "gallery.k": [5, 6], "gallery.queries": [3, 4]}
    path = _sweep(tmp_path, "name: big\ngrid:\n" + "".join(f"  {k}: {v}\n" for k, v in keys.items()) + "seeds: [0]\n")
    calls, reports = [], []
    original = dvc_overrides.dvc_reads
    monkeypatch.setattr(dvc_overrides, "dvc_reads", lambda *args: calls.append(args) or original(*args))
    started = time.perf_counter()
    plan = sweep_module.plan(path, tmp_path / "params.yaml", progress=lambda done, total: reports.append((done, total)))
    assert len(plan.runs) == 1024 and len(plan.params) == 1024
    assert len(calls) == 21
    assert reports[0] == (0, 1024) and reports[-1] == (1024, 1024) and len(reports) >= 3
    assert time.perf_counter() - started < 120


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory) -> tuple[Path, Path]:
    """`dvc repro` of a tiny config on a CSV manifest (8 classes x 14 images, text labels): the
    repository and the raw dataset folder."""
    raw = tmp_path_factory.mktemp("manifest-raw")
    csv = mini.write_manifest_file(raw, "csv", classes=8, per_class=14)
    repo = tiny_project(tmp_path_factory.mktemp("manifest-repo"))
    set_params(repo, data={"name": "manifest", "root": str(csv)}, train={"epochs": 2, "batch_size": 16})
    run(["git", "commit", "-qam", "manifest"], repo)
    result = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "train" in ran_stages(result.stdout)
    return repo, raw


@pytest.mark.e2e
def test_manifest_csv_and_parquet_train_end_to_end(manifest_run):
    """Case 1 end to end: a CSV manifest, then a Parquet manifest (integer labels, its own split
    column), each through prepare, training and evaluation under `dvc repro`."""
    repo, raw = manifest_run
    info = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert info["name"] == "manifest" and info["images"] == 112 and info["splits"]["test"]["classes"] == 4
    assert 0.0 <= json.loads((repo / "metrics/eval.json").read_text())["recall_at_1"] <= 1.0

    parquet = mini.write_manifest_file(raw, "parquet", classes=8, per_class=14, split=True, string_labels=False)
    set_params(repo, data={"root": str(parquet)})
    result = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert {"prepare", "preprocess", "train", "embed", "index", "evaluate", "report"} <= ran_stages(result.stdout)
    info = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert info["splits"] == {"train": {"images": 56, "classes": 4}, "test": {"images": 56, "classes": 4}}
    assert json.loads((repo / "metrics/train.json").read_text())["epochs"] == 2


@pytest.mark.e2e
def test_report_stage_goes_on_with_a_damaged_outbox_record(manifest_run):
    """Case 2 end to end: a damaged middle line of the training outbox, then `dvc repro -f -s
    report`: the stage succeeds, one warning names the file and line, the line is kept aside."""
    repo, _ = manifest_run
    outbox = sorted((repo / ".dml/outbox").glob("train-*.jsonl"))[-1]
    _damage_line(outbox, 3)
    result = run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "report"], repo)
    warnings = [line for line in result.stderr.splitlines() if "damaged tracking record" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {outbox} line 3: ") and "Traceback" not in result.stderr
    assert json.loads(outbox.with_suffix(".quarantine").read_text())["line"] == 3
    again = run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "report"], repo)
    assert "damaged tracking record" not in again.stderr


@pytest.mark.e2e
def test_query_picture_is_capped(manifest_run, tmp_path):
    """Case 3: `--k 1000000000 --png` lists the whole gallery (56) in the table and draws at most
    50 neighbours per image, saying so in one line; the PNG's width is bounded."""
    from PIL import Image

    repo, raw = manifest_run
    image = raw / "images/0/0.jpg"
    out = tmp_path / "out.png"
    started = time.perf_counter()
    result = run([sys.executable, "-m", "dml.query", str(image), "--k", "1000000000", "--png", str(out)], repo)
    assert time.perf_counter() - started < 120
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {out} (the nearest 50 of 56 neighbours per image: the picture shows at most 50)"
    assert len([line for line in lines if line.split()[:1] and line.split()[0].isdigit()]) == 56
    assert Image.open(out).size[0] < 50 * 80 + 400


@pytest.mark.e2e
def test_missing_data_root_under_dvc_changes_no_record(manifest_run):
    """Case 6 under `dvc repro`: DVC hashes a stage's dependencies before it runs the stage, so a
    data.root that does not exist stops it with DVC's own line, naming the path; dvc.lock is
    unchanged, and restoring data.root restores the outputs from DVC's cache without a rerun."""
    repo, _ = manifest_run
    lock = (repo / "dvc.lock").read_bytes()
    original = (repo / "params.yaml").read_text()
    set_params(repo, data={"root": str(repo / "nowhere.csv")})
    failed = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
    assert failed.returncode != 0 and f"{repo / 'nowhere.csv'}" in failed.stderr
    assert (repo / "dvc.lock").read_bytes() == lock
    (repo / "params.yaml").write_text(original)
    restored = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "train" not in ran_stages(restored.stdout) and (repo / "dvc.lock").read_bytes() == lock


@pytest.mark.e2e
def test_corrupt_shard_is_one_line_and_the_next_repro_rebuilds_it(manifest_run):
    """Packed data under `dvc repro`: with a resize cache, preprocess packs the images into an
    Arrow shard; a truncated shard stops a stage that reads it with one line naming the file, and
    the next `dvc repro` restores exactly that shard (same bytes: DVC's run cache checks out the
    stage's recorded outputs, or the stage reruns) and runs nothing else."""
    repo, _ = manifest_run
    set_params(repo, preprocess={"resize": 24, "channels": 3})
    run([sys.executable, "-m", "dvc", "repro"], repo)
    shard = repo / "data/preprocessed/shards/00000.arrow"
    good = shard.read_bytes()
    assert sorted(p.name for p in (repo / "data/preprocessed").rglob("*") if p.is_file()) == ["00000.arrow", "manifest.parquet", "stats.json"]
    shard.write_bytes(good[: len(good) // 2])
    failed = run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "embed"], repo, check=False)
    errors = [line for line in failed.stderr.splitlines() if "image shard" in line]
    assert failed.returncode != 0 and len(errors) == 1 and "Traceback" not in failed.stderr
    assert "data/preprocessed/shards/00000.arrow: unreadable or truncated image shard" in errors[0] and "dvc repro" in errors[0]
    rebuilt = run([sys.executable, "-m", "dvc", "repro"], repo)
    restored = ran_stages(rebuilt.stdout) | set(re.findall(r"Stage '([\w-]+)' is cached - skipping run", rebuilt.stdout))
    assert restored == {"preprocess"} and "train" not in ran_stages(rebuilt.stdout), rebuilt.stdout
    assert shard.read_bytes() == good

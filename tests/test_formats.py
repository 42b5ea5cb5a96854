"""Real-dataset preparation on miniatures in the official layouts (tests/miniatures.py): exact
protocol splits, labels joined by id, root detection, archives (and hostile archives), image
checks and their policies, and the prepared outputs. Runs in a few seconds (one glyphs test
pays the font discovery, ~10 s)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from dml.config import parse_params
from dml.data import archive
from dml.data.archive import resolve_root
from dml.io import file_sha256
from dml.data.config import DataConfig
from dml.data.formats import FORMATS
from dml.data.manifest import image_root, read_manifest
from dml.data.raw import RawDataset, hold_out_val
from dml.data.validate import check_image
from dml.errors import ConfigError, DatasetError
from dml.paths import PREPARE_ERRORS, PREPARED
from stages.prepare import prepare
from tests import miniatures as mini


def cfg(**values) -> DataConfig:
    return DataConfig(**values)


def classes_of(dataset: RawDataset, split: str) -> set[int]:
    return {label for label, s in zip(dataset.labels, dataset.splits) if s == split}


def assert_consistent(dataset: RawDataset) -> None:
    """One class name per label, unique ids, every listed file present."""
    assert len({(y, n) for y, n in zip(dataset.labels, dataset.class_names)}) == len(set(dataset.labels))
    assert len(set(dataset.ids)) == len(dataset)
    assert all((dataset.image_root / p).is_file() for p in dataset.paths)


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    return mini.write_cub200(tmp_path_factory.mktemp("cub"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "coco"}, "params.yaml: data.name: unknown value 'coco'; expected one of 'glyphs', 'cub200'"),
        ({"samples_per_class": 8}, "params.yaml: data.samples_per_class: unknown key"),
        ({"glyphs": {"max_classes": 2}}, "params.yaml: data.glyphs.max_classes: Input should be greater than or equal to 4"),
        ({"sha256": "abc"}, "params.yaml: data.sha256: String should match pattern"),
        ({"val_classes": 1.0}, "params.yaml: data.val_classes: Input should be less than 1"),
        ({"on_non_rgb": "keep"}, "params.yaml: data.on_non_rgb: unknown value 'keep'"),
        ({"check_workers": 0}, "params.yaml: data.check_workers: Input should be greater than or equal to 1"),
    ],
)
def test_data_params_fail_with_one_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params({"data": raw})
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Readers: protocol splits, labels, ids
# --------------------------------------------------------------------------------------------


def test_cub200_classes_1_to_100_train_joined_by_id(cub):
    """images.txt and image_class_labels.txt are shuffled differently in the miniature: the
    labels are right only if the reader joins them by image id."""
    ds = FORMATS["cub200"](cub.parent, cfg())
    assert ds.image_root == cub
    assert classes_of(ds, "train") == set(range(1, 101)) and classes_of(ds, "test") == set(range(101, 201))
    assert Counter(ds.splits) == {"train": 200, "test": 200}
    assert sorted(ds.ids) == list(range(1, 401))
    for image_id, path, label, name in zip(ds.ids, ds.paths, ds.labels, ds.class_names):
        assert path.startswith(f"images/{label:03d}.Bird_{label}/") and path.endswith(f"_{image_id}.jpg")
        assert name == f"{label:03d}.Bird_{label}"
    assert_consistent(ds)


def test_cars196_classes_1_to_98_train_from_shuffled_annotations(tmp_path):
    base = mini.write_cars196(tmp_path, per_class=2)
    ds = FORMATS["cars196"](tmp_path, cfg())
    assert ds.image_root == base and ds.ids == list(range(392))
    assert ds.paths != sorted(ds.paths), "the miniature's annotation order must not be class order"
    for path, label, name in zip(ds.paths, ds.labels, ds.class_names):
        assert label == mini.cars_class_of(int(Path(path).stem), 2) and name == f"Make Model {label} 2012"
    assert classes_of(ds, "train") == set(range(1, 99)) and classes_of(ds, "test") == set(range(99, 197))
    assert Counter(ds.splits) == {"train": 196, "test": 196}
    assert_consistent(ds)


def test_sop_splits_are_the_two_files(tmp_path):
    base = mini.write_sop(tmp_path, train_classes=6, test_classes=6, per_class=(2, 3))
    ds = FORMATS["sop"](tmp_path, cfg())
    assert ds.image_root == base
    assert classes_of(ds, "train") == set(range(1, 7)) and classes_of(ds, "test") == set(range(7, 13))
    assert Counter(ds.splits) == {"train": 15, "test": 15}
    assert ds.ids == list(range(1, 31)) and ds.paths[0] == "bicycle_final/100001_0.JPG"
    assert_consistent(ds)


def test_sop_without_header_is_one_line(tmp_path):
    base = mini.write_sop(tmp_path)
    lines = (base / "Ebay_test.txt").read_text().splitlines(keepends=True)
    (base / "Ebay_test.txt").write_text("".join(lines[1:]))
    with pytest.raises(DatasetError, match=r"Ebay_test.txt: first line must be the header 'image_id class_id super_class_id path'"):
        FORMATS["sop"](tmp_path, cfg())


def test_sop_repeated_image_id_is_one_line(tmp_path):
    base = mini.write_sop(tmp_path)
    lines = (base / "Ebay_test.txt").read_text().splitlines(keepends=True)
    (base / "Ebay_test.txt").write_text(lines[0] + "1" + lines[1][lines[1].index(" "):] + "".join(lines[2:]))
    with pytest.raises(DatasetError, match=r"Stanford_Online_Products: image_id 1 appears more than once"):
        FORMATS["sop"](tmp_path, cfg())


@pytest.mark.parametrize("layout", ["img beside Eval", "img inside Img"])
def test_inshop_train_query_gallery(tmp_path, layout):
    base = mini.write_inshop(tmp_path, train_items=4, eval_items=4, per_item=3)
    if layout == "img inside Img":
        (base / "Img").mkdir()
        (base / "img").rename(base / "Img" / "img")
    ds = FORMATS["inshop"](tmp_path, cfg())
    assert ds.image_root == (base if layout == "img beside Eval" else base / "Img")
    assert Counter(ds.splits) == {"train": 12, "query": 4, "gallery": 8}
    assert classes_of(ds, "train") == {1, 3, 5, 7} and classes_of(ds, "query") == classes_of(ds, "gallery") == {9, 11, 13, 15}
    assert set(ds.class_names) == {f"id_{n:08d}" for n in (1, 3, 5, 7, 9, 11, 13, 15)}
    assert_consistent(ds)


def test_inshop_without_images_is_one_line(tmp_path):
    base = mini.write_inshop(tmp_path)
    shutil.rmtree(base / "img")
    with pytest.raises(DatasetError, match=r"list_eval_partition.txt: no img/ folder next to it"):
        FORMATS["inshop"](tmp_path, cfg())


def test_imagefolder_class_disjoint_seeded_split(tmp_path):
    mini.write_imagefolder(tmp_path, classes=6, per_class=3)
    ds = FORMATS["imagefolder"](tmp_path, cfg(train_fraction=0.5, seed=0))
    assert len(ds) == 18 and "class_a/sub/img2.png" in ds.paths and not any(p.endswith(".txt") for p in ds.paths)
    assert len(classes_of(ds, "train")) == 3 and not classes_of(ds, "train") & classes_of(ds, "test")
    assert sorted(set(ds.class_names)) == [f"class_{c}" for c in "abcdef"]
    assert FORMATS["imagefolder"](tmp_path, cfg(seed=0)) == ds
    splits = {tuple(FORMATS["imagefolder"](tmp_path, cfg(seed=seed)).splits) for seed in range(6)}
    assert len(splits) > 1, "the seed chooses the train classes"
    assert_consistent(ds)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("with_split", [True, False])
def test_manifest_file(tmp_path, fmt, with_split):
    path = mini.write_manifest_file(tmp_path, fmt, classes=6, per_class=3, split=with_split)
    ds = FORMATS["manifest"](path, cfg())
    assert ds.image_root == tmp_path and len(ds) == 18 and ds.ids == list(range(18))
    assert sorted(set(ds.class_names)) == [f"kind_{c}" for c in range(6)]
    assert len(classes_of(ds, "train")) == 3 and not classes_of(ds, "train") & classes_of(ds, "test")
    if with_split:
        assert classes_of(ds, "train") == {0, 1, 2}
    assert_consistent(ds)


def test_manifest_file_int_labels_and_absolute_paths(tmp_path):
    path = mini.write_manifest_file(tmp_path / "a", "csv", string_labels=False)
    text = path.read_text().replace('"images/', f'"{tmp_path / "a"}/images/')
    (tmp_path / "list.csv").write_text(text)
    ds = FORMATS["manifest"](tmp_path / "list.csv", cfg())
    assert ds.image_root == tmp_path / "a" / "images" and ds.paths[0] == "0/0.jpg"
    assert ds.labels[:4] == [0, 0, 0, 1] and ds.class_names[3] == "1"
    assert_consistent(ds)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("file,label", "list.csv: no column 'path'"), ("path,class", "list.csv: no column 'label'")],
)
def test_manifest_file_missing_column_is_one_line(tmp_path, header, expected):
    (tmp_path / "list.csv").write_text(f"{header}\na.jpg,1\n")
    with pytest.raises(DatasetError, match=expected) as info:
        FORMATS["manifest"](tmp_path / "list.csv", cfg())
    assert "\n" not in str(info.value)


def test_manifest_file_unknown_split_is_one_line(tmp_path):
    (tmp_path / "list.csv").write_text("path,label,split\na.jpg,1,training\n")
    with pytest.raises(DatasetError, match=r"list.csv: column 'split' has unknown value\(s\) \['training'\]"):
        FORMATS["manifest"](tmp_path / "list.csv", cfg())


# --------------------------------------------------------------------------------------------
# Root detection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [0, 1, 2])
def test_root_may_be_the_dataset_folder_or_up_to_two_levels_above(tmp_path, levels):
    base = mini.write_cub200(tmp_path / "downloads", classes=4)
    root = [base, base.parent, base.parent.parent][levels]
    assert FORMATS["cub200"](root, cfg()).image_root == base


def test_root_three_levels_above_is_not_searched(tmp_path):
    mini.write_cub200(tmp_path / "a" / "b", classes=4)
    with pytest.raises(DatasetError, match="has no CUB_200_2011/images.txt"):
        FORMATS["cub200"](tmp_path, cfg())


def test_two_datasets_under_root_is_one_line(tmp_path):
    mini.write_cub200(tmp_path / "one", classes=2)
    mini.write_cub200(tmp_path / "two", classes=2)
    with pytest.raises(DatasetError, match=r"holds several datasets .*point data.root at one of them"):
        FORMATS["cub200"](tmp_path, cfg())


MISSING_MARKER = {
    "cub200": "has no CUB_200_2011/images.txt (expected the extracted CUB_200_2011 folder or the folder containing it)",
    "cars196": "has no cars_annos.mat (expected the folder holding cars_annos.mat and car_ims/",
    "sop": "has no Stanford_Online_Products/Ebay_train.txt (expected the extracted Stanford_Online_Products folder",
    "inshop": "has no Eval/list_eval_partition.txt (expected the In-shop Clothes Retrieval Benchmark folder",
    "imagefolder": "has no <class>/<image> files",
}


@pytest.mark.parametrize("name", sorted(MISSING_MARKER))
def test_missing_marker_is_one_line_naming_root(tmp_path, name):
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError) as info:
        FORMATS[name](tmp_path, cfg())
    assert str(info.value).startswith(f"data.root: {tmp_path} {MISSING_MARKER[name]}")
    assert "\n" not in str(info.value)


def test_missing_root_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match=rf"^data.root: {tmp_path / 'nowhere'} does not exist \(expected the extracted CUB"):
        FORMATS["cub200"](tmp_path / "nowhere", cfg())


def test_missing_companion_file_is_named(tmp_path):
    base = mini.write_cub200(tmp_path, classes=2)
    (base / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"CUB_200_2011/classes.txt: missing"):
        FORMATS["cub200"](tmp_path, cfg())


# --------------------------------------------------------------------------------------------
# The val split
# --------------------------------------------------------------------------------------------


def test_val_split_takes_seeded_train_classes(cub):
    ds = FORMATS["cub200"](cub, cfg())
    held = hold_out_val(ds, 0.2, seed=0)
    val, train = classes_of(held, "val"), classes_of(held, "train")
    assert len(val) == 20 and len(train) == 80 and val | train == set(range(1, 101)) and not val & train
    assert [s for s in held.splits if s == "test"] == [s for s in ds.splits if s == "test"]
    assert hold_out_val(ds, 0.2, seed=0) == held
    assert classes_of(hold_out_val(ds, 0.2, seed=1), "val") != val
    assert hold_out_val(ds, 0.0, seed=0) == ds


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def run_prepare(repo: Path, monkeypatch, **data) -> tuple[pa.Table, dict, dict]:
    """The prepare stage in ``repo`` (as its cwd): manifest table, dataset.json, report.json."""
    monkeypatch.chdir(repo)
    prepare(parse_params({"data": data}))
    table = read_manifest(PREPARED)
    return table, json.loads((PREPARED / "dataset.json").read_text()), json.loads((PREPARED / "report.json").read_text())


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_archive_is_verified_extracted_once_and_prepared(tmp_path, monkeypatch, suffix):
    source = mini.write_cub200(tmp_path / "download")
    raw = tmp_path / "repo" / "data" / "raw"
    raw.mkdir(parents=True)
    packed = mini.make_archive(source, raw / f"CUB_200_2011{suffix}")
    digest = file_sha256(packed)
    shutil.rmtree(tmp_path / "download")
    table, info, _ = run_prepare(tmp_path / "repo", monkeypatch, name="cub200", root=f"data/raw/{packed.name}", sha256=digest)
    assert info["image_root"] == "../extracted/CUB_200_2011/CUB_200_2011" and table.num_rows == 400
    assert info["splits"] == {"train": {"images": 200, "classes": 100}, "test": {"images": 200, "classes": 100}}
    assert (image_root(table, PREPARED) / table.column("path")[0].as_py()).is_file()

    def no_extraction(*args):
        raise AssertionError("an unchanged archive must not be unpacked again")

    monkeypatch.setattr(archive, "_extract_tar", no_extraction)
    monkeypatch.setattr(archive, "_extract_zip", no_extraction)
    assert run_prepare(tmp_path / "repo", monkeypatch, name="cub200", root=f"data/raw/{packed.name}", sha256=digest)[0] == table


def test_sha256_mismatch_names_file_expected_and_got(tmp_path):
    packed = mini.make_archive(mini.write_cub200(tmp_path, classes=2), tmp_path / "CUB_200_2011.tgz")
    with pytest.raises(DatasetError) as info:
        resolve_root(packed, "0" * 64, tmp_path / "extracted")
    assert str(info.value) == (
        f"data.sha256: {packed} has sha256 {file_sha256(packed)}, expected {'0' * 64} (a different or damaged download)"
    )
    assert not (tmp_path / "extracted").exists()


def _tar_with(path: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("CUB_200_2011/images.txt")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"1 a\n"))
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../evil.txt"), "path climbs out of the target folder"),
        (tarfile.TarInfo("CUB_200_2011/../../evil.txt"), "path climbs out of the target folder"),
        (tarfile.TarInfo("/tmp/evil.txt"), "absolute path"),
        (_symlink("CUB_200_2011/link", "/etc/passwd"), "link to an absolute path"),
        (_symlink("CUB_200_2011/link", "../../evil.txt"), "link pointing outside the target folder"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "absolute-link", "relative-link"],
)
def test_hostile_tar_member_is_refused_and_nothing_written(tmp_path, member, reason):
    packed = _tar_with(tmp_path / "x.tgz", member, b"evil" if member.isfile() else b"")
    extracted = tmp_path / "deep" / "extracted"
    with pytest.raises(DatasetError) as info:
        resolve_root(packed, None, extracted)
    assert str(info.value) == f"{packed}: refusing member {member.name!r}: {reason}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "extracted", "x.tgz"]
    assert not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize(("name", "link"), [("../evil.txt", False), ("/abs/evil.txt", False), ("data/link", True)])
def test_hostile_zip_member_is_refused(tmp_path, name, link):
    packed = tmp_path / "x.zip"
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("data/ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd" if link else "evil")
    with pytest.raises(DatasetError, match=rf"^{packed}: refusing member {name!r}: "):
        resolve_root(packed, None, tmp_path / "extracted")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["extracted", "x.zip"]


def test_broken_archive_is_one_line(tmp_path):
    (tmp_path / "x.tgz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match=r"x.tgz: unreadable tar archive"):
        resolve_root(tmp_path / "x.tgz", None, tmp_path / "extracted")


def test_sha256_of_a_folder_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"^data.sha256: .* is not an archive"):
        resolve_root(tmp_path, "a" * 64, tmp_path / "extracted")


# --------------------------------------------------------------------------------------------
# Image checks and policies
# --------------------------------------------------------------------------------------------

EXPECTED_KIND = {
    "missing": "missing", "corrupt": "not_image", "empty": "not_image", "truncated": "truncated",
    "truncated_tail": "truncated", "grayscale": "non_rgb", "cmyk": "non_rgb", "palette": "non_rgb", "rgba": "non_rgb",
}


@pytest.mark.parametrize("how", mini.DAMAGE)
def test_check_image_finds_each_kind(tmp_path, how):
    path = mini.write_jpeg(tmp_path / "a.jpg", 7, size=(64, 48))
    assert check_image(path) is None
    mini.damage(path, how)
    kind, detail = check_image(path)
    assert kind == EXPECTED_KIND[how], detail
    if how in ("grayscale", "cmyk", "palette", "rgba"):
        assert detail == f"mode {dict(grayscale='L', cmyk='CMYK', palette='P', rgba='RGBA')[how]}"


def damaged_cub(root: Path, damages: dict[tuple[int, int], str], per_class: int = 3) -> dict[str, str]:
    """A CUB miniature under ``root`` with ``damages[(class, k)]`` applied to image k of the
    class; returns {path as listed in the manifest: damage}."""
    base = mini.write_cub200(root, per_class=per_class)
    done = {}
    for (c, k), how in damages.items():
        path = next((base / "images" / f"{c:03d}.Bird_{c}").glob(f"Bird_{c}_{k:04d}_*.jpg"))
        mini.damage(path, how)
        done[path.relative_to(base).as_posix()] = how
    return done


BAD = {(3, 0): "corrupt", (120, 1): "truncated", (7, 2): "missing"}


@pytest.mark.integration
def test_bad_files_error_names_the_first_and_keeps_previous_output(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "raw"
    damaged_cub(raw, {})
    run_prepare(tmp_path, monkeypatch, name="cub200")
    before = (PREPARED / "manifest.parquet").read_bytes()
    shutil.rmtree(raw)
    damaged = damaged_cub(raw, BAD)
    with pytest.raises(DatasetError) as info:
        prepare(parse_params({"data": {"name": "cub200"}}))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data/raw/CUB_200_2011/images/003.Bird_3/Bird_3_0000_7.jpg: not an image (")
    assert "; 3 file(s) refused in all (1 missing, 1 not_image, 1 truncated); data.on_bad_image: skip drops them" in message
    assert message.endswith(f"(all listed in {PREPARE_ERRORS})")
    listed = json.loads(PREPARE_ERRORS.read_text())["files"]
    assert {(f["path"], f["kind"], f["action"]) for f in listed} == {(p, EXPECTED_KIND[how], "error") for p, how in damaged.items()}
    assert (PREPARED / "manifest.parquet").read_bytes() == before


@pytest.mark.integration
def test_bad_files_skipped_and_reported(tmp_path, monkeypatch):
    damaged = damaged_cub(tmp_path, BAD)
    table, info, report = run_prepare(tmp_path, monkeypatch, name="cub200", root=str(tmp_path), on_bad_image="skip")
    assert table.num_rows == 600 - 3 and info["splits"]["train"] == {"images": 298, "classes": 100}
    assert {(f["path"], f["kind"], f["action"]) for f in report["files"]} == {(p, EXPECTED_KIND[how], "skipped") for p, how in damaged.items()}
    assert not set(table.column("path").to_pylist()) & set(damaged) and report["checked"] == 600
    assert not PREPARE_ERRORS.exists()


NON_RGB = {(2, 0): "grayscale", (5, 1): "cmyk", (110, 0): "palette", (111, 2): "rgba"}


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["convert", "skip", "error"])
def test_non_rgb_policies(tmp_path, monkeypatch, policy):
    damaged_cub(tmp_path, NON_RGB)
    if policy == "error":
        with pytest.raises(DatasetError, match=r"images/002.Bird_2/Bird_2_0000_4.jpg: not RGB \(mode L\); 4 file\(s\) refused in all \(4 non_rgb\); data.on_non_rgb: convert or skip"):
            run_prepare(tmp_path, monkeypatch, name="cub200", root=str(tmp_path), on_non_rgb="error")
        return
    table, _, report = run_prepare(tmp_path, monkeypatch, name="cub200", root=str(tmp_path), on_non_rgb=policy)
    assert sorted(f["detail"] for f in report["files"]) == ["mode CMYK", "mode L", "mode P", "mode RGBA"]
    assert {f["action"] for f in report["files"]} == {"converted to RGB at load time" if policy == "convert" else "skipped"}
    assert table.num_rows == (600 if policy == "convert" else 596)


@pytest.mark.integration
def test_class_left_without_a_positive_is_dropped(tmp_path, monkeypatch):
    damaged_cub(tmp_path, {(5, 0): "corrupt", (150, 1): "truncated"}, per_class=2)
    table, info, report = run_prepare(tmp_path, monkeypatch, name="cub200", root=str(tmp_path), on_bad_image="skip")
    assert 5 not in table.column("label").to_pylist() and 150 not in table.column("label").to_pylist()
    assert info["splits"] == {"train": {"images": 198, "classes": 99}, "test": {"images": 198, "classes": 99}}
    assert [(c["class"], c["split"], c["problem"], c["action"]) for c in report["classes"]] == [
        ("150.Bird_150", "test", "only 1 image in split test", "dropped 1 image"),
        ("005.Bird_5", "train", "only 1 image in split train", "dropped 1 image"),
    ]


@pytest.mark.integration
def test_inshop_query_without_gallery_is_dropped(tmp_path, monkeypatch):
    base = mini.write_inshop(tmp_path, train_items=4, eval_items=4, per_item=3)
    for path in (base / "img").rglob("id_00000015/0[23]_1_front.jpg"):
        mini.damage(path, "corrupt")
    table, info, report = run_prepare(tmp_path, monkeypatch, name="inshop", root=str(tmp_path), on_bad_image="skip")
    assert info["splits"] == {"train": {"images": 12, "classes": 4}, "query": {"images": 3, "classes": 3}, "gallery": {"images": 6, "classes": 3}}
    assert [(c["class"], c["problem"], c["action"]) for c in report["classes"]] == [("id_00000015", "no gallery image of its item", "dropped 1 query image(s)")]


# --------------------------------------------------------------------------------------------
# The prepared outputs
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("name", ["sop", "cars196", "imagefolder"])
def test_prepared_manifest_points_at_the_raw_folder_relatively(tmp_path, monkeypatch, name):
    writer = {"sop": mini.write_sop, "cars196": mini.write_cars196, "imagefolder": mini.write_imagefolder}[name]
    base = writer(tmp_path / "data" / "raw" / "set")
    table, info, report = run_prepare(tmp_path, monkeypatch, name=name, root="data/raw/set", val_classes=0.34)
    assert info["image_root"] == os.path.relpath(base, tmp_path / PREPARED) and not os.path.isabs(info["image_root"])
    assert table.schema.metadata[b"image_root"].decode() == info["image_root"]
    assert sum(s["images"] for s in info["splits"].values()) == table.num_rows == info["images"]
    assert {"train", "val", "test"} == set(info["splits"]) and report["files"] == [] and report["classes"] == []
    labels = table.column("label").to_pylist()
    splits = table.column("split").to_pylist()
    by_split = {s: {y for y, t in zip(labels, splits) if t == s} for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"] and not by_split["val"] & by_split["test"]
    if name == "sop":
        assert table.column("id").to_pylist() == list(range(1, table.num_rows + 1))


@pytest.mark.integration
def test_prepare_with_absolute_root_keeps_it_absolute(tmp_path, monkeypatch):
    base = mini.write_sop(tmp_path / "elsewhere")
    (tmp_path / "repo").mkdir()
    _, info, _ = run_prepare(tmp_path / "repo", monkeypatch, name="sop", root=str(tmp_path / "elsewhere"))
    assert info["image_root"] == str(base)


@pytest.mark.integration
def test_too_few_classes_for_the_protocol_is_one_line(tmp_path, monkeypatch):
    mini.write_cub200(tmp_path, classes=100)
    with pytest.raises(DatasetError, match=r"^data.root: cub200 at .* has no 'test' images"):
        run_prepare(tmp_path, monkeypatch, name="cub200", root=str(tmp_path))


@pytest.mark.integration
def test_glyphs_get_a_val_split_too(tmp_path, monkeypatch):
    table, info, report = run_prepare(tmp_path, monkeypatch, val_classes=0.34, glyphs={"max_classes": 12, "samples_per_class": 2})
    assert info["image_root"] == "." and report == {"dataset": "glyphs", "checked": 0, "files": [], "classes": []}
    assert info["splits"] == {"train": {"images": 8, "classes": 4}, "val": {"images": 4, "classes": 2}, "test": {"images": 12, "classes": 6}}
    assert (PREPARED / table.column("shard")[0].as_py()).is_file() and table.column("row")[0].as_py() == 0  # packed

"""dvc.yaml stays honest: every declared code dependency exists, params name real sections,
the train stage declares exactly the sections a trained model depends on, and each stage's
imports of project code are covered by its declared deps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from dml.config import TRAINING_SECTIONS, Params

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
OUTPUTS = {next(iter(o)) if isinstance(o, dict) else o for s in STAGES.values() for key in ("outs", "metrics", "plots") for o in s.get(key, [])}


def _resolve(entry: str) -> str:
    """DVC templating (``${data.root}``) against the shipped params.yaml."""
    def value(match: re.Match) -> str:
        node = PARAMS
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{\s*([\w.]+)\s*\}", value, entry)


def _paths(entries):
    return [_resolve(next(iter(e)) if isinstance(e, dict) else e) for e in entries]


def test_code_deps_exist_and_params_are_sections():
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        for dep in _paths(stage["deps"]):
            produced = any(dep == out or dep.startswith(out + "/") for out in OUTPUTS)
            assert produced or (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"
        for param in stage.get("params", []):  # a section, or one key of it (train.device)
            section, _, key = param.partition(".")
            assert section in Params.model_fields, (name, param)
            assert not key or key in Params.model_fields[section].annotation.model_fields, (name, param)


def test_training_sections_reach_train_only_through_the_resolved_config():
    """configure declares every training section; train declares none of them but the resolved
    file, so DVC retrains only when the selected methods' knobs change."""
    assert tuple(STAGES["configure"]["params"]) == TRAINING_SECTIONS
    assert "params" not in STAGES["train"]
    assert "configs/train.json" in _paths(STAGES["train"]["deps"])
    assert _paths(STAGES["configure"]["outs"]) == ["configs/train.json"]


def test_knobs_that_change_no_output_rerun_nothing():
    """preprocess.workers and the loader section only say how fast (outputs tested identical for
    any value): no stage declares them; every other preprocess knob reruns preprocess."""
    preprocess = set(STAGES["preprocess"]["params"])
    assert preprocess == {f"preprocess.{key}" for key in Params.model_fields["preprocess"].annotation.model_fields} - {"preprocess.workers"}
    declared = [p for stage in STAGES.values() for p in stage.get("params", [])]
    assert not any(p == "loader" or p.startswith("loader.") for p in declared)


def _project_modules(path: Path) -> set[str]:
    """``dml.*`` modules a file imports at run time (imports for type checkers only excluded)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dml."):
            found.add(node.module)
    return found


def _module_file(module: str) -> str:
    path = Path(*module.split("."))
    return str(path) if (ROOT / path).is_dir() else f"{path}.py"


def _imported_closure(path: Path) -> set[str]:
    """Library modules a stage file imports, directly or through other library modules (not
    through the schema modules, whose imports are other schema modules)."""
    seen: set[str] = set()
    todo = list(_project_modules(path))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module in SCHEMA_MODULES:
            continue
        file = ROOT / _module_file(module)
        sources = sorted(file.glob("*.py")) if file.is_dir() else [file]
        for source in sources:
            todo.extend(_project_modules(source) - seen)
    return seen


# Modules a stage may use without declaring them: schema/paths/IO helpers whose changes never
# change results (params values are tracked through `params`; the per-method knob models are
# schema too), and tracking for train (its live curves are not an output). configure and train,
# whose outputs the schema shapes, declare the schema modules they use.
SCHEMA_MODULES = {"dml.config", "dml.schema", "dml.data.config", "dml.losses.config", "dml.miners.config", "dml.samplers.config",
                  "dml.models.config"}
UNDECLARED_OK = SCHEMA_MODULES | {"dml.paths", "dml.io", "dml.errors", "dml.tracking"}
# Per stage: train searches neighbours only for the per-epoch test Recall@1 monitoring curve,
# which never feeds back into the model, so editing the search code must not retrain.
STAGE_UNDECLARED_OK = {"train": {"dml.indexing"}}


def test_stage_imports_are_declared_deps():
    """A stage's library imports, followed through the library, are in its deps (so editing any
    code that shapes a stage's output reruns it)."""
    for name, stage in STAGES.items():
        deps = _paths(stage["deps"])
        allowed = UNDECLARED_OK | STAGE_UNDECLARED_OK.get(name, set())
        for module in _imported_closure(ROOT / "stages" / f"{name}.py") - allowed:
            if module.startswith("dml.tracking."):
                continue  # the tracking package, like dml.tracking
            file = _module_file(module)
            covered = any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)
            assert covered, f"stage {name} imports {module} but dvc.yaml does not list {file}"

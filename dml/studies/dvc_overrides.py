"""How a sweep's overrides are spelled for ``dvc exp run -S`` (the Hydra override grammar), and
what DVC's own machinery reads back from them: :func:`dml.studies.sweep.plan` checks that the two
agree before any run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dml.config import apply_overrides, read_yaml


def _has_key(raw: dict[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def hydra_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_value(value: Any, parser=None) -> str:
    """``value`` in the Hydra override grammar of ``dvc exp run -S`` (strings quoted only where
    Hydra would read them as something else, e.g. ``'1'`` or ``'true'``)."""
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v, parser) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    parser = parser or hydra_parser()
    try:
        if parser.parse_override(f"k={value}").value() == value:
            return value
    except Exception:  # noqa: BLE001 - not a bare Hydra string: quote it
        pass
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_args(raw: dict[str, Any], overrides: dict[str, Any], parser=None) -> list[str]:
    """``-S key=value`` arguments of ``dvc exp run`` (``+key`` adds a key params.yaml lacks)."""
    parser = parser or hydra_parser()
    args = []
    for key, value in overrides.items():
        args += ["-S", f"{'' if _has_key(raw, key) else '+'}{key}={hydra_value(value, parser)}"]
    return args


def dvc_reads(params_file: Path, args: list[str]) -> dict[str, Any]:
    """What DVC's own ``-S`` machinery makes of ``args`` on a copy of ``params_file``."""
    from dvc.utils.hydra import apply_overrides as dvc_apply

    with tempfile.TemporaryDirectory() as tmp:
        copy_path = Path(tmp) / "params.yaml"
        copy_path.write_bytes(params_file.read_bytes())
        dvc_apply(copy_path, args[1::2])
        return read_yaml(copy_path)


def dotted_get(raw: dict[str, Any], key: str) -> Any:
    """``raw[a][b]`` for the key ``a.b`` (None where a part is missing)."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def misread_override(params_path: Path, raw: dict[str, Any], key: str, value: Any, parser) -> str | None:
    """Why DVC's ``-S`` would not set ``key`` to ``value`` in ``params_path`` (and nothing else),
    or None. Each override is spelled and read the same in every run, so :func:`plan` asks once
    per distinct override, not once per run."""
    arg = set_args(raw, {key: value}, parser)
    try:
        read = dvc_reads(params_path, arg)
    except Exception as err:  # noqa: BLE001 - DVC's InvalidArgumentError and Hydra's own
        return f"dvc exp run {' '.join(arg)}: {err}"
    if dotted_get(read, key) != value:
        return f"{key}: DVC's -S reads {dotted_get(read, key)!r}, the sweep means {value!r}"
    if read != apply_overrides(raw, {key: value}):
        return f"{key}: DVC's -S changes params.yaml beyond the override"
    return None

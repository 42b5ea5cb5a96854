"""The page template that makes ``dvc plots show`` work offline.

DVC's page (dvc-render's ``PAGE_HTML``) loads vega, vega-lite and vega-embed from a CDN, so
without a network its vega charts are empty boxes. This writes the same page with the three
libraries inlined (the bundle vl-convert-python ships: vega-lite 5, as DVC's specs are) to
``.dvc/plots_offline.html``, which ``.dvc/config`` names as ``plots.html_template``.
``tests/test_docs.py`` checks that the committed file is what this writes.

Usage: ``python -m pipelines.plots_template [--check]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots_offline.html"
VEGA_LITE = "5.21"  # DVC writes vega-lite v5 specs


def page() -> str:
    import vl_convert
    from dvc_render.html import PAGE_HTML

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    if "</script" in bundle.lower():
        raise SystemExit("the vega bundle contains '</script': it cannot be inlined")
    note = f"<!-- vega {vl_convert.get_vega_version()}, vega-lite {VEGA_LITE}, vega-embed {vl_convert.get_vega_embed_version()} (vl-convert-python {vl_convert.__version__}); written by python -m pipelines.plots_template -->"
    return PAGE_HTML.replace("{scripts}", f"{note}\n    <script>{bundle}</script>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.plots_template", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the committed template is current (exit 1 if not)")
    args = parser.parse_args(argv)
    fresh = page()
    current = TEMPLATE.read_text() if TEMPLATE.is_file() else None
    if args.check:
        print(f"{TEMPLATE.relative_to(ROOT)}: {'current' if current == fresh else 'stale (run python -m pipelines.plots_template)'}")
        return 0 if current == fresh else 1
    TEMPLATE.write_text(fresh)
    print(f"wrote {TEMPLATE.relative_to(ROOT)} ({len(fresh) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

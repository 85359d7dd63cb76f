"""MkDocs hook (``hooks:`` in ``mkdocs.yml``): serve MathJax from the site itself.

The pages typeset their math with MathJax 3 (``pymdownx.arithmatex``, generic mode, configured by
``docs/javascripts/mathjax.js``). Loading it from a CDN would leave raw ``\\(\\theta\\)`` on every
page read without a network, so the build copies MathJax from the ``django-static-mathjax``
package (PyPI, in the ``docs`` extra; plain static files, no Django needed) into
``javascripts/mathjax/``: the TeX-to-HTML bundle ``tex-chtml.js``, the TeX extensions it loads on
demand, the fonts of its output, and the parts its context menu loads (accessibility, speech).
The files are added to the build like documentation files, so ``mkdocs build`` and ``mkdocs
serve`` both serve them; the sources are not copied into ``docs/``.

Not a page (``exclude_docs``).
"""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DISTRIBUTION = "django-static-mathjax"
SOURCE = "mathjax/static/mathjax"  # inside the distribution: MathJax's npm package, es5/ its build
TARGET = "javascripts/mathjax"  # in the site; mkdocs.yml's extra_javascript loads tex-chtml.js from here
PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y", "sre")


def _mathjax() -> tuple[Path, str]:
    """MathJax's ``es5`` build directory and its version."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise PluginError(f"docs/hooks.py: MathJax is served from the site and comes from the PyPI package "
                          f"{DISTRIBUTION!r}, which is not installed: pip install -e '.[docs]'") from None
    root = Path(distribution.locate_file(SOURCE))
    try:
        version = json.loads((root / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        version = "?"
    if not version.startswith("3.") or not (root / "es5" / PARTS[0]).is_file():
        raise PluginError(f"docs/hooks.py: expected MathJax 3 (es5/{PARTS[0]}) in {root}, found version {version}")
    return root / "es5", version


def on_files(files: Files, config, **kwargs) -> Files:
    es5, _ = _mathjax()
    for part in PARTS:
        source = es5 / part
        paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        if not paths:
            raise PluginError(f"docs/hooks.py: nothing found at {source}")
        for path in paths:
            uri = f"{TARGET}/{path.relative_to(es5).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files

"""Griffe extension for the docs site: render the Sphinx markup used in gaborlayer's docstrings.

The docstrings are Google style but keep two pieces of reStructuredText, which Markdown would
print literally:

* roles such as ``:func:`fit_kernel` ``, ``:class:`torch.nn.Conv2d` `` and
  ``:func:`~gaborlayer.functional.canonicalize` ``: they become optional cross-references
  (a link when the target is documented on the site, plain code otherwise; ``~`` shows the
  last component only, as in Sphinx);
* ``.. math::`` directives: their indented body becomes a ``$$ ... $$`` block for
  ``pymdownx.arithmatex``.

It also joins an argument-name list that wraps onto a second line (``a, b, c,`` then
``d, e: description``), which Google style (griffe) cannot parse, into one entry.

Only the text mkdocstrings renders changes; the source files are not touched. Loaded by
``mkdocs.yml`` (``plugins > mkdocstrings > handlers > python > options > extensions``); not a
page (``exclude_docs``).
"""
from __future__ import annotations

import html
import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|obj|data|exc|const):`(?P<target>[^`]+)`")
_WRAPPED_NAMES = re.compile(
    r"^(?P<indent>[ \t]+)(?P<names>\w+(?:, *\w+)*,)[ \t]*\n(?P=indent)(?=\w+(?:, *\w+)*:)", re.M
)
_MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*\n|[ \t]*\n)+)", re.M)


def _identifier(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``, or ``target`` itself."""
    if target.startswith("gaborlayer."):
        return target
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # noqa: BLE001 - an unresolvable name stays as written
        resolved = None
    if resolved:
        return f"{resolved}.{rest}" if rest else resolved
    package = obj.package
    if head in package.members:  # exported at the top level, e.g. gabor_kernel2d from modules.py
        return f"{package.path}.{target}"
    for module in package.modules.values():
        if head in module.members:
            return f"{module.path}.{target}"
    return target


def _role(obj: griffe.Object, match: re.Match) -> str:
    target = match["target"].strip()
    if "<" in target and target.endswith(">"):  # :func:`title <target>`
        title, _, target = target[:-1].partition("<")
        title, target = title.strip(), target.strip()
    else:
        short = target.startswith("~")
        target = target.lstrip("~")
        title = target.rsplit(".", 1)[-1] if short else target
    target = target.removesuffix("()")
    identifier = html.escape(_identifier(obj, target), quote=True)
    return f'<autoref identifier="{identifier}" optional><code>{html.escape(title)}</code></autoref>'


def _math(match: re.Match) -> str:
    body = textwrap.dedent(match["body"]).strip("\n")
    indent = match["indent"]
    return f"{indent}$$\n{textwrap.indent(body, indent)}\n{indent}$$\n\n"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles and ``.. math::`` blocks in every docstring to Markdown."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.is_alias or not obj.docstring:
            return
        text = obj.docstring.value
        new = _MATH.sub(_math, text if text.endswith("\n") else text + "\n").rstrip("\n")
        new = _WRAPPED_NAMES.sub(lambda m: f"{m['indent']}{m['names']} ", new)
        new = _ROLE.sub(lambda m: _role(obj, m), new)
        if new != text.rstrip("\n"):
            obj.docstring.value = new

"""Griffe extension for the docs site: render the Sphinx markup used in gaborlayer's docstrings.

The docstrings are Google style but keep two pieces of reStructuredText, which Markdown would
print literally:

* roles such as ``:func:`fit_kernel` ``, ``:class:`torch.nn.Conv2d` `` and
  ``:func:`~gaborlayer.functional.canonicalize` ``: they become optional cross-references
  (a link when the target is documented on the site, plain code otherwise; ``~`` shows the
  last component only, as in Sphinx);
* ``.. math::`` directives: their indented body becomes a ``$$ ... $$`` block for
  ``pymdownx.arithmatex``.

Grouped parameters are written as one entry, ``theta, sigma, lambd, gamma, psi: description``
(possibly wrapping onto a second line, ``a, b, c,`` then ``d, e: description``). Google style
(griffe) takes that for one parameter named ``"theta, sigma, ..."``, which matches nothing in the
signature, so the API table would show no type and the default "required". In ``Args:``,
``Attributes:`` and the like, such an entry becomes one entry per name, each with the whole
description, so every name gets its own row with its type and default from the signature.

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
_NAMED_SECTION = re.compile(
    r"^(?P<indent>[ \t]*)(?:Args|Arguments|Params|Parameters|Attributes|Other Parameters|Keyword Args"
    r"|Keyword Arguments):[ \t]*$"
)
_GROUPED_ENTRY = re.compile(r"^(?P<names>\w+(?:[ \t]*,[ \t]*\w+)+)(?P<type>[ \t]*\([^)]*\))?:(?P<rest>.*)$")
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


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _split_grouped(text: str) -> str:
    """In name sections, ``a, b, c: description`` (continuation lines included) becomes the entries
    ``a: description``, ``b: description``, ``c: description``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = _NAMED_SECTION.match(lines[i])
        out.append(lines[i])
        i += 1
        if not header:
            continue
        section_indent = len(header["indent"])
        entry_indent = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= section_indent:
                break  # the section ended
            if not line.strip() or (entry_indent is not None and _indent(line) > entry_indent):
                out.append(line)
                i += 1
                continue
            entry_indent = _indent(line) if entry_indent is None else entry_indent
            grouped = _GROUPED_ENTRY.match(line.strip()) if _indent(line) == entry_indent else None
            if not grouped:
                out.append(line)
                i += 1
                continue
            body = []  # the continuation lines: blank or indented deeper than the entry
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > entry_indent):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                i -= 1  # trailing blank lines belong after the entries
                body.pop()
            names = [name.strip() for name in grouped["names"].split(",")]
            for name in names:
                out.append(f"{' ' * entry_indent}{name}{grouped['type'] or ''}:{grouped['rest']}")
                out.extend(body)
    return "\n".join(out)


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
        new = _split_grouped(new)
        new = _ROLE.sub(lambda m: _role(obj, m), new)
        if new != text.rstrip("\n"):
            obj.docstring.value = new

"""Render templates: report.html (HTML, autoescaped) and report.md (Markdown, neutralised).

Every value a template prints goes through the environment's ``finalize``: in both formats,
characters that could reorder or hide text (bidi controls such as U+202E, NUL and other control
characters, lone surrogates) become visible ``⟨U+XXXX⟩`` markers; HTML autoescaping then does
the HTML escaping, and in Markdown every character with Markdown meaning is backslash-escaped
and URLs are defanged (``http[:]//``), so prompt text can never become a live image, link, raw
HTML or autolink. Templates therefore never escape by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from probe.errors import ProbeError
from probe.report.view import neutralise

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_MD_SPECIAL = re.compile(r"[\\`*_\[\]#!|~<>&]")
_MD_ENTITY = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_URL = re.compile(r"(?i)(?<=[a-z0-9])://|\bwww\.|(?<=\w)@(?=[\w-]+\.\w)")
_MD_DEFANG = {"://": "[:]//", "www.": "www[.]", "@": "[@]"}


def markdown_text(text: str) -> str:
    """``text`` as inert Markdown: one line, every Markdown-special character escaped, URLs
    and e-mail addresses defanged so that no renderer links them."""
    text = neutralise(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    text = _MD_URL.sub(lambda m: _MD_DEFANG[m.group().lower()], text)
    return _MD_SPECIAL.sub(lambda m: _MD_ENTITY.get(m.group(), "\\" + m.group()), text)


def _finalize_html(value: Any) -> Any:
    if isinstance(value, Markup):  # a macro's or include's output: already escaped
        return value
    return "" if value is None else neutralise(str(value))


def _finalize_markdown(value: Any) -> str:
    return "" if value is None else markdown_text(str(value))


@cache
def environment(kind: str) -> Environment:
    """The Jinja environment for ``kind`` "html" (autoescape on) or "md" (Markdown)."""
    if kind not in ("html", "md"):
        raise ValueError(f"unknown template kind {kind!r}")
    html = kind == "html"
    return Environment(
        loader=PackageLoader("probe.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True) if html else False,
        finalize=_finalize_html if html else _finalize_markdown,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def stylesheet() -> Markup:
    """report.css, trusted (it ships with probe), for inlining into a <style> element."""
    css = resources.files("probe.report").joinpath("templates", "report.css").read_text("utf-8")
    return Markup(css)


def render_template(name: str, context: Mapping[str, Any]) -> str:
    """Render one of the package's templates; ``*.html.j2`` is HTML, ``*.md.j2`` Markdown.

    The HTML context always has ``css`` (the stylesheet) and ``csp`` (the page's policy).
    """
    if name.endswith(".html.j2"):
        return environment("html").get_template(name).render(css=stylesheet(), csp=CSP, **context)
    if name.endswith(".md.j2"):
        return environment("md").get_template(name).render(**context)
    raise ValueError(f"template {name!r} is neither .html.j2 nor .md.j2")


def render_report(run_dir: str | Path) -> Path:
    """(Re)write report.md, report.html and figures/ from a run directory's files alone."""
    from probe.report.figures import draw_figures
    from probe.report.reader import load_run
    from probe.report.view import build_view

    data = load_run(run_dir)
    figures = draw_figures(data, data.run_dir / "figures")
    view = build_view(data, figures)
    report = data.run_dir / "report.html"
    try:
        (data.run_dir / "report.md").write_text(
            render_template("report.md.j2", {"view": view}), encoding="utf-8"
        )
        report.write_text(render_template("report.html.j2", {"view": view}), encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"cannot write the report in {data.run_dir}: {exc.strerror}") from None
    return report

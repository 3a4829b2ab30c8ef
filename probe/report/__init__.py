"""Report stage: read a run directory back and render report.html, report.md and figures/.

``render_report(run_dir)`` re-creates the report from the run directory alone (that is what
``probe report RUN_DIR`` does); ``load_run(run_dir)`` gives the typed records it is made from.

The flow is one direction: ``reader`` (files -> typed ``records``) -> ``figures`` (PNGs and
their manifest) -> ``view`` (one display-ready view model) -> ``render`` (Jinja2 templates in
``templates/``, one per section, for HTML and Markdown). report.html is one self-contained file:
CSS from ``templates/report.css`` inlined, figures as base64 PNGs, no scripts, no fonts, no
network (a Content-Security-Policy forbids anything else).
"""

from probe.report.reader import RunData, load_run
from probe.report.render import render_report, render_template

__all__ = ["RunData", "load_run", "render_report", "render_template"]

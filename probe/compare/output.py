"""Writing a comparison directory: comparison.json, runs.csv, triggers.csv, replay files,
report.md and a self-contained report.html (Jinja2, autoescaped: prompt text is never markup).

The folder follows the run-directory rule: probe writes only into an empty folder or one it
created itself (marked by ``MARKER``), never into a foreign non-empty one.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment

from probe.compare.compare import Comparison
from probe.compare.replay import ReplayResult
from probe.errors import ProbeError

MARKER = ".probe-compare"


def prepare_out_dir(out: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Create (or reuse) the comparison folder; refuse an input folder or a foreign one."""
    folder = Path(out)
    resolved = folder.resolve()
    for source in inputs:
        if Path(source).resolve() == resolved:
            raise ProbeError(f"--out {folder} is one of the runs being compared")
    if folder.exists() and not folder.is_dir():
        raise ProbeError(f"--out {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise ProbeError(
            f"--out {folder} is a non-empty folder that probe did not create; choose another"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("probe compare output\n", encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"cannot create output folder {folder}: {exc.strerror}") from None
    return folder


def _clean(value):
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def write_comparison(
    comparison: Comparison,
    out: str | Path,
    replays: dict[tuple[int, int], ReplayResult] | None = None,
) -> Path:
    """Write every file of the comparison into ``out`` (prepared with ``prepare_out_dir``)."""
    folder = prepare_out_dir(out)
    data = _clean(comparison.to_dict())
    (folder / "comparison.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _write_csv(folder / "runs.csv", _clean(comparison.run_rows()))
    _write_csv(folder / "triggers.csv", _clean(comparison.trigger_rows()))
    for (i, j), result in (replays or {}).items():
        a, b = comparison.runs[i]["name"], comparison.runs[j]["name"]
        path = folder / f"replay-{_slug(a)}-on-{_slug(b)}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for record in result.records:
                handle.write(json.dumps(_clean(record.to_record()), ensure_ascii=False) + "\n")
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    env.filters["ci"] = _ci
    env.globals["cell_colour"] = _cell_colour
    context = {"c": data}
    (folder / "report.html").write_text(env.from_string(HTML).render(context), encoding="utf-8")
    md_env = Environment(autoescape=False, trim_blocks=True, lstrip_blocks=True)
    md_env.filters.update(env.filters)
    md_env.filters["md"] = _md_escape
    (folder / "report.md").write_text(
        md_env.from_string(MARKDOWN).render(context), encoding="utf-8"
    )
    return folder


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _ci(row: dict, pct: bool = False) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None:
        return ""
    if pct:
        return f"[{100 * low:.1f}, {100 * high:.1f}]"
    return f"[{low:+.2f}, {high:+.2f}]"


def _cell_colour(score: float, scale: float) -> str:
    """Background of a heatmap word: red toward refusal, blue toward compliance."""
    if not scale:
        return "rgba(0,0,0,0)"
    alpha = min(1.0, abs(score) / scale) * 0.8
    return f"rgba(214,39,40,{alpha:.2f})" if score > 0 else f"rgba(31,119,180,{alpha:.2f})"


def _md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


MARKDOWN = """\
# probe compare

Runs: {% for r in c.runs %}**{{ r.name | md }}** (`{{ r.model | md }}`){{ ", " if not loop.last }}\
{% endfor %}. Per-run rates over the {{ c.runs[0].n_common_prompts }} prompts common to all runs;
pairs over the prompts both runs hold. A word is a trigger when {{ c.settings.trigger_rule }}.

## Behaviour per run

| run | refusal, harmful | refusal, benign | one-word ASR | one-word over-refusal |
|---|---|---|---|---|
{% for r in c.runs %}
{% set b = r.behaviour %}
| {{ r.name | md }} | {{ b.refusal_rate_harmful.rate | pct }} {{ b.refusal_rate_harmful | \
ci(True) }} \
| {{ b.refusal_rate_benign.rate | pct }} {{ b.refusal_rate_benign | ci(True) }} \
| {% if b.asr_one_word %}{{ b.asr_one_word.rate | pct }} {{ b.asr_one_word | ci(True) }} \
(n={{ b.asr_one_word.n }}){% else %}-{% endif %} \
| {% if b.over_refusal_one_word %}{{ b.over_refusal_one_word.rate | pct }} \
{{ b.over_refusal_one_word | ci(True) }} (n={{ b.over_refusal_one_word.n }}){% else %}-{% endif %} |
{% endfor %}
{% for r in c.runs if r.replay_own_proofs %}
{% if loop.first %}

Own proofs replayed on the run's own model (reproducibility):
{% endif %}
- {{ r.name | md }}: {{ r.replay_own_proofs.still_flip.rate | pct }} of \
{{ r.replay_own_proofs.applicable }} applicable proofs still flip
{% endfor %}
{% for r in c.runs if r.data_cue_agreement %}
{% if loop.first %}

Model triggers vs data cues (overlap@{{ r.data_cue_agreement.k }}):
{% endif %}
- {{ r.name | md }}: refusal {{ r.data_cue_agreement.overlap_at_k.refusal | pct }}, compliance \
{{ r.data_cue_agreement.overlap_at_k.compliance | pct }}, rank correlation \
{{ r.data_cue_agreement.rank_correlation | num(2) }}
{% endfor %}
{% for p in c.pairs %}

## {{ p.a | md }} -> {{ p.b | md }} ({{ p.n_shared_prompts }} shared prompts)

Paired tests (McNemar, exact):

| outcome | n | {{ p.a | md }} | {{ p.b | md }} | only A | only B | p |
|---|---|---|---|---|---|---|
{% for name, t in p.behaviour_tests.items() %}
| {{ name }} | {{ t.n }} | {{ t.rate_a | pct }} | {{ t.rate_b | pct }} | {{ t.only_a }} | {{ \
t.only_b }} \
| {{ "%.3g" | format(t.p_value) }} |
{% endfor %}

Triggers (effect = mean attribution on the shared prompts containing the word; difference = B - A):

| word | n | effect A | effect B | difference B - A | status |
|---|---|---|---|---|---|
{% for t in p.triggers %}
| {{ t.word | md }}{{ " (content)" if t.role == "content" }} | {{ t.difference.n }} \
| {{ t.a.effect | num }} {{ t.a | ci }}{{ " **T**" if t.a.trigger }} \
| {{ t.b.effect | num }} {{ t.b | ci }}{{ " **T**" if t.b.trigger }} \
| {{ t.difference.mean | num }} {{ t.difference | ci }}{{ " *" if t.difference.excludes_zero }} \
| {{ t.status }} |
{% endfor %}

**T** = trigger in that run; * = paired interval excludes 0.
{% if p.lexicon_agreement %}

Lexicon agreement: overlap@{{ p.lexicon_agreement.k }} refusal \
{{ p.lexicon_agreement.overlap_at_k.refusal | pct }} ({{ p.lexicon_agreement.shared.refusal | \
join(", ") }}), \
compliance {{ p.lexicon_agreement.overlap_at_k.compliance | pct }} \
({{ p.lexicon_agreement.shared.compliance | join(", ") }}); rank correlation \
{{ p.lexicon_agreement.rank_correlation | num(2) }} over {{ p.lexicon_agreement.n_common_words \
}} words.
{% endif %}
{% if p.replay %}

Edit replay: {{ p.replay.proofs }} verified flips of {{ p.a | md }} replayed on {{ p.b | md \
}}'s model; \
{{ p.replay.applicable }} applicable (B judged the original as A did); **{{ \
p.replay.still_flip.rate | pct }} \
still flip** {{ p.replay.still_flip | ci(True) }} (ASR edits {{ \
p.replay.by_target.compliance.rate | pct }}, \
over-refusal edits {{ p.replay.by_target.refusal.rate | pct }}).
{% else %}

Edit replay: not run (pass --models to re-run {{ p.a | md }}'s edits on {{ p.b | md }}'s model).
{% endif %}
{% if p.heatmaps %}

Prompts whose decision changed the most:

| prompt | {{ p.a | md }} margin | {{ p.b | md }} margin | verdict changed |
|---|---|---|---|
{% for h in p.heatmaps %}
| {{ h.prompt | md }} | {{ h.runs[0].margin | num(2) }} | {{ h.runs[1].margin | num(2) }} \
| {{ "yes" if h.verdict_changed else "no" }} |
{% endfor %}
{% endif %}
{% endfor %}
{% if c.notes %}

Notes:
{% for n in c.notes %}
- {{ n | md }}
{% endfor %}
{% endif %}
"""

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>probe compare</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 7px;
font-size:14px}th{background:#f3f3f3}.yes{font-weight:bold}.ci{color:#666;font-size:12px}
.heat{display:flex;gap:1.5em;margin:.4em 0 1em}.heat div{flex:1}.w{padding:1px 3px;
border-radius:3px;margin:1px}.status-stopped{color:#1a7f37}.status-became{color:#b42318}
</style></head><body>
<h1>probe compare</h1>
<p>Runs: {% for r in c.runs %}<b>{{ r.name }}</b> (<code>{{ r.model }}</code>)\
{{ ", " if not loop.last }}{% endfor %}. Per-run rates over the
{{ c.runs[0].n_common_prompts }} prompts common to all runs. A word is a trigger when
{{ c.settings.trigger_rule }}.</p>
<h2>Behaviour per run</h2>
<table><tr><th>run</th><th>refusal, harmful</th><th>refusal, benign</th><th>one-word ASR</th>
<th>one-word over-refusal</th></tr>
{% for r in c.runs %}
<tr><td>{{ r.name }}</td>
{% for key in ["refusal_rate_harmful", "refusal_rate_benign", "asr_one_word", \
"over_refusal_one_word"] %}
{% set v = r.behaviour.get(key) %}
<td>{% if v %}{{ v.rate | pct }} <span class="ci">{{ v | ci(True) }} n={{ v.n }}</span>\
{% else %}-{% endif %}</td>
{% endfor %}</tr>
{% endfor %}
</table>
{% for r in c.runs if r.replay_own_proofs %}
{% if loop.first %}<p>Own proofs replayed on the run's own model (reproducibility):</p>\
<ul>{% endif %}
<li>{{ r.name }}: {{ r.replay_own_proofs.still_flip.rate | pct }} of
{{ r.replay_own_proofs.applicable }} applicable proofs still flip</li>
{% if loop.last %}</ul>{% endif %}
{% endfor %}
{% for p in c.pairs %}
<h2>{{ p.a }} &rarr; {{ p.b }} <small>({{ p.n_shared_prompts }} shared prompts)</small></h2>
<h3>Paired tests (McNemar, exact)</h3>
<table><tr><th>outcome</th><th>n</th><th>{{ p.a }}</th><th>{{ p.b }}</th><th>only A</th>
<th>only B</th><th>p</th></tr>
{% for name, t in p.behaviour_tests.items() %}
<tr><td>{{ name }}</td><td>{{ t.n }}</td><td>{{ t.rate_a | pct }}</td><td>{{ t.rate_b | pct }}</td>
<td>{{ t.only_a }}</td><td>{{ t.only_b }}</td><td>{{ "%.3g" | format(t.p_value) }}</td></tr>
{% endfor %}
</table>
<h3>Triggers</h3>
<table><tr><th>word</th><th>n</th><th>effect {{ p.a }}</th><th>effect {{ p.b }}</th>
<th>difference B &minus; A</th><th>status</th></tr>
{% for t in p.triggers %}
<tr><td>{{ t.word }}{{ " (content)" if t.role == "content" }}</td><td>{{ t.difference.n }}</td>
<td class="{{ 'yes' if t.a.trigger }}">{{ t.a.effect | num }} <span class="ci">{{ t.a | ci \
}}</span></td>
<td class="{{ 'yes' if t.b.trigger }}">{{ t.b.effect | num }} <span class="ci">{{ t.b | ci \
}}</span></td>
<td class="{{ 'yes' if t.difference.excludes_zero }}">{{ t.difference.mean | num }}
<span class="ci">{{ t.difference | ci }}</span></td>
<td class="status-{{ t.status.split()[0] }}">{{ t.status }}</td></tr>
{% endfor %}
</table>
<p class="ci">Bold effect: a trigger in that run; bold difference: the paired interval excludes \
0.</p>
{% if p.lexicon_agreement %}
{% set la = p.lexicon_agreement %}
<p>Lexicon agreement: overlap@{{ la.k }} refusal {{ la.overlap_at_k.refusal | pct }}
({{ la.shared.refusal | join(", ") }}), compliance {{ la.overlap_at_k.compliance | pct }}
({{ la.shared.compliance | join(", ") }}); rank correlation {{ la.rank_correlation | num(2) }}
over {{ la.n_common_words }} words.</p>
{% endif %}
<h3>Edit replay</h3>
{% if p.replay %}
{% set rp = p.replay %}
<p>{{ rp.proofs }} verified flips of {{ p.a }} replayed on <code>{{ rp.model }}</code>;
{{ rp.applicable }} applicable (B judged the original as A did);
<b>{{ rp.still_flip.rate | pct }} still flip</b> <span class="ci">{{ rp.still_flip | ci(True) \
}}</span>
(ASR edits {{ rp.by_target.compliance.rate | pct }}, over-refusal edits
{{ rp.by_target.refusal.rate | pct }}).</p>
<table><tr><th>new word</th><th>applicable proofs</th><th>still flip</th></tr>
{% for w, v in rp.by_new_word.items() %}
{% if loop.index <= 12 %}<tr><td>{{ w }}</td><td>{{ v.n }}</td><td>{{ v.rate | pct \
}}</td></tr>{% endif %}
{% endfor %}
</table>
{% else %}
<p>Not run (pass <code>--models</code> to re-run {{ p.a }}'s edits on {{ p.b }}'s model).</p>
{% endif %}
{% if p.heatmaps %}
<h3>Prompts whose decision changed the most</h3>
{% for h in p.heatmaps %}
<p><code>{{ h.id }}</code> ({{ h.label or "unlabelled" }}): {{ h.prompt }}</p>
<div class="heat">
{% for r in h.runs %}
<div><b>{{ r.name }}</b> margin {{ r.margin | num(2) }},
{{ "refused" if r.refused else ("answered" if r.refused is not none else "no verdict") }}<br>
{% for w in r.words %}<span class="w" style="background:{{ cell_colour(r.scores[loop.index0], \
h.scale) }}"
title="{{ '%+.3f' | format(r.scores[loop.index0]) }}">{{ w }}</span>{% endfor %}
</div>
{% endfor %}
</div>
{% endfor %}
<p class="ci">Red: pushes toward refusal; blue: toward compliance (one colour scale per prompt).</p>
{% endif %}
{% endfor %}
{% if c.notes %}<h2>Notes</h2><ul>{% for n in c.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""

"""The status page at `GET /`: what an operator wants to see at a glance, as plain server-rendered HTML.

Pure: it renders the same report `/status` serves (built from the state database and redacted
settings, so it holds no secret), the recent history and the outbox; every value is escaped. No
JavaScript: a meta refresh keeps it current, and it reads the same in a text browser.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitsync.model import HistoryRow
from gitsync.outbox import Entry

REFRESH_SECONDS = 15
_GOOD = {"synced", "noop", "partial"}


@dataclass(frozen=True)
class PageInputs:
    report: Mapping[str, Any]  # status_report(), as /status serves it
    history: Sequence[HistoryRow]
    pending: Sequence[Entry]  # the outbox
    next_sync: float | None  # epoch seconds of the next scheduled sync, if known
    now: float


def render(data: PageInputs) -> str:
    r = data.report
    if "targets" in r:
        return _render_targets(data)
    state_word, state_class = _overall(r)
    sections = [
        _header(r, state_word, state_class),
        _commits(r, data.now),
        _schedule(r, data.next_sync, data.now),
        _problems(r),
        _pending(data.pending, data.now),
        _conflicts(r),
        _pull_requests(r),
        _history(data.history, data.now),
    ]
    return _PAGE.format(refresh=REFRESH_SECONDS, title=_e(f"gitsync: {state_word}"), css=_CSS,
                        body="\n".join(sections))


def _render_targets(data: PageInputs) -> str:
    """Several targets: a summary row each (applied commit, result, failures), then each one's commits and
    problems; the schedule, push-backs and history are the process's."""
    r = data.report
    failing = list(r.get("failing_targets") or [])
    if r.get("role") == "standby":
        word, klass = "standby: another replica holds the HA lease", "warn"
    elif failing:
        word, klass = f"{len(failing)} of {len(r['targets'])} target(s) failing: {', '.join(failing)}", "bad"
    else:
        word, klass = ("in sync", "ok") if all(t.get("applied_commit") for t in r["targets"].values()) \
            else ("starting", "warn")
    rows = []
    for name, t in r["targets"].items():
        good = t.get("last_result") in _GOOD and not t.get("consecutive_failures")
        rows.append(f"<tr id='target-{_e(name)}' class='{'ok' if good else 'bad'}'><td>{_e(name)}</td>"
                    f"<td>{_e(t.get('target_kind'))}</td><td>{_e(t.get('target'))}</td>"
                    f"<td><code>{_e((t.get('applied_commit') or 'none yet')[:12])}</code></td>"
                    f"<td>{_e(t.get('last_result') or 'never')}</td><td>{_e(t.get('consecutive_failures') or 0)}</td>"
                    f"<td>{_e(t.get('last_message', ''))}</td></tr>")
    summary = ("<section id='targets'><h2>Targets</h2><table><tr><th>target</th><th>kind</th><th>where</th>"
               "<th>applied</th><th>last sync</th><th>failures in a row</th><th>message</th></tr>"
               f"{''.join(rows)}</table></section>")
    where = f"{r.get('repository')} · branch {r.get('branch')} · path {r.get('path') or '/'}"
    sections = [f"<header><h1>gitsync</h1><p>{_e(where)}</p><p id='state' class='state {klass}'>{_e(word)}</p>"
                "</header>", summary]
    for name, t in r["targets"].items():
        sections.append(f"<section id='target-{_e(name)}-detail'><h2>Target {_e(name)}</h2>"
                        f"{_commits(t, data.now)}{_problems(t)}</section>")
    sections += [_schedule(r, data.next_sync, data.now), _pending(data.pending, data.now),
                 _history(data.history, data.now)]
    return _PAGE.format(refresh=REFRESH_SECONDS, title=_e(f"gitsync: {word}"), css=_CSS, body="\n".join(sections))


def _overall(r: Mapping[str, Any]) -> tuple[str, str]:
    if not r.get("applied_commit"):
        return ("no commit applied yet", "bad") if r.get("last_result") else ("starting", "warn")
    if r.get("last_result") in _GOOD and not r.get("consecutive_failures"):
        if r.get("outbox_blocked") or r.get("push_last_error"):
            return "in sync, push-back needs attention", "warn"
        return "in sync", "ok"
    return f"last sync {r.get('last_result')}: the last good commit stays", "bad"


def _header(r: Mapping[str, Any], word: str, klass: str) -> str:
    where = f"{r.get('repository')} · branch {r.get('branch')} · path {r.get('path') or '/'}"
    message = f"<p class='message'>{_e(r['last_message'])}</p>" if r.get("last_message") else ""
    return (f"<header><h1>gitsync</h1><p>{_e(where)} → {_e(r.get('target'))}</p>"
            f"<p id='state' class='state {klass}'>{_e(word)}</p>{message}</header>")


def _commit_rows(label: str, sha: str | None, info: Mapping[str, Any] | None, fallback: str, now: float,
                 row_id: str) -> str:
    if not sha:
        return f"<tr id='{row_id}'><th>{label}</th><td colspan='4'>none yet</td></tr>"
    info = info or {}
    when = _ago(info.get("time"), now) if info.get("time") else ""
    subject = info.get("subject") or fallback
    return (f"<tr id='{row_id}'><th>{label}</th><td><code>{_e(sha[:12])}</code></td><td>{_e(subject)}</td>"
            f"<td>{_e(info.get('author', ''))}</td><td>{_e(when)}</td></tr>")


def _commits(r: Mapping[str, Any], now: float) -> str:
    applied, head = r.get("applied_commit"), r.get("head_commit")
    rows = [_commit_rows("applied", applied, r.get("applied_commit_info"), r.get("applied_summary", ""), now,
                         "applied")]
    if head and head != applied:
        rows.append(_commit_rows("branch head (not applied)", head, r.get("head_commit_info"), "", now, "head"))
    else:
        rows.append(f"<tr id='head'><th>branch head</th><td colspan='4'>"
                    f"{'the applied commit' if head else 'not fetched yet'}</td></tr>")
    applied_at = f"<p>applied {_e(_ago(r.get('applied_at'), now))}; {r.get('definitions', 0)} definition(s) in " \
                 f"{r.get('owned_files', 0)} file(s)</p>"
    return (f"<section><h2>Commits</h2><table><tr><th></th><th>commit</th><th>message</th><th>author</th>"
            f"<th>time</th></tr>{''.join(rows)}</table>{applied_at}</section>")


def _schedule(r: Mapping[str, Any], next_sync: float | None, now: float) -> str:
    last = f"{r.get('last_result') or 'none'} {_ago(r.get('last_attempt_at'), now)}"
    upcoming = _in(next_sync, now) if next_sync else "on the next trigger (webhook, signal or local change)"
    failures = r.get("consecutive_failures") or 0
    extra = f"<li>{failures} failed sync(s) in a row</li>" if failures else ""
    return (f"<section><h2>Schedule</h2><ul><li>last sync: {_e(last)}</li>"
            f"<li id='next-sync'>next scheduled sync: {_e(upcoming)}</li>{extra}</ul></section>")


def _problems(r: Mapping[str, Any]) -> str:
    problems = list(r.get("problems") or [])
    findings = list(r.get("findings") or [])
    local = list(r.get("unreadable_local_files") or [])
    if not (problems or findings or local):
        return "<section id='problems'><h2>Problems</h2><p>none</p></section>"
    rows = [f"<tr class='{_e(p.get('severity'))}'><td><code>{_e(p.get('path'))}:{_e(p.get('line'))}</code></td>"
            f"<td>{_e(p.get('severity'))}</td><td>{_e(p.get('message'))}</td><td>{_e(p.get('fix', ''))}</td></tr>"
            for p in problems]
    rows += [f"<tr><td></td><td>{_e(f.get('kind'))}</td><td colspan='2'>{_e(f.get('detail'))}</td></tr>"
             for f in findings]
    rows += [f"<tr><td><code>{_e(name)}</code></td><td>unreadable</td><td colspan='2'>a local file that does not "
             "parse; not pushed until it does</td></tr>" for name in local]
    return (f"<section id='problems'><h2>Problems</h2><table><tr><th>where</th><th>kind</th><th>what</th>"
            f"<th>fix</th></tr>{''.join(rows)}</table></section>")


def _pending(entries: Sequence[Entry], now: float) -> str:
    if not entries:
        return "<section id='pending'><h2>Pending push-backs</h2><p>none</p></section>"
    rows = [f"<tr><td><code>{_e(e.target)}</code></td><td>{_e(e.status)}</td><td>{_e(e.origin)}</td>"
            f"<td>{_e(_ago(e.created, now))}</td><td>{_e(e.error)}</td></tr>" for e in entries]
    return (f"<section id='pending'><h2>Pending push-backs</h2><table><tr><th>file</th><th>state</th>"
            f"<th>from</th><th>since</th><th>last error</th></tr>{''.join(rows)}</table></section>")


def _conflicts(r: Mapping[str, Any]) -> str:
    conflicts = list(r.get("conflicts") or [])
    if not conflicts:
        return "<section id='conflicts'><h2>Conflict branches</h2><p>none</p></section>"
    items = [f"<li><code>{_e(c.get('branch'))}</code>: {_e(', '.join(c.get('jobs', [])))}</li>" for c in conflicts]
    return f"<section id='conflicts'><h2>Conflict branches</h2><ul>{''.join(items)}</ul></section>"


def _pull_requests(r: Mapping[str, Any]) -> str:
    url = r.get("open_pull_request")
    body = f"<ul><li><a href='{_e(url)}'>{_e(url)}</a></li></ul>" if url else "<p>none</p>"
    return f"<section id='pull-requests'><h2>Open pull requests</h2>{body}</section>"


def _history(rows: Sequence[HistoryRow], now: float) -> str:
    if not rows:
        return "<section id='history'><h2>Recent syncs</h2><p>none yet</p></section>"
    body = [f"<tr class='{'ok' if h.result in _GOOD else 'bad'}'><td>{_e(_ago(h.started, now))}</td>"
            f"<td>{_e(h.result)}{_repeats(h, now)}</td>"
            f"<td><code>{_e((h.from_commit or '')[:12])}..{_e((h.to_commit or '')[:12])}"
            f"</code></td><td>{h.written} written, {h.removed} removed</td><td>{h.duration:.2f} s</td>"
            f"<td>{_e(h.message)}</td></tr>" for h in rows]
    return (f"<section id='history'><h2>Recent syncs</h2><table><tr><th>when</th><th>result</th><th>commits</th>"
            f"<th>files</th><th>took</th><th>message</th></tr>{''.join(body)}</table></section>")


def _repeats(h: HistoryRow, now: float) -> str:
    """A verdict later cycles reached again (a commit refused every cycle) is one row with its count."""
    if h.repeats <= 1:
        return ""
    return f" <small>(seen {h.repeats} times, last {_e(_ago(h.last_seen, now))})</small>"


def _ago(ts: Any, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0, int(now - float(ts)))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
    return f"{stamp} ({_span(seconds)} ago)"


def _in(ts: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return f"{stamp} (in {_span(max(0, int(ts - now)))})"


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
.state{font-size:1.3em;font-weight:bold;padding:.3em .6em;display:inline-block}
.ok{color:#175c17}.state.ok{background:#e3f5e3}.warn,.warning{color:#7a5a00}.state.warn{background:#fff4d6}
.bad,.error{color:#9b1c1c}.state.bad{background:#fde2e2}code{font-size:.95em}"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
{body}
<footer><p>JSON: <a href="/status">/status</a> · <a href="/metrics">/metrics</a> ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p></footer>
</body></html>
"""


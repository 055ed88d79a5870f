"""The status an operator sees, as one dict: printed by `gitsync status`, served at /status.

Built only from the state database and redacted settings, so it can never contain a secret.
"""

from __future__ import annotations

import time
from typing import Any

from gitsync.config import Settings
from gitsync.secrets import redact_url
from gitsync.state import State


def status_report(settings: Settings, state: State) -> dict[str, Any]:
    manifest = state.manifest()
    report: dict[str, Any] = {
        "name": settings.target_name,
        "target_kind": settings.target_kind,
        "repository": redact_url(settings.repo_url),
        "branch": settings.repo_branch,
        "pinned_ref": settings.repo_ref or None,
        "path": settings.repo_path,
        "target": settings.target_directory,
        "applied_commit": state.get("applied_commit"),
        "applied_summary": state.get("applied_summary", ""),
        "applied_at": state.get("applied_at"),
        "head_commit": state.get("head_commit"),
        "applied_commit_info": state.get("applied_commit_info"),
        "head_commit_info": state.get("head_commit_info") if state.get("head_commit") != state.get("applied_commit")
        else state.get("applied_commit_info"),
        "last_attempt_at": state.get("last_attempt_at"),
        "last_success_at": state.get("last_success_at"),
        "last_result": state.get("last_result"),
        "last_message": state.get("last_message", ""),
        "consecutive_failures": state.get("consecutive_failures", 0),
        "failing_steps": state.get("failing_steps", {}),
        "interrupted_apply": state.get("apply_in_progress"),
        "owned_files": sum(1 for t in manifest if "/" not in t),  # definition files
        "companion_files": sum(1 for t in manifest if "/" in t),  # files in ${job} companion folders
        "definitions": sum(len(o.names) for o in manifest.values()),
        "problems": state.current_problems(),
        "findings": state.get("findings", []),
        "recovered": state.get("recovered"),
    }
    if settings.target_kind == "jobs-api":
        report.update(api_status(settings, state))
    report.update(extra_status(state))
    return report


def api_status(settings: Settings, state: State) -> dict[str, Any]:
    """A jobs-api target: its URL (redacted) and the definitions gitsync saved there, instead of files."""
    from gitsync.api_store import ApiRecord

    return {"target": redact_url(settings.target_url), "target_kind": "jobs-api", "owned_files": 0,
            "definitions": ApiRecord(state, settings.target_name).count()}


#: How bad a target's last result is, for the worst of several.
_RANK = {None: 0, "noop": 0, "synced": 1, "partial": 2, "invalid": 3, "refused": 4, "error": 5}


def targets_report(settings: Settings, targets: list[tuple[Settings, State]]) -> dict[str, Any]:
    """Several targets: what they share (the repository), the worst of their results, and each one's own
    report under "targets" (name -> the report a single target gives)."""
    per = {t.target_name: status_report(t, state) for t, state in targets}
    worst = max(per.values(), key=lambda r: _RANK.get(r["last_result"], 5))
    failing = sorted(name for name, r in per.items() if r["last_result"] not in ("synced", "noop", None)
                     or r["consecutive_failures"])
    return {
        "repository": redact_url(settings.repo_url), "branch": settings.repo_branch,
        "pinned_ref": settings.repo_ref or None, "path": settings.repo_path,
        "last_result": worst["last_result"], "failing_targets": failing,
        "consecutive_failures": max(r["consecutive_failures"] for r in per.values()),
        "targets": per,
    }


def extra_status(state: State) -> dict[str, Any]:
    """The push-back side: what is still on its way to git, and what went to conflict branches."""
    from gitsync.outbox import Outbox

    found: dict[str, Any] = dict(Outbox(state).summary())
    found["push_last_error"] = state.get("push_last_error", "")
    pr = Outbox(state).pull_request()
    found["open_pull_request"] = (pr.url or pr.branch) if pr else None
    found["conflicts"] = [c for c in state.get("conflicts", []) if not c.get("acknowledged")][-10:]
    found["unreadable_local_files"] = sorted(state.get("unreadable_local", {}))
    found["maintenance"] = state.get("maintenance") or {}
    return found


def render_text(report: dict[str, Any]) -> str:
    """`gitsync status` as text: one block, or with several targets the repository and then a block each."""
    if "targets" not in report:
        return _render_one(report)
    lines = [f"repository   {report['repository']} (branch {report['branch']}, path {report['path'] or '/'})"]
    if report.get("role") == "standby":
        lines.append("role         standby: another replica holds the HA lease")
    if report["failing_targets"]:
        lines.append(f"failing      {len(report['failing_targets'])} of {len(report['targets'])} target(s): "
                     + ", ".join(report["failing_targets"]))
    for name, one in report["targets"].items():
        lines.append("")
        lines.append(f"[target {name}] ({one.get('target_kind', 'directory')})")
        lines += ["  " + line for line in _render_one(one).splitlines() if not line.startswith("repository")]
    return "\n".join(lines)


def _render_one(report: dict[str, Any]) -> str:
    def when(ts: float | None) -> str:
        if not ts:
            return "never"
        ago = int(time.time() - ts)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        return f"{stamp} ({ago // 60} min {ago % 60} s ago)"

    applied = report["applied_commit"]
    lines = [
        f"repository   {report['repository']} (branch {report['branch']}, path {report['path'] or '/'})",
        *([f"pinned       to {report['pinned_ref']} (repo.ref); local changes wait in the outbox"]
          if report.get("pinned_ref") else []),
        f"target       {report['target']}",
        f"applied      {applied[:12] + ' ' + report['applied_summary'] if applied else 'nothing yet'}",
        f"applied at   {when(report['applied_at'])}",
        f"last sync    {report['last_result'] or 'never'} at {when(report['last_attempt_at'])}",
        f"definitions  {report['definitions']} saved by gitsync" if report.get("target_kind") == "jobs-api" else
        f"definitions  {report['definitions']} in {report['owned_files']} file(s) owned by gitsync"
        + (f", and {report['companion_files']} companion file(s)" if report.get("companion_files") else ""),
    ]
    if report["last_message"]:
        lines.append(f"message      {report['last_message']}")
    if report["consecutive_failures"]:
        lines.append(f"failures     {report['consecutive_failures']} in a row")
    for step, message in report["failing_steps"].items():
        lines.append(f"failing      {step}: {message}")
    if report["interrupted_apply"]:
        lines.append(f"interrupted  an apply of {report['interrupted_apply'][:12]} did not finish; "
                     "the next sync completes it")
    if report.get("recovered"):
        r = report["recovered"]
        lines.append(f"recovered    the state database was rebuilt at {when(r['at'])}: {r['adopted']} file(s) "
                     f"adopted as equal to git (last applied commit {str(r['commit'])[:12]}), {r['drift']} "
                     "differing from git reported as drift")
    lines.append(f"outbox       {report['outbox_length']} change(s) waiting to reach git"
                 + (f", oldest {report['outbox_oldest_age_s']:.0f} s" if report["outbox_length"] else ""))
    for blocked in report["outbox_blocked"]:
        lines.append(f"blocked      {blocked}")
    if report["push_last_error"]:
        lines.append(f"push error   {report['push_last_error']}")
    if report["open_pull_request"]:
        lines.append(f"pull request {report['open_pull_request']}")
    for name in report["unreadable_local_files"]:
        lines.append(f"unreadable   {name} in the target does not parse; not pushed until it does")
    for conflict in report["conflicts"]:
        lines.append(f"conflict     {', '.join(conflict['jobs'])}: local version on branch {conflict['branch']}")
    for problem in report["problems"]:
        lines.append(f"{problem['severity']:<12} {problem['path']}:{problem['line']}: {problem['message']}")
    for finding in report["findings"]:
        lines.append(f"{finding['kind']:<12} {finding['detail']}")
    return "\n".join(lines)

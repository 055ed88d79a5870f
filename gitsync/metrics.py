"""Prometheus metrics. Labels are fixed, small sets (never a URL, path or commit message).

Every metric about one target carries a `target` label: its name ("default" for the single `[target]`
table, else the `[[target]]` name). Webhooks and the HA lease belong to the process and have none."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.syncs = Counter("gitsync_syncs", "Syncs by result (synced, partial, noop, invalid, refused, error)",
                             ["result", "target"], registry=self.registry)
        self.duration = Histogram("gitsync_sync_duration_seconds", "Time one sync took", ["target"],
                                  registry=self.registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.last_success = Gauge("gitsync_last_success_timestamp_seconds", "When the last sync succeeded",
                                  ["target"], registry=self.registry)
        self.failures = Gauge("gitsync_consecutive_failures", "Failed syncs in a row", ["target"],
                              registry=self.registry)
        self.owned = Gauge("gitsync_owned_files", "Definition files gitsync owns in the target (jobs-api: "
                           "definitions it saved)",
                           ["target"], registry=self.registry)
        self.problems = Gauge("gitsync_problems", "Outstanding validation problems", ["severity", "target"],
                              registry=self.registry)
        self.outbox = Gauge("gitsync_outbox_length", "Local changes waiting to reach git", ["target"],
                             registry=self.registry)
        self.step_failures = Counter("gitsync_step_failures", "Cycle steps that failed, by step (recover, capture, "
                                     "flush, pull, record)", ["step", "target"], registry=self.registry)
        self.step_failing = Gauge("gitsync_step_failing", "1 while the step failed in the latest cycle",
                                  ["step", "target"], registry=self.registry)
        self.pushes = Counter("gitsync_pushes", "Push-back attempts by result", ["result", "target"],
                              registry=self.registry)
        self.outbox_entries = Gauge("gitsync_outbox_entries",
                                    "Outbox entries by state (queued, in_pr, blocked; pending: old name of queued)",
                                    ["state", "target"], registry=self.registry)
        self.outbox_oldest = Gauge("gitsync_outbox_oldest_age_seconds", "Age of the oldest outbox entry (0 = empty)",
                                   ["target"], registry=self.registry)
        self.conflicts = Counter("gitsync_conflicts", "Local changes sent to a conflict branch",
                                 ["target"], registry=self.registry)
        self.conflict_branches = Gauge("gitsync_conflict_branches", "Conflict branches listed in status",
                                       ["target"], registry=self.registry)
        self.webhooks = Counter("gitsync_webhooks", "Webhook deliveries by result (sync, ping, ignored, "
                                "unauthorized, too_large, bad_payload, error)", ["result"], registry=self.registry)
        self.commit = Info("gitsync_commit", "The applied commit and the branch head", ["target"],
                           registry=self.registry)
        self.ha_leader: Gauge | None = None

    def add_target(self, name: str) -> None:
        """Export a target's series from the start (before its first cycle), so a dashboard sees every target."""
        self.commit.labels(name).info({"applied": "", "head": ""})
        self.failures.labels(name)
        self.owned.labels(name)

    def add_ha(self) -> Gauge:
        """Declared only with ha.redis_url, so a single replica exports no gauge that never moves (once: a
        replica's agent shares the replica's metrics)."""
        if self.ha_leader is None:
            self.ha_leader = Gauge("gitsync_ha_leader", "1 while this replica holds the HA lease",
                                   registry=self.registry)
        return self.ha_leader

"""Prometheus metrics. Labels are fixed, small sets (never a URL, path or commit message)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.syncs = Counter("gitsync_syncs", "Syncs by result (synced, partial, noop, invalid, refused, error)",
                             ["result"], registry=self.registry)
        self.duration = Histogram("gitsync_sync_duration_seconds", "Time one sync took", registry=self.registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.last_success = Gauge("gitsync_last_success_timestamp_seconds", "When the last sync succeeded",
                                  registry=self.registry)
        self.failures = Gauge("gitsync_consecutive_failures", "Failed syncs in a row", registry=self.registry)
        self.owned = Gauge("gitsync_owned_files", "Definition files gitsync owns in the target (jobs-api: "
                           "definitions it saved)",
                           registry=self.registry)
        self.problems = Gauge("gitsync_problems", "Outstanding validation problems", ["severity"],
                              registry=self.registry)
        self.outbox = Gauge("gitsync_outbox_length", "Local changes waiting to reach git", registry=self.registry)
        self.step_failures = Counter("gitsync_step_failures", "Cycle steps that failed, by step (recover, capture, "
                                     "flush, pull, record)", ["step"], registry=self.registry)
        self.step_failing = Gauge("gitsync_step_failing", "1 while the step failed in the latest cycle", ["step"],
                                  registry=self.registry)
        self.pushes = Counter("gitsync_pushes", "Push-back attempts by result", ["result"], registry=self.registry)
        self.outbox_entries = Gauge("gitsync_outbox_entries", "Outbox entries by state (pending, in_pr, blocked)",
                                    ["state"], registry=self.registry)
        self.outbox_oldest = Gauge("gitsync_outbox_oldest_age_seconds", "Age of the oldest outbox entry (0 = empty)",
                                   registry=self.registry)
        self.conflicts = Counter("gitsync_conflicts", "Local changes sent to a conflict branch",
                                 registry=self.registry)
        self.conflict_branches = Gauge("gitsync_conflict_branches", "Conflict branches listed in status",
                                       registry=self.registry)
        self.webhooks = Counter("gitsync_webhooks", "Webhook deliveries by result (sync, ping, ignored, "
                                "unauthorized, too_large, bad_payload, error)", ["result"], registry=self.registry)
        self.commit = Info("gitsync_commit", "The applied commit and the branch head", registry=self.registry)
        self.commit.info({"applied": "", "head": ""})

    def add_ha(self) -> Gauge:
        """Declared only with ha.redis_url, so a single replica exports no gauge that never moves."""
        self.ha_leader = Gauge("gitsync_ha_leader", "1 while this replica holds the HA lease",
                               registry=self.registry)
        return self.ha_leader

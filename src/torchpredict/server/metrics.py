"""Prometheus metrics of a server: requests, rows, batches, queue and inference time, errors, drift and text.

One Metrics per app, on a registry of its own (two apps in one process do not share counters). A batcher reports
to a ModelObserver, the BatchObserver of one served model. With several workers (PROMETHEUS_MULTIPROC_DIR set,
as `torchpredict serve --workers N` does), each worker writes its values to that folder and GET /metrics sums
every worker's.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "ModelObserver"]

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DRIFT_KINDS = ("out_of_range", "unseen_categories", "unexpected_nulls")


class Metrics:
    """The server's metrics; `exposition()` is the body and content type of GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("torchpredict_requests", "HTTP requests answered, by endpoint, model and status",
                                ["endpoint", "model", "status"], registry=r)
        self.request_seconds = Histogram("torchpredict_request_duration_seconds", "Time to answer a request, by "
                                         "endpoint", ["endpoint"], buckets=SECONDS, registry=r)
        self.in_flight = Gauge("torchpredict_requests_in_flight", "Requests being answered now", registry=r,
                               multiprocess_mode="livesum")
        self.errors = Counter("torchpredict_errors", "Requests that failed, by model and error type",
                              ["model", "type"], registry=r)
        self.rows = Counter("torchpredict_rows", "Rows served, by model and outcome (predicted, rejected)",
                            ["model", "version", "outcome"], registry=r)
        self.batch_rows = Histogram("torchpredict_batch_rows", "Rows per model batch", ["model", "version"],
                                    buckets=ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram("torchpredict_batch_requests", "Requests per model batch (batched together)",
                                        ["model", "version"], buckets=REQUEST_BUCKETS, registry=r)
        self.queue_seconds = Histogram("torchpredict_queue_seconds", "Time a batch's requests waited in the queue",
                                       ["model", "version"], buckets=SECONDS, registry=r)
        self.inference_seconds = Histogram("torchpredict_inference_seconds", "Time to predict one batch (validate, "
                                           "preprocess, infer, interpret)", ["model", "version"], buckets=SECONDS,
                                           registry=r)
        self.drift = Counter("torchpredict_drift_rows", "Served rows that drifted from training, by column and kind "
                             "(out_of_range, unseen_categories, unexpected_nulls)", ["model", "version", "column",
                                                                                      "kind"], registry=r)
        self.text = Counter("torchpredict_text", "What encoding served text lost, by column: texts truncated to "
                            "max_length (kind truncated), unknown tokens (kind unknown_tokens)",
                            ["model", "version", "column", "kind"], registry=r)
        self.queue_rows = Gauge("torchpredict_queue_rows", "Rows waiting for the model now (not those it runs)",
                                ["model", "version"], registry=r, multiprocess_mode="livesum")
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.models = Gauge("torchpredict_model_info", "Served models (1 per name and version)", ["model", "version"],
                            registry=r, multiprocess_mode="max")

    def observer(self, model: str, version: str) -> ModelObserver:
        """The BatchObserver a model's batcher reports to."""
        self.models.labels(model, version).set(1)
        return ModelObserver(self, model, version)

    def request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        key = (endpoint, model, status)
        children = self._children.get(key)
        if children is None:  # a label lookup costs more than the increment: once per kind of answer
            children = (self.requests.labels(endpoint, model, str(status)), self.request_seconds.labels(endpoint))
            if len(self._children) < 4096:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def error(self, model: str, kind: str) -> None:
        self.errors.labels(model, kind).inc()

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROCESS):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelObserver:
    """What one model's batcher saw, as metrics (torchpredict.server.batcher.BatchObserver)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.metrics, self.labels = metrics, (model, version)
        m, labels = metrics, self.labels  # the children of every batch, looked up once
        self._batch = (m.batch_requests.labels(*labels), m.batch_rows.labels(*labels),
                       m.queue_seconds.labels(*labels), m.inference_seconds.labels(*labels))
        self._predicted, self._rejected = m.rows.labels(*labels, "predicted"), m.rows.labels(*labels, "rejected")

    def batch(self, *, requests: int, rows: int, queued_s: float, run_s: float) -> None:
        batch_requests, batch_rows, queue_seconds, inference_seconds = self._batch
        batch_requests.observe(requests)
        batch_rows.observe(rows)
        queue_seconds.observe(queued_s)
        inference_seconds.observe(run_s)

    def stats(self, stats: Any) -> None:
        """Count a batch's RunStats: rows predicted and rejected, drift per column, text lost per column."""
        m = self.metrics
        if stats.rows_predicted:
            self._predicted.inc(stats.rows_predicted)
        if stats.rows_rejected:
            self._rejected.inc(stats.rows_rejected)
        for column, drift in stats.drift.columns.items() if stats.drift else ():  # (no drift: no column to ask)
            for kind in DRIFT_KINDS:
                count = getattr(drift, kind)
                if count:
                    m.drift.labels(*self.labels, column, kind).inc(count)
        for kind, counts in (("truncated", stats.text.truncated), ("unknown_tokens", stats.text.unknown)):
            for column, count in counts.items():
                if count:
                    m.text.labels(*self.labels, column, kind).inc(count)

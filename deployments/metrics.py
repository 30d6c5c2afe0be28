"""Ray metrics of the app (exported on Ray's Prometheus endpoint and dashboard).

Names are prefixed ``packed_bert_``; Ray adds ``ray_`` on export and tags each series with
the deployment, replica and application.
"""

from __future__ import annotations

from ray.serve import metrics

_RATIO = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]
_COUNT = [1, 2, 4, 8, 16, 24, 32, 40, 64, 128]
_TOKENS = [64, 256, 512, 1024, 2048, 3072, 4096, 8192]
_SECONDS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class PackerMetrics:
    """Per-batch packing metrics, recorded by the packer deployment."""

    def __init__(self) -> None:
        self.efficiency = metrics.Histogram(
            "packed_bert_batch_packing_efficiency",
            "Real tokens / token slots computed, per model batch",
            boundaries=_RATIO,
            tag_keys=("mode",),
        )
        self.sequences = metrics.Histogram(
            "packed_bert_batch_sequences",
            "Sequences per model batch",
            boundaries=_COUNT,
            tag_keys=("mode",),
        )
        self.tokens = metrics.Histogram(
            "packed_bert_batch_tokens",
            "Real tokens per model batch",
            boundaries=_TOKENS,
            tag_keys=("mode",),
        )
        self.wait = metrics.Histogram(
            "packed_bert_packer_wait_seconds",
            "Time a request waits in the packer before its batch is sent",
            boundaries=_SECONDS,
        )
        self.batch_seconds = metrics.Histogram(
            "packed_bert_batch_seconds",
            "Time from sending a batch to its results",
            boundaries=_SECONDS,
            tag_keys=("mode",),
        )
        self.dropped = metrics.Counter(
            "packed_bert_windows_dropped",
            "Windows never computed because their client went "
            "away (deadline passed or disconnected) before their batch started",
        )
        self.discarded = metrics.Counter(
            "packed_bert_windows_discarded",
            "Windows computed after their client went away "
            "(their batch had already started); results thrown away",
        )


class IngressMetrics:
    """Requests by outcome and end-to-end latency, recorded by the HTTP ingress."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "packed_bert_requests", "HTTP answer requests by outcome", tag_keys=("outcome",)
        )
        self.latency = metrics.Histogram(
            "packed_bert_request_seconds",
            "End-to-end latency of answered requests",
            boundaries=_SECONDS,
        )

"""Tokenizer deployment: question + context -> SQuAD-style windows of at most ``seq_len`` tokens."""

from __future__ import annotations

import threading

from ray import serve

from packing.qa.windows import Window, make_windows

from .model_store import ensure_model


@serve.deployment(name="Tokenizer", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
class TokenizerDeployment:
    """Holds the model folder's fast tokenizer."""

    def __init__(self, model_dir: str, model_source: str, seq_len: int, batch_size: int,
                 max_valid_num: int, doc_stride: int = 128, max_query_tokens: int = 64) -> None:
        from transformers import AutoTokenizer

        self.manifest = ensure_model(model_dir, model_source, seq_len, batch_size, max_valid_num)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.doc_stride, self.max_query_tokens = doc_stride, max_query_tokens
        # A fast tokenizer changes its truncation state on every call: one call at a time.
        self._lock = threading.Lock()

    def ping(self) -> bool:
        """Readiness probe."""
        return True

    def windows(self, question: str, context: str) -> list[Window]:
        """Windows for one validated request; raises BadRequest when the question cannot fit."""
        with self._lock:
            return make_windows(self.tokenizer, question, context, self.manifest.seq_len,
                                self.doc_stride, self.max_query_tokens)

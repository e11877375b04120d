"""Audit: hash-chained journal of everything Guard decides, each chain a Merkle log with signed checkpoints
(receipts and proofs: guard.audit.proofs), forwarded to SIEMs.

What the rest of Guard uses:
    Journal(settings, writer_id)  ->  await journal.append(event) / append_sync(event) / healthy / close()
    JournalError                      the journal cannot make events durable: refuse with 503 (fail closed)
    event.*                           builders: exchange_started, exchange_completed, exchange_denied, ...
    ContentCapture.from_settings      prompt/answer capture per ``audit.capture``
    JournalRecorder(journal)          the pipeline's Recorder (started / finished) over the journal
    Forwarder(settings)               start() / stop(): delivery to the configured sinks, one per audit.dir
    notary.Notary(settings)           start() / stop(): RFC 3161 tokens and witness cosignatures for checkpoints
"""

from __future__ import annotations

from guard.audit.event import ContentCapture
from guard.audit.forwarder import Forwarder
from guard.audit.journal import Journal, JournalError, default_writer_id
from guard.audit.recorder import JournalRecorder

__all__ = ["ContentCapture", "Forwarder", "Journal", "JournalError", "JournalRecorder", "default_writer_id"]

"""Webhooks (SPEC §17): the outbox written with a run's end, the sender that POSTs it, the service."""

from .outbox import RUN_FINISHED, Outbox
from .sender import WebhookSender, retry_wait_s, signature
from .service import WebhookService

__all__ = ["RUN_FINISHED", "Outbox", "WebhookSender", "WebhookService", "retry_wait_s", "signature"]

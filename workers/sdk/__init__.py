"""The responder SDK: everything a sub-service needs to answer usage requests."""

from workers.sdk.protocol import Chunker, decide, error_reply, ok_replies
from workers.sdk.responder import Responder
from workers.sdk.runner import run_worker, serve
from workers.sdk.service import UsageService, UsageSource, usage_stream
from workers.sdk.settings import WorkerSettings
from workers.sdk.threads import iterate_in_thread

__all__ = [
    "Chunker",
    "Responder",
    "UsageService",
    "UsageSource",
    "WorkerSettings",
    "decide",
    "error_reply",
    "iterate_in_thread",
    "ok_replies",
    "run_worker",
    "serve",
    "usage_stream",
]

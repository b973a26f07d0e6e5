"""The responder SDK: everything a sub-service needs to answer usage requests."""

from workers.sdk.protocol import decide, error_reply, ok_replies
from workers.sdk.responder import Responder
from workers.sdk.runner import run_worker, serve
from workers.sdk.service import UsageService
from workers.sdk.settings import WorkerSettings

__all__ = [
    "Responder",
    "UsageService",
    "WorkerSettings",
    "decide",
    "error_reply",
    "ok_replies",
    "run_worker",
    "serve",
]

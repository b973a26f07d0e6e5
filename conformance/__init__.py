"""The conformance kit: play the coordinator against a running sub-service and check its answers.

``reckon conformance SERVICE`` (``python -m conformance SERVICE``) sends it usage requests over the
real broker, as the coordinator's broker user, and prints a table of checks — an answer within the
deadline, every reply valid against the published schema, ``user_id`` and ``correlation_id``,
chunks, duplicates, a stable inventory, invalid and unsigned requests, a redelivered request, the
limits — exiting 0 only when every check passed (1 when one did not, 2 when the kit cannot run).
Python teams can run the same checks from pytest: ``conformance.pytest_plugin``.

A party of its own: it imports the contracts and the shared plumbing, never the coordinator, the
workers or the payment consumer (``[tool.importlinter]``). ``checks`` (with ``model``, ``replies``
and ``validation``) is the pure core that judges what was received; ``amqp`` sends and collects.
"""

from conformance.amqp import SetupProblem, run, run_conformance
from conformance.checks import CHECKS
from conformance.model import Check, Result, Status

__all__ = ["CHECKS", "Check", "Result", "SetupProblem", "Status", "run", "run_conformance"]

"""The aio-pika shell: play the coordinator against a running sub-service, collect what comes back.

It connects as the coordinator's broker user (a service answers no one else), declares the usage
exchange and the service's request queue as the coordinator does (a queue that exists is used as
it is), takes a reply queue of its own and sends, one phase after the other:

1. the first request for the period; its answer is waited for until the deadline (or, once its last
   chunk came with one before it missing, ``gap_seconds`` more);
2. a request without ``user_id`` and, given another broker user, one signed by it, then the same
   period asked again with a new request; after that answer, ``quiet`` seconds more for anything the
   first two get (they must get nothing);
3. that second request published again with the same ids, as the broker redelivers a request whose
   service died mid-answer: a new answer is expected, under a new ``answer_id``;
4. a request whose body is not JSON, then one that is JSON but not a valid request: each must get an
   error reply or be dead-lettered (seen on a queue of the kit's bound to the dead-letter exchange
   where the broker user may bind one, else as ``billing.dead-letters`` growing).

Every reply is kept as received; the pure checks (``conformance.checks``) judge them at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from conformance.checks import judge
from conformance.model import Asked, Observations, Reply, Result
from conformance.replies import progress, remembered
from conformance.schema import reply_validator
from conformance.settings import ConformanceSettings
from conformance.validation import ReplyValidator
from contracts import CONTENT_TYPE, Period, Topology, UsageRequest
from transport.connection import broker_user, connect
from transport.queues import QueueProbe, declare_exchange, declare_queue

GAP_SECONDS = 2.0
"""After a last chunk, how long a chunk still missing before it may take (a gap fails ``chunks``)."""
LINGER_SECONDS = 0.3
"""After an answer is in, how long stray chunks (a second last one, a repeat) may take to arrive."""
DEAD_LETTER_GRACE_SECONDS = 2.0
"""After an error reply, how long the request's dead letter may take to show (it is only noted)."""
PUBLISH_TIMEOUT = 10.0
POLL_SECONDS = 0.1
_MIN_EXPIRATION = timedelta(milliseconds=1)
_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError)

DeadLetters = Literal["arguments", "policy"]


class SetupProblem(Exception):
    """The kit cannot run (a queue it may not declare, the wrong broker user): not the service's
    fault. One line, naming what to do."""


@dataclass(frozen=True)
class Options:
    service: str
    period: Period
    timeout: float = 30.0
    """Each request's deadline, from when it is sent (the coordinator's ``deadline_seconds``)."""
    quiet: float = 3.0
    """How long a request that must get no answer is watched after the service answered the next."""
    expected_user: str | None = None
    """The broker user replies must carry; None: the kit's own (the coordinator's)."""
    expected_user_why: str = ""
    dead_letters: DeadLetters = "arguments"
    gap_seconds: float = GAP_SECONDS


def _now() -> datetime:
    return datetime.now(UTC)


def new_request_id() -> str:
    """Random, 128 bits, as the coordinator's."""
    return uuid.uuid4().hex


class Inbox:
    """Every message on the kit's reply queue, routed to its request by ``correlation_id``."""

    def __init__(self) -> None:
        self._by_request: dict[str, list[Reply]] = {}
        self.strays: list[Reply] = []
        self._changed = asyncio.Event()

    def expect(self, request_id: str) -> None:
        self._by_request.setdefault(request_id, [])

    def replies(self, request_id: str) -> list[Reply]:
        return self._by_request.get(request_id, [])

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        reply = Reply(
            body=message.body,
            correlation_id=message.correlation_id,
            user_id=message.user_id,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            at=_now(),
        )
        replies = self._by_request.get(message.correlation_id or "")
        (self.strays if replies is None else replies).append(reply)
        self._changed.set()

    async def wait_until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Until ``done()`` holds (True) or ``seconds`` pass (False); ``done`` is asked at each reply
        and every ``POLL_SECONDS``."""
        loop = asyncio.get_running_loop()
        until = loop.time() + max(seconds, 0)
        while True:
            self._changed.clear()
            if done():
                return True
            remaining = until - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, POLL_SECONDS))


class DeadLetterWatch:
    """Whether a request was dead-lettered. Best: a queue of the kit's bound to the dead-letter
    exchange with the service's key (every request dead-lettered from its queue, by id). Else the
    message count of ``billing.dead-letters`` (a passive declare needs no permission): a request
    counts as dead-lettered when it grew after it was sent. Else blind (``seen`` is None)."""

    def __init__(self, how: str, probe: QueueProbe | None = None, queue: str | None = None) -> None:
        self.how = how
        self._probe = probe
        self._queue = queue
        self._seen: set[str] = set()
        self._baseline: dict[str, int] = {}
        self._channel: AbstractChannel | None = None

    @classmethod
    async def start(cls, connection: AbstractConnection, topology: Topology, service: str) -> DeadLetterWatch:
        exchange = topology.dead_letter_exchange
        channel = await connection.channel()
        try:
            with contextlib.suppress(*_AMQP_ERRORS):
                await declare_exchange(channel, exchange)  # as the coordinator does, when the user may
            if channel.is_closed:
                channel = await connection.channel()
            queue = await _anonymous_queue(channel)
            await queue.bind(exchange.name, routing_key=service)
        except _AMQP_ERRORS as error:
            with contextlib.suppress(*_AMQP_ERRORS):
                await channel.close()
            return await cls._counting(connection, topology, f"{type(error).__name__}")
        watch = cls(f"a queue of the kit's bound to {exchange.name}")
        watch._channel = channel
        await queue.consume(watch._on_dead_letter, no_ack=True)
        return watch

    @classmethod
    async def _counting(cls, connection: AbstractConnection, topology: Topology, why: str) -> DeadLetterWatch:
        probe = QueueProbe(connection)
        name = topology.dead_letters_queue.name
        if await probe.look(name) is None:
            await probe.close()
            return cls(
                f"this broker user may not bind a queue to {topology.dead_letter_exchange.name} ({why}) "
                f"and {name} does not exist"
            )
        return cls(f"the message count of {name}", probe, name)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        for key in (message.correlation_id, message.message_id):
            if key:
                self._seen.add(key)

    async def _count(self) -> int | None:
        if self._probe is None or self._queue is None:
            return None
        queue = await self._probe.look(self._queue)
        return None if queue is None else int(queue.declaration_result.message_count or 0)

    async def mark(self, request_id: str) -> None:
        """``request_id`` is about to be sent (the count it must exceed)."""
        count = await self._count()
        if count is not None:
            self._baseline[request_id] = count

    async def seen(self, request_id: str) -> bool | None:
        if self._channel is not None:
            return request_id in self._seen
        baseline = self._baseline.get(request_id)
        if baseline is None:
            return None
        count = await self._count()
        return None if count is None else count > baseline

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*_AMQP_ERRORS):
                await self._channel.close()
        if self._probe is not None:
            with contextlib.suppress(*_AMQP_ERRORS):
                await self._probe.close()


async def _anonymous_queue(channel: AbstractChannel) -> AbstractQueue:
    """An exclusive, auto-delete queue named by the client library, as the coordinator's reply queues
    (a name the deployed coordinator user may configure and read), never restored after a reconnect."""
    if isinstance(channel, AbstractRobustChannel):
        return await channel.declare_queue("", exclusive=True, auto_delete=True, robust=False)
    return await channel.declare_queue("", exclusive=True, auto_delete=True)


async def prepare_queue(
    connection: AbstractConnection, topology: Topology, service: str, dead_letters: DeadLetters
) -> None:
    """The usage exchange and the service's request queue, as the coordinator declares them: a queue
    that exists is used as it is; a missing one is declared (with ``x-dead-letter-exchange``, or
    without it when a broker policy names it), if this broker user may."""
    spec = topology.usage_queue(service)
    user = broker_user(connection)
    channel = await connection.channel()
    try:
        await declare_exchange(channel, spec.exchange)
    except aiormq.exceptions.ChannelAccessRefused:
        channel = await connection.channel()
        try:
            await channel.get_exchange(spec.exchange.name, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise SetupProblem(
                f"exchange {spec.exchange.name} does not exist and broker user {user} may not declare it: "
                "start the coordinator, or connect as its user"
            ) from None
    finally:
        if not channel.is_closed:
            await channel.close()
    probe = QueueProbe(connection)
    try:
        exists = await probe.look(spec.name) is not None
    finally:
        await probe.close()
    if exists:
        return
    declared = spec.for_policy() if dead_letters == "policy" else spec
    channel = await connection.channel()
    try:
        await declare_queue(channel, declared)
    except aiormq.exceptions.ChannelAccessRefused as error:
        raise SetupProblem(
            f"queue {spec.name} does not exist and broker user {user} may not declare it ({error}); "
            "start the coordinator (it declares every configured service's queue), or connect as its user"
        ) from None
    except aio_pika.exceptions.ChannelPreconditionFailed:
        pass  # declared meanwhile with other arguments: used as it is, like the coordinator does
    finally:
        if not channel.is_closed:
            await channel.close()


def _message(
    body: bytes, request_id: str, reply_to: str, deadline: datetime, user: str | None
) -> aio_pika.Message:
    now = _now()
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        correlation_id=request_id,
        message_id=request_id,
        reply_to=reply_to,
        expiration=max(deadline - now, _MIN_EXPIRATION),
        timestamp=now,
        user_id=user,
    )


def _returned(outcome: object) -> str | None:
    """Why the broker returned a mandatory message (None: it was routed)."""
    if not isinstance(outcome, DeliveredMessage):
        return None
    delivery = outcome.delivery
    if isinstance(delivery, Basic.Return):
        return f"{delivery.reply_code} {delivery.reply_text}"
    return "returned"


class _Run:
    """One run: the kit's channel, reply queue and inbox, and each phase."""

    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        options: Options,
        impostor: AbstractConnection | None,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.options = options
        self.impostor = impostor
        self.user = broker_user(connection)
        self.inbox = Inbox()
        self.reply_to = ""
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.watch: DeadLetterWatch | None = None

    @property
    def service(self) -> str:
        return self.options.service

    def request(self, request_id: str, deadline: datetime) -> bytes:
        return UsageRequest(
            request_id=request_id,
            report_id=uuid.uuid4(),
            period=self.options.period,
            service=self.service,
            deadline=deadline,
        ).to_json()

    async def open(self) -> None:
        channel = await self.connection.channel(publisher_confirms=True)
        self.channel = channel
        self.exchange = await channel.get_exchange(self.topology.usage.name, ensure=False)
        queue = await _anonymous_queue(channel)
        await queue.consume(self.inbox.on_message, no_ack=True)
        self.reply_to = queue.name
        self.watch = await DeadLetterWatch.start(self.connection, self.topology, self.service)

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()
        if self.channel is not None and not self.channel.is_closed:
            with contextlib.suppress(*_AMQP_ERRORS):
                await self.channel.close()

    async def send(
        self, body: bytes, request_id: str, deadline: datetime, *, signed: bool = True
    ) -> str | None:
        """Publish a request as the coordinator does (mandatory, confirmed); why it was returned, if so."""
        assert self.exchange is not None
        self.inbox.expect(request_id)
        message = _message(body, request_id, self.reply_to, deadline, self.user if signed else None)
        outcome = await self.exchange.publish(
            message, routing_key=self.service, mandatory=True, timeout=PUBLISH_TIMEOUT
        )
        return _returned(outcome)

    async def send_as_impostor(self, body: bytes, request_id: str, deadline: datetime) -> str | None:
        """Publish a request signed by the impostor's broker user: straight to the service's queue
        (the default exchange, which any user with write on it may use), else through the usage
        exchange. Why it could not be published, if it could not."""
        assert self.impostor is not None
        self.inbox.expect(request_id)
        user = broker_user(self.impostor)
        queue = self.topology.usage_queue(self.service).name
        problems = []
        for exchange_name, routing_key in (("", queue), (self.topology.usage.name, self.service)):
            channel = await self.impostor.channel(publisher_confirms=True)
            try:
                exchange = (
                    channel.default_exchange
                    if not exchange_name
                    else await channel.get_exchange(exchange_name, ensure=False)
                )
                message = _message(body, request_id, self.reply_to, deadline, user)
                outcome = await exchange.publish(
                    message, routing_key=routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT
                )
                returned = _returned(outcome)
                if returned is None:
                    return None
                problems.append(f"returned by the broker ({returned})")
            except _AMQP_ERRORS as error:
                problems.append(f"{type(error).__name__}: {str(error)[:120]}")
            finally:
                if not channel.is_closed:
                    with contextlib.suppress(*_AMQP_ERRORS):
                        await channel.close()
        return f"broker user {user} could not publish a request to {self.service}: {'; '.join(problems)}"

    async def answer(self, request_id: str, seconds: float, since: int = 0) -> None:
        """Wait for the answer to ``request_id`` (its replies from index ``since``): until it ended,
        ``seconds`` passed, or ``gap_seconds`` after its last chunk while a chunk before is missing."""
        loop = asyncio.get_running_loop()
        gap_until: float | None = None

        def done() -> bool:
            nonlocal gap_until
            state = progress(self.inbox.replies(request_id)[since:])
            if state.ended:
                return True
            if state.last_seen and gap_until is None:
                gap_until = loop.time() + self.options.gap_seconds
            return gap_until is not None and loop.time() >= gap_until

        await self.inbox.wait_until(done, seconds)
        await asyncio.sleep(LINGER_SECONDS)

    async def consumers(self) -> int:
        probe = QueueProbe(self.connection)
        try:
            return await probe.consumers(self.topology.usage_queue(self.service).name)
        finally:
            await probe.close()

    async def wait_for_consumer(self) -> bool:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.options.timeout
        while True:
            if await self.consumers() > 0:
                return True
            if loop.time() >= until:
                return False
            await asyncio.sleep(0.5)

    async def invalid(self, label: str, body: bytes, request_id: str) -> Asked:
        """Send an invalid request; wait for a reply or its dead letter (at most the timeout)."""
        assert self.watch is not None
        watch = self.watch
        deadline = _now() + timedelta(seconds=self.options.timeout)
        await watch.mark(request_id)
        sent = _now()
        await self.send(body, request_id, deadline)
        loop = asyncio.get_running_loop()
        until = loop.time() + self.options.timeout
        lettered: bool | None = None
        while True:
            if self.inbox.replies(request_id):
                lettered = await self._dead_lettered_soon(request_id)  # answered, and parked too?
                break
            lettered = await watch.seen(request_id)
            if lettered or loop.time() >= until:
                break
            await asyncio.sleep(POLL_SECONDS)
        waited = round((_now() - sent).total_seconds(), 2)
        return Asked(
            label, request_id, sent, deadline, tuple(self.inbox.replies(request_id)), lettered, waited
        )

    async def _dead_lettered_soon(self, request_id: str) -> bool | None:
        """Whether the request shows in the dead letters within ``DEAD_LETTER_GRACE_SECONDS``."""
        assert self.watch is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + DEAD_LETTER_GRACE_SECONDS
        while True:
            lettered = await self.watch.seen(request_id)
            if lettered is not False or loop.time() >= until:
                return lettered
            await asyncio.sleep(POLL_SECONDS)

    async def observe(self) -> Observations:
        options = self.options
        expected = options.expected_user or self.user
        why = options.expected_user_why or (
            f"no broker user is configured for {self.service} (service_users, --service-user): the "
            "coordinator then takes replies only from its own user"
        )
        seen = Observations(
            service=self.service,
            period=options.period,
            namespace=self.topology.namespace,
            expected_user=expected,
            expected_user_why=why,
        )
        queue = self.topology.usage_queue(self.service).name
        if not await self.wait_for_consumer():
            return replace(
                seen,
                unreachable=f"no consumer on queue {queue} within {options.timeout:g}s: "
                f"is {self.service} running?",
            )
        await self.open()
        assert self.watch is not None

        # 1. The first request.
        first_id = new_request_id()
        sent = _now()
        deadline = sent + timedelta(seconds=options.timeout)
        returned = await self.send(self.request(first_id, deadline), first_id, deadline)
        if returned is not None:
            return replace(
                seen,
                unreachable=f"the request was returned by the broker ({returned}): "
                f"no queue is bound for {self.service}",
            )
        await self.answer(first_id, options.timeout)
        first = Asked("the first request", first_id, sent, deadline, tuple(self.inbox.replies(first_id)))
        if not first.replies and not self.inbox.strays:
            later = "the service did not answer the first request"
            skipped = dict.fromkeys(
                ("inventory", "invalid_json", "invalid_schema", "no_user_id", "impostor", "redelivery"), later
            )
            return replace(seen, first=first, skipped=skipped, dead_letters=self.watch.how)

        # 2. Unsigned and impostor's requests, then the period again.
        unsigned_id = new_request_id()
        unsigned_sent = _now()
        unsigned_deadline = unsigned_sent + timedelta(seconds=options.timeout)
        await self.send(
            self.request(unsigned_id, unsigned_deadline), unsigned_id, unsigned_deadline, signed=False
        )
        impostor_id = new_request_id()
        impostor_sent = _now()
        impostor_problem = None
        if self.impostor is not None:
            impostor_problem = await self.send_as_impostor(
                self.request(impostor_id, unsigned_deadline), impostor_id, unsigned_deadline
            )
        again_id = new_request_id()
        again_sent = _now()
        again_deadline = again_sent + timedelta(seconds=2 * options.timeout)  # room to deliver it again
        again_body = self.request(again_id, again_deadline)
        await self.send(again_body, again_id, again_deadline)
        await self.answer(again_id, options.timeout)
        await asyncio.sleep(options.quiet)

        # 3. The same request delivered again.
        split = len(self.inbox.replies(again_id))
        redelivered_sent = _now()
        redelivered_deadline = min(again_deadline, redelivered_sent + timedelta(seconds=options.timeout))
        republished = progress(self.inbox.replies(again_id)).ended
        if republished:
            await self.send(again_body, again_id, again_deadline)
            await self.answer(
                again_id, (redelivered_deadline - redelivered_sent).total_seconds(), since=split
            )

        # 4. Invalid requests, one after the other (dead letters may only be counted).
        json_id = new_request_id()
        malformed = b'{"schema_version": "1.1", "request_id": "' + json_id.encode() + b'", "service": '
        invalid_json = await self.invalid("the malformed JSON request", malformed, json_id)
        schema_id = new_request_id()
        not_a_request = json.dumps(
            {
                "schema_version": "1.1",
                "request_id": schema_id,
                "report_id": "not-a-uuid",
                "period": {"period_id": options.period.period_id, "start": "yesterday"},
                "service": self.service,
                "deadline": "soon",
            }
        ).encode()
        invalid_schema = await self.invalid("the schema-invalid request", not_a_request, schema_id)
        await asyncio.sleep(LINGER_SECONDS)

        replies = self.inbox.replies
        wait = round((_now() - unsigned_sent).total_seconds(), 2)
        redelivered = None
        if republished:
            redelivered = Asked(
                "the same request delivered again",
                again_id,
                redelivered_sent,
                redelivered_deadline,
                tuple(replies(again_id)[split:]),
            )
        impostor = (
            Asked(
                "the impostor's request",
                impostor_id,
                impostor_sent,
                unsigned_deadline,
                tuple(replies(impostor_id)),
                waited=wait,
            )
            if self.impostor is not None and impostor_problem is None
            else None
        )
        unsigned = Asked(
            "the request without user_id",
            unsigned_id,
            unsigned_sent,
            unsigned_deadline,
            tuple(replies(unsigned_id)),
            waited=wait,
        )
        again = Asked(
            "the second request", again_id, again_sent, again_deadline, tuple(replies(again_id)[:split])
        )
        skipped = {} if redelivered is not None else {"redelivery": "the second answer was not complete"}
        return replace(
            seen,
            first=Asked("the first request", first_id, sent, deadline, tuple(replies(first_id))),
            again=again,
            redelivered=redelivered,
            invalid_json=replace(invalid_json, replies=tuple(replies(json_id))),  # a reply after its letter
            invalid_schema=replace(invalid_schema, replies=tuple(replies(schema_id))),
            unsigned=unsigned,
            impostor=impostor,
            impostor_problem=impostor_problem,
            strays=tuple(self.inbox.strays),
            dead_letters=self.watch.how,
            skipped=skipped,
        )


async def run(
    connection: AbstractConnection,
    topology: Topology,
    options: Options,
    *,
    impostor: AbstractConnection | None = None,
    validator: ReplyValidator | None = None,
) -> Result:
    """Every check against ``options.service`` on the broker of ``connection`` (the coordinator's
    user), its request queue declared first if it is missing and this user may."""
    checker = validator or reply_validator()
    await prepare_queue(connection, topology, options.service, options.dead_letters)
    kit = _Run(connection, topology, options, impostor)
    with remembered():  # each reply parsed once, from its arrival to its judgement
        try:
            observations = await kit.observe()
        finally:
            await kit.close()
        return judge(observations, checker)


def last_closed_month(now: datetime | None = None) -> Period:
    """The calendar month (UTC) before the one ``now`` is in: the last period a coordinator may close."""
    today = now or _now()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return Period.month(f"{year:04d}-{month:02d}")


async def run_conformance(
    service: str,
    *,
    settings: ConformanceSettings | None = None,
    period: Period | None = None,
    timeout: float | None = None,
    quiet: float = 3.0,
    service_user: str | None = None,
    impostor_url: str | None = None,
    validator: ReplyValidator | None = None,
    gap_seconds: float = GAP_SECONDS,
) -> Result:
    """Connect as ``settings`` say (``AMQP_URL``, ``RECKON_NAMESPACE``, ``RECKON_CONFIG``: the
    coordinator's broker user), run every check against ``service`` and return the result.

    ``period`` defaults to the last closed month and must be over; ``timeout`` to the coordinator's
    ``deadline_seconds``. ``service_user`` is the broker user replies must carry (default: the
    configured ``service_users`` entry, else the coordinator's own user). ``impostor_url`` is a URL
    of another broker user, whose request must never be answered. Raises ``SetupProblem`` (and
    ``transport.connection.BrokerUnavailable``) when the kit cannot run at all.
    """
    chosen = settings or ConformanceSettings()
    asked = period or last_closed_month()
    if asked.end > _now():
        raise SetupProblem(
            f"period {asked.period_id} is not over (it ends {asked.end.isoformat()}): the inventory of "
            "a closed period is asked for"
        )
    connection = await connect(chosen, name=f"reckon conformance {service}")
    impostor: AbstractConnection | None = None
    try:
        user = broker_user(connection)
        if chosen.coordinator_user is not None and user != chosen.coordinator_user:
            raise SetupProblem(
                f"AMQP_URL's broker user is {user}, not the coordinator's ({chosen.coordinator_user}): a "
                "service answers only the coordinator's requests, so connect as that user"
            )
        if impostor_url is not None:
            impostor = await connect(impostor_url, name=f"reckon conformance {service} (impostor)")
            if broker_user(impostor) == user:
                raise SetupProblem(f"--impostor-url must be another broker user than {user}")
        if service_user is not None:
            expected, why = service_user, "given by --service-user"
        elif service in chosen.service_users:
            expected, why = chosen.service_users[service], f"service_users names it for {service}"
        else:
            expected, why = user, ""
        options = Options(
            service=service,
            period=asked,
            timeout=timeout if timeout is not None else chosen.deadline_seconds,
            quiet=quiet,
            expected_user=expected,
            expected_user_why=why,
            dead_letters=chosen.dead_letters,
            gap_seconds=gap_seconds,
        )
        return await run(
            connection, Topology(chosen.namespace), options, impostor=impostor, validator=validator
        )
    finally:
        if impostor is not None:
            await impostor.close()
        await connection.close()

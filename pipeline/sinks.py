"""Where results go: Kafka topics (kafka-python) or a JSON Lines file. Ray-free; ``actors/sink.py`` hosts one.

Kafka delivery is at least once: records are produced with ``acks=all`` and bounded retries; a record the broker
did not take goes to a durable local outbox (JSON Lines, fsynced) and is re-sent while the run goes on and at the
next start, never dropped silently. Keys are the UTF-8 ``camera_id``; values are the JSON messages of
:mod:`schemas.messages`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from schemas.errors import SinkError
from schemas.messages import CameraStats, PersonDecision

logger = logging.getLogger(__name__)
# How long to wait for the first broker to answer: a broker that is down must fail fast, not after 30 s.
BOOTSTRAP_TIMEOUT_MS = 5000
# How long KafkaProducer.send may wait for metadata or buffer space before the record goes to the outbox instead:
# a camera must never wait for a broker that is away.
SEND_BLOCK_MS = 1000
# A broker that comes back is found again within this (kafka-python's exponential reconnect backoff, capped).
RECONNECT_BACKOFF_MAX_MS = 5000
# Records in flight before write() settles them (a flush without raising).
MAX_INFLIGHT = 1000


def broker_unreachable(cfg: Any) -> SinkError:
    """The one-line error for a Kafka bootstrap that timed out (kafka-python 3 raises ``KafkaTimeoutError``)."""
    within_s = BOOTSTRAP_TIMEOUT_MS / 1000
    msg = f"cannot reach Kafka broker at {cfg.bootstrap_servers} (no broker answered within {within_s:g} s)"
    return SinkError(msg)


@dataclass(frozen=True, slots=True)
class Record:
    """One message: topic, key (camera_id) and encoded JSON value."""

    topic: str
    key: str
    value: bytes

    def to_json_line(self, **extra: Any) -> str:
        """``{"topic": ..., "key": ..., "value": {...}}`` on one line, with ``extra`` fields beside them."""
        obj = {"topic": self.topic, "key": self.key, "value": json.loads(self.value), **extra}
        return json.dumps(obj, sort_keys=True)

    @classmethod
    def from_json_line(cls, line: str) -> Record:
        """Inverse of :meth:`to_json_line`."""
        obj = json.loads(line)
        value = json.dumps(obj["value"], sort_keys=True, separators=(",", ":")).encode()
        return cls(obj["topic"], obj["key"], value)


def message_records(messages: list[PersonDecision | CameraStats], decisions_topic: str,
                    stats_topic: str) -> list[Record]:
    """Kafka records of a camera's messages, in order: decisions to ``decisions_topic``, statistics to
    ``stats_topic``; the key is the ``camera_id`` (a camera's records stay in one partition, in order)."""
    return [Record(decisions_topic if isinstance(m, PersonDecision) else stats_topic, m.camera_id, m.encode())
            for m in messages]


class JsonLinesSink:
    """Appends records to a JSON Lines file (``-`` for standard output).

    Raises:
        SinkError: If the file cannot be opened for writing.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            self._fh: IO[str] = open(path, "a", encoding="utf-8") if self.path != "-" else None  # type: ignore[assignment]  # noqa: SIM115
        except OSError as exc:
            msg = f"cannot write results to {path}: {exc.strerror}"
            raise SinkError(msg) from exc

    def write(self, records: list[Record]) -> None:
        """Write and flush records."""
        lines = "".join(r.to_json_line() + "\n" for r in records)
        if self._fh is None:
            print(lines, end="", flush=True)  # "-" means stdout
            return
        self._fh.write(lines)
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()


def kafka_client_args(cfg: Any) -> dict[str, Any]:
    """kafka-python connection arguments from a ``pipeline.config.KafkaConfig``."""
    args: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        "request_timeout_ms": int(cfg.request_timeout_s * 1000),
    }
    if cfg.sasl_mechanism:
        args["sasl_mechanism"] = cfg.sasl_mechanism
        args["sasl_plain_username"] = cfg.sasl_username
        args["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    return args


def ensure_topics(cfg: Any, partitions: int = 3) -> None:
    """Create the decisions and (compacted) camera and district statistics topics if they do not exist.

    On a managed cluster (Strimzi ``KafkaTopic``) they exist already and nothing happens.

    Raises:
        SinkError: If no broker answers at ``cfg.bootstrap_servers``.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**kafka_client_args(cfg), bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    except KafkaTimeoutError as exc:
        raise broker_unreachable(cfg) from exc
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(cfg.decisions_topic, partitions, 1),
            NewTopic(cfg.stats_topic, partitions, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(cfg.district_stats_topic, partitions, 1, topic_configs={"cleanup.policy": "compact"}),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    except KafkaError as exc:
        msg = f"Kafka broker at {cfg.bootstrap_servers}: cannot list/create topics ({exc})"
        raise SinkError(msg) from exc
    finally:
        admin.close()


def any_listening(bootstrap_servers: str, timeout_s: float = 0.5) -> bool:
    """True if any of ``"host:port,host:port"`` (``[v6]:port`` allowed) accepts a TCP connection within ``timeout_s``
    each (seconds). A broker that is down refuses at once; kafka-python's bootstrap would retry for its whole timeout.
    """
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def _close_abandoned(producer: Any, join_s: float = 5.0) -> None:
    """Close a producer whose records are given up, without sending them.

    kafka-python 3.0's ``close(timeout)`` flushes first (dpkp/kafka-python#2537) and raises ``KafkaTimeoutError``
    while records wait for a broker that is away, before it stops anything: the producer's sender thread would keep
    reconnecting for the life of the process, and its ``__del__`` would raise the same error again at garbage
    collection. So the sender is stopped without sending (``force_close``: pending batches are aborted), then the
    producer is closed.
    """
    try:
        sender = producer._sender  # kafka-python has no public "abort and close"
        sender.force_close()
        sender.join(join_s)
        producer.close(timeout=0)
    except Exception as exc:  # a producer we gave up on must never raise into the caller
        logger.debug("abandoned Kafka producer did not close cleanly: %r", exc)


class KafkaSink:
    """Produces records to Kafka, at least once, through a durable on-disk outbox while the broker is away.

    While the broker takes records, they are sent directly (``acks=all``, one request in flight per connection so
    that retries keep the order). A record the broker does not acknowledge goes to the outbox file (JSON Lines,
    fsynced), and so does every later record while the outbox is not empty, so the order per key (camera) holds
    across an outage. :meth:`retry` re-sends the outbox while the run goes on, at most every ``retry_interval_s``
    (each :meth:`write` calls it), and removes what was delivered. :meth:`write` never waits for the broker: a send
    that cannot proceed within ``send_block_ms`` goes to the outbox. The outbox holds at most
    ``outbox_max_records``; beyond that new records are refused, counted in :attr:`dropped` and logged.

    Args:
        cfg: A ``pipeline.config.KafkaConfig`` with ``bootstrap_servers`` set.

    Raises:
        SinkError: If no broker answers when the sink starts.
    """

    def __init__(self, cfg: Any) -> None:
        from kafka.errors import KafkaTimeoutError

        self.cfg = cfg
        self.outbox = Path(cfg.outbox_path)
        try:
            self._producer: Any = self._new_producer(BOOTSTRAP_TIMEOUT_MS)
        except KafkaTimeoutError as exc:
            raise broker_unreachable(cfg) from exc
        self._inflight: list[tuple[Record, Any, float]] = []  # record, future, time.monotonic() of the send
        self.delivered = 0
        self.dropped = 0
        self._last_retry = 0.0
        self.outbox_depth, self._oldest_ns = self._read_outbox_state()
        if self.outbox_depth:
            logger.warning("outbox %s holds %d record(s) from an earlier run; re-sending them first", self.outbox,
                           self.outbox_depth)
            self.retry(force=True)

    def _new_producer(self, bootstrap_timeout_ms: int) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(
            **kafka_client_args(self.cfg),
            acks="all",
            retries=5,
            linger_ms=20,
            max_in_flight_requests_per_connection=1,
            # kafka-python 3 turns idempotence on by default. Its producer id does not survive a broker that lost
            # its state (measured: Tansu restarted, InitProducerId then fails for good and nothing is sent
            # again). Order comes from one request in flight; duplicates from re-sends are removed by
            # decision_id downstream (at least once).
            enable_idempotence=False,
            max_block_ms=SEND_BLOCK_MS,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
        )

    def _abandon_producer(self) -> None:
        """Drop the producer and what it still holds: those records are in the outbox now, and a producer that
        delivered them late, after newer ones from the outbox, would break the order per key. It is closed in a
        daemon thread (:func:`_close_abandoned`), so the caller never waits for it."""
        if self._producer is None:
            return
        threading.Thread(target=_close_abandoned, args=(self._producer,), name="kafka-abandon", daemon=True).start()
        self._producer = None

    # --- the outbox ------------------------------------------------------------------------------------------------
    def _read_outbox_state(self) -> tuple[int, int | None]:
        lines = self._outbox_lines()
        oldest = json.loads(lines[0]).get("enqueued_ns") if lines else None
        return len(lines), oldest

    def _outbox_lines(self) -> list[str]:
        if not self.outbox.is_file():
            return []
        return [line for line in self.outbox.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _append_outbox(self, records: list[Record]) -> None:
        room = self.cfg.outbox_max_records - self.outbox_depth
        if room < len(records):
            lost = len(records) - max(room, 0)
            self.dropped += lost
            logger.error("outbox %s is full (%d records, kafka.outbox_max_records): %d record(s) dropped",
                         self.outbox, self.outbox_depth, lost)
            records = records[: max(room, 0)]
        if not records:
            return
        now = time.time_ns()
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        with self.outbox.open("a", encoding="utf-8") as fh:
            fh.writelines(r.to_json_line(enqueued_ns=now) + "\n" for r in records)
            fh.flush()
            os.fsync(fh.fileno())
        if self.outbox_depth == 0:
            self._oldest_ns = now
        self.outbox_depth += len(records)

    @property
    def outbox_age_s(self) -> float:
        """Age of the oldest record waiting in the outbox, seconds (0 when it is empty)."""
        if not self.outbox_depth or self._oldest_ns is None:
            return 0.0
        return max(0.0, (time.time_ns() - self._oldest_ns) / 1e9)

    # --- sending ---------------------------------------------------------------------------------------------------
    def write(self, records: list[Record]) -> None:
        """Send records without waiting for the broker (see the class); undelivered ones end up in the outbox.

        Records sent but not acknowledged within ``request_timeout_s`` are written to the outbox too (and may
        still arrive: at least once), so a broker that stays away never holds records only in memory.
        """
        from kafka.errors import KafkaError

        self._settle()
        if self.outbox_depth or self._producer is None:
            self._append_outbox(records)  # behind the records that wait: the order per key holds
        else:
            for i, r in enumerate(records):
                try:
                    fut = self._producer.send(r.topic, key=r.key.encode(), value=r.value)
                except KafkaError as exc:  # no metadata or a full buffer within SEND_BLOCK_MS: the broker is away
                    logger.warning("Kafka send did not proceed (%r); records go to the outbox", exc)
                    self._give_up_inflight()
                    self._abandon_producer()
                    self._append_outbox(records[i:])
                    break
                self._inflight.append((r, fut, time.monotonic()))
            if len(self._inflight) > MAX_INFLIGHT:
                self.flush(strict=False)
        self.retry()

    def _settle(self) -> None:
        """Count the acknowledged records at the head of the in-flight list; from the first record that failed or
        waited longer than ``request_timeout_s``, move it and every later unacknowledged one to the outbox."""
        now = time.monotonic()
        for i, (_, fut, sent) in enumerate(self._inflight):
            if fut.succeeded():
                continue
            if fut.failed() or now - sent > self.cfg.request_timeout_s:
                self._give_up_inflight()
                return
            self.delivered += i
            self._inflight = self._inflight[i:]
            return
        self.delivered += len(self._inflight)
        self._inflight = []

    def _give_up_inflight(self) -> int:
        """Every unacknowledged in-flight record to the outbox, in order; the producer is abandoned with them.
        Returns how many there were."""
        failed = self._collect()
        if failed:
            self._abandon_producer()
            self._append_outbox(failed)
        return len(failed)

    def _collect(self) -> list[Record]:
        """Settle every in-flight future: count the delivered ones, return the others in order."""
        failed = []
        for r, fut, _ in self._inflight:
            if fut.succeeded():
                self.delivered += 1
            else:
                failed.append(r)
        self._inflight = []
        return failed

    def _producer_flush(self, timeout_s: float) -> None:
        from kafka.errors import KafkaError

        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:  # a broker that went away: kafka-python gives up waiting with KafkaTimeoutError
            logger.debug("Kafka flush did not complete (%r)", exc)

    def flush(self, timeout_s: float | None = None, *, strict: bool = True) -> None:
        """Wait for every sent record (at most ``timeout_s``, default ``cfg.flush_timeout_s``); records that were not
        acknowledged go to the outbox.

        Raises:
            SinkError: With ``strict``, if any record is not delivered (it is in the outbox, not lost).
        """
        self._producer_flush(timeout_s if timeout_s is not None else self.cfg.flush_timeout_s)
        if failed := self._give_up_inflight():
            logger.warning("%d record(s) not acknowledged by Kafka at %s; kept in outbox %s", failed,
                           self.cfg.bootstrap_servers, self.outbox)
        if strict and self.outbox_depth:
            msg = (f"{self.outbox_depth} record(s) not delivered to Kafka at {self.cfg.bootstrap_servers}; kept in "
                   f"outbox {self.outbox} for replay")
            raise SinkError(msg)

    def retry(self, force: bool = False) -> None:
        """Re-send the outbox, in order, if it holds records and ``retry_interval_s`` has passed (or ``force``).

        Records delivered leave the outbox; the others stay, in order, with whatever came after them.
        """
        if not self.outbox_depth or (not force and time.monotonic() - self._last_retry < self.cfg.retry_interval_s):
            return
        try:
            self._resend()
        finally:  # the interval runs from the end of an attempt: one that takes longer must not make every write retry
            self._last_retry = time.monotonic()

    def _resend(self) -> None:
        # Records still in flight, sent before the outbox filled, go first: behind it they would reorder.
        self._give_up_inflight()
        from kafka.errors import KafkaError

        if self._producer is None:
            if not any_listening(self.cfg.bootstrap_servers):  # a refused connect costs less than a bootstrap timeout
                logger.info("Kafka at %s still refuses connections; %d record(s) wait in the outbox",
                            self.cfg.bootstrap_servers, self.outbox_depth)
                return
            try:  # bounded: the broker may still be away
                self._producer = self._new_producer(int(self.cfg.retry_flush_timeout_s * 1000))
            except KafkaError as exc:
                logger.info("Kafka at %s still unreachable (%r); %d record(s) wait in the outbox",
                            self.cfg.bootstrap_servers, exc, self.outbox_depth)
                return
        lines = self._outbox_lines()

        sent: list[tuple[str, Any]] = []
        for line in lines:
            r = Record.from_json_line(line)
            try:
                sent.append((line, self._producer.send(r.topic, key=r.key.encode(), value=r.value)))
            except KafkaError:
                break
        self._producer_flush(self.cfg.retry_flush_timeout_s)
        delivered = 0
        for _, fut in sent:
            if not fut.succeeded():
                break
            delivered += 1
        if delivered < len(lines):  # what the producer still holds would arrive after the records kept below
            self._abandon_producer()
        # The first record not acknowledged and everything after it stay; records delivered after a failure may be
        # sent again on the next retry (at least once; consumers de-duplicate decisions by decision_id).
        keep = lines[delivered:]
        self.delivered += delivered
        tmp = self.outbox.with_suffix(self.outbox.suffix + ".tmp")
        if keep:
            tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            tmp.replace(self.outbox)
        else:
            self.outbox.unlink(missing_ok=True)
        self.outbox_depth = len(keep)
        self._oldest_ns = json.loads(keep[0]).get("enqueued_ns") if keep else None
        if delivered:
            logger.warning("re-sent %d record(s) from the outbox; %d still wait", delivered, len(keep))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, try the outbox once more, and close the producer (undelivered records stay in the outbox).

        Raises:
            SinkError: If records are left in the outbox (they are re-sent at the next start).
        """
        from kafka.errors import KafkaError

        try:
            self.flush(timeout_s, strict=False)
            self.retry(force=True)
            self.flush(0.0)
        finally:
            try:
                if self._producer is not None:
                    self._producer.close(timeout=5)
            except KafkaError as exc:  # its own last flush timing out must not hide flush()'s SinkError
                logger.warning("Kafka producer did not close cleanly (%r)", exc)
                _close_abandoned(self._producer)  # what it held is in the outbox
            self._producer = None


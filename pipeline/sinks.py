"""Where results go: Kafka topics (kafka-python) or a JSON Lines file. Ray-free; ``actors/sink.py`` hosts one.

Kafka delivery is at least once: records are produced with ``acks=all`` and bounded retries; a record the broker
did not take is appended to a local outbox file (JSON Lines) and replayed at the next start, never dropped
silently. Keys are the UTF-8 ``camera_id``; values are the JSON messages of :mod:`schemas.messages`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from schemas.errors import SinkError

logger = logging.getLogger(__name__)
# How long to wait for the first broker to answer: a broker that is down must fail fast, not after 30 s.
BOOTSTRAP_TIMEOUT_MS = 5000


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

    def to_json_line(self) -> str:
        """``{"topic": ..., "key": ..., "value": {...}}`` on one line."""
        return json.dumps({"topic": self.topic, "key": self.key, "value": json.loads(self.value)}, sort_keys=True)

    @classmethod
    def from_json_line(cls, line: str) -> Record:
        """Inverse of :meth:`to_json_line`."""
        obj = json.loads(line)
        value = json.dumps(obj["value"], sort_keys=True, separators=(",", ":")).encode()
        return cls(obj["topic"], obj["key"], value)


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
    """kafka-python connection arguments from a ``cluster.config.KafkaConfig``."""
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
    """Create the decisions and (compacted) statistics topics if they do not exist.

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


class KafkaSink:
    """Produces records to Kafka with at-least-once delivery and a local outbox.

    Args:
        cfg: A ``cluster.config.KafkaConfig`` with ``bootstrap_servers`` set.

    Raises:
        SinkError: If no broker answers.
    """

    def __init__(self, cfg: Any) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        self.cfg = cfg
        self.outbox = Path(cfg.outbox_path)
        try:
            self._producer = KafkaProducer(
                **kafka_client_args(cfg),
                acks="all",
                retries=5,
                linger_ms=20,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
        except KafkaTimeoutError as exc:
            raise broker_unreachable(cfg) from exc
        self._inflight: list[tuple[Record, Any]] = []
        self.delivered = 0
        self._replay_outbox()

    def _replay_outbox(self) -> None:
        if not self.outbox.is_file() or self.outbox.stat().st_size == 0:
            return
        records = [Record.from_json_line(line) for line in self.outbox.read_text().splitlines() if line.strip()]
        logger.warning("replaying %d record(s) from outbox %s", len(records), self.outbox)
        pending = self.outbox.with_suffix(self.outbox.suffix + ".replaying")
        self.outbox.rename(pending)
        self.write(records)
        self.flush()
        pending.unlink()

    def write(self, records: list[Record]) -> None:
        """Send records (asynchronously; :meth:`flush` waits and checks delivery)."""
        for r in records:
            fut = self._producer.send(r.topic, key=r.key.encode(), value=r.value)
            self._inflight.append((r, fut))
        if len(self._inflight) > 1000:
            self.flush()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every sent record (at most ``timeout_s``, default ``cfg.flush_timeout_s``); records that failed
        go to the outbox.

        Raises:
            SinkError: If any record was not delivered (it is in the outbox, not lost).
        """
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s if timeout_s is not None else self.cfg.flush_timeout_s)
        except KafkaError as exc:  # a broker that went away: kafka-python gives up waiting with KafkaTimeoutError
            logger.warning("Kafka flush did not complete (%r); undelivered records go to the outbox", exc)
        failed = []
        for r, fut in self._inflight:
            try:
                fut.get(timeout=0)
                self.delivered += 1
            except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
                failed.append((r, exc))
        self._inflight = []
        if failed:
            with self.outbox.open("a", encoding="utf-8") as fh:
                fh.writelines(r.to_json_line() + "\n" for r, _ in failed)
            msg = (
                f"{len(failed)} record(s) not delivered to Kafka at {self.cfg.bootstrap_servers} "
                f"({failed[0][1]!r}); kept in outbox {self.outbox} for replay"
            )
            raise SinkError(msg)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush (see :meth:`flush`) and close the producer (records still undelivered are in the outbox by then)."""
        from kafka.errors import KafkaError

        try:
            self.flush(timeout_s)
        finally:
            try:
                self._producer.close(timeout=5)
            except KafkaError as exc:  # its own last flush timing out must not hide flush()'s SinkError
                logger.warning("Kafka producer did not close cleanly (%r)", exc)

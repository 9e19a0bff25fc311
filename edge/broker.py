"""The embedded MQTT broker: amqtt, started in-process, for the demo and small sites.

Production sites point ``mqtt.broker`` at Mosquitto, EMQX or any MQTT 3.1.1/5 broker; when it
says ``embedded`` the service (``edge run``, ``edge demo``) starts this one on
``mqtt.embedded_host:embedded_port`` (loopback by default) before its collectors.
Anonymous access, no TLS, no persistence across restarts of the process: for anything beyond
the demo and a single small compound use a real broker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

from edge.errors import EdgeError

log = logging.getLogger(__name__)


class BrokerError(EdgeError):
    """The embedded broker could not start or stop."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in *without* marking it anonymous.

    amqtt keeps QoS 1/2 messages for an offline persistent session only when the session is not
    anonymous, and its own AnonymousAuthPlugin marks every client anonymous when anonymous access
    is allowed: that would lose the positions published while the edge restarts.
    """

    async def authenticate(self, *, session: object) -> bool:
        return True

    @dataclass
    class Config:
        pass


class EmbeddedBroker:
    """``EmbeddedBroker(host, port)``: ``await start()``, ``.port``, ``.url``, ``await stop()``.

    ``port=0`` picks a free port (read it from ``.port`` after ``start``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._want_port = port
        self.port = port
        self._broker = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        self.port = self._want_port or free_port(self.host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "timeout_disconnect_delay": 0,
            "plugins": {"edge.broker.OpenAuthPlugin": {}},
        }
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as e:  # amqtt raises its own BrokerError and OSErrors
            self._broker = None
            raise BrokerError(f"embedded broker cannot start on {self.host}:{self.port}: {e}") from e
        log.info("embedded broker up host=%s port=%s", self.host, self.port)

    async def stop(self) -> None:
        if self._broker is None:
            return
        b, self._broker = self._broker, None
        try:
            await asyncio.wait_for(b.shutdown(), 10)
        except Exception as e:
            raise BrokerError(f"embedded broker did not stop cleanly: {e}") from e
        log.info("embedded broker down port=%s", self.port)

    async def __aenter__(self) -> "EmbeddedBroker":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

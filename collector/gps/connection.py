"""One MQTT connection on asyncio, through paho-mqtt's documented interfaces only.

paho-mqtt 2 documents two things this needs and aiomqtt 2 does not offer: manual
acknowledgement (``Client(manual_ack=True)``, then ``Client.ack(mid, qos)`` once the application
is done with a message) and the external event loop (``Client.socket()`` to watch,
``loop_read()`` when it is readable, ``loop_write()`` when it is writable and paho asked for it
through ``on_socket_register_write``, ``loop_misc()`` about once a second; ``on_socket_open`` and
``on_socket_close`` say when the socket comes and goes). aiomqtt drives paho the same way; here it
is done directly, so the collector acknowledges a message only after its outbox commit and reads
many packets per event-loop turn instead of one.

``MqttConnection`` keeps the messages paho hands over (``on_message``) in arrival order until the
collector takes them, and stops reading the socket while ``max_waiting`` wait (back-pressure: a
backlog stays in the broker, not in memory; paho holds at most one partial packet).
Everything runs on the event loop's thread, except ``connect``, which paho does blocking (TCP and
TLS handshake) and which therefore runs in a worker thread, as aiomqtt does too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import EdgeError

log = logging.getLogger(__name__)

PACKETS_PER_TURN = 256  # loop_read calls per readable event at most: commits and acks get their turn
MISC_INTERVAL_S = 1.0  # loop_misc: keepalive pings and their timeout, as paho's own loop does it


class MqttConnectionError(EdgeError):
    """The broker could not be reached, refused us, or the connection was lost."""


class Message:
    """A received PUBLISH: ``topic`` is None when it is not UTF-8 (a broker should refuse those)."""

    __slots__ = ("topic", "payload", "qos", "mid")

    def __init__(self, topic: str | None, payload: bytes, qos: int, mid: int) -> None:
        self.topic, self.payload, self.qos, self.mid = topic, payload, qos, mid


def paho_client(client_id: str, *, v5: bool = False, username: str | None = None, password: str | None = None,
                tls: ssl.SSLContext | None = None, timeout_s: float = 10.0) -> paho.Client:
    """A paho client for a persistent session with manual acknowledgement.

    Made once and connected again after each loss (``MqttConnection`` takes it): paho keeps a QoS 2
    message it answered with PUBREC until the broker's PUBREL, across reconnects of one client."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=None if v5 else False,  # MQTT 5: clean start off, in connect()
                    protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                    reconnect_on_failure=False, manual_ack=True)
    c.connect_timeout = timeout_s
    if username is not None:
        c.username_pw_set(username, password)
    if tls is not None:
        c.tls_set_context(tls)
    return c


class MqttConnection:
    """Connect, subscribe, receive and acknowledge on a paho ``Client``; ``close()`` once done.

    Usage: ``await connect()``, ``await subscribe(...)``, then ``await wait()`` / ``take(n)`` /
    ``ack(messages)`` until ``wait`` raises ``MqttConnectionError`` (connection lost), and
    ``await close()`` in every case. One instance per connection, over the same client each time:
    reconnecting is the caller's loop.
    """

    def __init__(self, client: paho.Client, host: str, port: int, *, keepalive_s: int = 30, timeout_s: float = 10.0,
                 session_expiry_s: int | None = None, max_waiting: int = 4000) -> None:
        self.host, self.port = host, port
        self.v5 = client.protocol == paho.MQTTv5
        self.keepalive_s, self.timeout_s = keepalive_s, timeout_s
        self.session_expiry_s = session_expiry_s
        self.max_waiting = max_waiting
        c = client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        self.client = c
        self.items: list[Message] = []  # received, not yet taken
        self.received = 0
        self.close_reason: str | None = None  # set once the connection is gone
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._socket: Any = None  # this connection's socket (the client is reused: later ones are not ours)
        self._fd = -1  # the socket being watched
        self._reading = False
        self._paused = False
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._subscribes: dict[int, asyncio.Future[list]] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._misc: asyncio.Task | None = None

    # -- the caller's side ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def connect(self) -> None:
        """TCP (and TLS) in a worker thread, then the CONNACK; ``MqttConnectionError`` if refused."""
        props = None
        if self.v5 and self.session_expiry_s is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
        kw: dict[str, Any] = {"clean_start": False, "properties": props} if self.v5 else {}
        connecting = self._loop.run_in_executor(
            None, lambda: self.client.connect(self.host, self.port, self.keepalive_s, **kw))
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # the thread goes on: close whatever it opens once it is done
            connecting.add_done_callback(lambda f: self._abort("cancelled while connecting"))
            raise
        except (OSError, ValueError) as e:  # refused, unreachable, TLS handshake, bad host
            self._set_closed(f"{type(e).__name__}: {e}")
            raise MqttConnectionError(f"cannot connect to {self.host}:{self.port}: {e}") from None
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt:misc")
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), self.timeout_s)
        except TimeoutError:
            self._abort("no CONNACK")
            raise MqttConnectionError(f"{self.host}:{self.port}: no CONNACK within {self.timeout_s} s") from None

    async def subscribe(self, topic: str, qos: int, timeout_s: float) -> None:
        """Subscribe and wait for the SUBACK; ``MqttConnectionError`` if the broker refuses it."""
        rc, mid = self.client.subscribe(topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttConnectionError(f"subscribe {topic!r}: {paho.error_string(rc)}")
        fut = self._subscribes[mid] = self._loop.create_future()
        try:
            done, _ = await asyncio.wait([fut, self._closed], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._subscribes.pop(mid, None)
        if fut not in done:
            raise MqttConnectionError(f"subscribe {topic!r}: " + (self.close_reason or f"no SUBACK within {timeout_s} s"))
        refused = [rc for rc in fut.result() if rc.is_failure]
        if refused:
            raise MqttConnectionError(f"subscribe {topic!r} refused: {refused[0]}")

    async def wait(self, *tasks: asyncio.Future | None) -> None:
        """Until a message waits, one of ``tasks`` is done, or the connection is gone (raises)."""
        if not self.items and not self._closed.done():
            w = self._waiter = self._loop.create_future()
            try:
                others = [t for t in tasks if t is not None and not t.done()]
                await asyncio.wait([w, self._closed, *others], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiter = None
                w.cancel()
        if not self.items and self._closed.done():
            raise MqttConnectionError(self.close_reason or "disconnected")

    def take(self, n: int) -> list[Message]:
        """The oldest ``n`` waiting messages (all if fewer), in arrival order."""
        items = self.items
        if len(items) <= n:
            self.items = []
        else:
            self.items, items = items[n:], items[:n]
        if self._paused and len(self.items) < self.max_waiting // 2:
            self._resume()
        return items

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge each QoS 1 message (PUBACK), in the order given: MQTT wants them in the order
        the messages came. Nothing happens once closed: the broker redelivers what was not
        acknowledged when the session resumes. (QoS 2 is completed on arrival: see ``_on_message``.)"""
        if self._closed.done():
            return
        ack = self.client.ack
        for m in messages:
            if m.qos == 1:
                ack(m.mid, 1)

    async def close(self, timeout_s: float = 5.0) -> None:
        """DISCONNECT (the broker keeps the session), or drop the socket if that does not go out."""
        if not self._closed.done() and self.client.is_connected():
            self._stop_reading()  # nothing more is taken: what is not acknowledged comes again
            self.client.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self._closed), timeout_s)
            except TimeoutError:
                pass
        self._abort("closed")

    # -- paho's callbacks (event-loop thread, except the socket ones during connect) -------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(MqttConnectionError(f"{self.host}:{self.port} refused the connection: {reason}"))
            self._connack.exception()  # retrieved here: connect() raises it or the close does
        else:
            self._connack.set_result(None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._set_closed(f"disconnected: {reason}")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        fut = self._subscribes.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(list(reasons))

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        self.items.append(Message(topic, msg.payload, msg.qos, msg.mid))
        self.received += 1
        if msg.qos == 2:
            # paho answered the PUBLISH with PUBREC already and delivers it on the PUBREL: the broker
            # will not send it again whatever we do. Completing it later would only leave an id the
            # broker waits on forever if the connection dropped first (paho, manual ack, does not
            # complete a PUBREL it has no message for).
            client.ack(msg.mid, 2)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._socket = sock
        self._call(self._watch, sock.fileno())

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._call(self._unwatch, sock.fileno())

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._call(self._want_write, sock.fileno())

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._call(self._no_write, sock.fileno())

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)
        else:  # paho's connect() in the worker thread
            self._loop.call_soon_threadsafe(fn, *args)

    # -- the socket (event-loop thread) ---------------------------------------------------------
    def _watch(self, fd: int) -> None:
        if self._closed.done():
            return
        self._fd = fd
        self._reading = True
        if not self._paused:
            self._loop.add_reader(fd, self._on_readable)

    def _unwatch(self, fd: int) -> None:
        if fd == self._fd and fd >= 0:  # never another socket's: the number may be in use again
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
            self._fd = -1
            self._reading = False

    def _want_write(self, fd: int) -> None:
        if fd == self._fd and fd >= 0 and not self._closed.done():
            self._loop.add_writer(fd, self._on_writable)

    def _no_write(self, fd: int) -> None:
        if fd == self._fd and fd >= 0:
            self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        """Packets while they come and the inbox has room, up to ``PACKETS_PER_TURN``.

        ``loop_read`` reads one packet at most and says nothing of what it read: a call that
        delivers no message (the socket is drained, a packet is incomplete, or it was another
        packet) ends the turn; the selector calls again while bytes are there."""
        client, before = self.client, self.received
        try:
            for _ in range(PACKETS_PER_TURN):
                n = self.received
                if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    break  # paho closed the connection and told on_disconnect
                if self.received == n:
                    sock = client.socket()
                    # TLS: the ssl object may hold decrypted bytes the selector cannot see
                    if isinstance(sock, ssl.SSLSocket) and sock.pending():
                        continue
                    break
                if len(self.items) >= self.max_waiting:
                    self._pause()
                    break
        except Exception as e:  # a broken socket or a bug: end this connection, the caller reconnects
            log.debug("mqtt read failed", exc_info=True)
            self._abort(f"read failed: {type(e).__name__}: {e}")
        if self.received != before:
            self._wake()

    def _on_writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as e:
            self._abort(f"write failed: {type(e).__name__}: {e}")

    def _pause(self) -> None:
        self._paused = True
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)

    def _resume(self) -> None:
        self._paused = False
        if self._reading and self._fd >= 0 and not self._closed.done():
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._read_if_open)  # bytes TLS decrypted already: no readable event for them

    def _read_if_open(self) -> None:
        if self._reading and not self._paused and not self._closed.done():
            self._on_readable()

    def _stop_reading(self) -> None:
        self._paused = True
        self._reading = False
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _misc_loop(self) -> None:
        while not self._closed.done() and self.client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(MISC_INTERVAL_S)

    def _set_closed(self, reason: str) -> None:
        if not self._closed.done():
            self.close_reason = reason
            self._closed.set_result(None)
        if not self._connack.done():
            self._connack.set_exception(MqttConnectionError(f"{self.host}:{self.port}: {reason} before CONNACK"))
            self._connack.exception()
        self._wake()

    def _abort(self, reason: str) -> None:
        """Stop watching this connection's socket and close it, whatever paho's state."""
        self._set_closed(reason)
        self._stop_reading()
        self._unwatch(self._fd)
        sock = self._socket
        if sock is not None and self.client.socket() is sock:  # paho still holds it: it has not closed it
            sock.close()  # paho closes it (again, harmlessly) when it next connects
        if self._misc is not None and not self._misc.done():
            self._misc.cancel()

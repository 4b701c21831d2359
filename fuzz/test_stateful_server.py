"""A hypothesis state machine against a live ``livenotify serve``.

It opens TCP and WebSocket connections, subscribes, unsubscribes, registers,
publishes in both forms, sends garbage, drops connections without a
goodbye and comes back resuming from the last notification it saw, while
keeping a model of who is subscribed to what and of the log (every
notification's offset). After every step it checks that each connection
received exactly what the model says: every notification to exactly the
model's subscribers, once, in offset order, with its offset; after a
resume, exactly the notifications it missed (``recovered`` true), then live
ones; every bad input its error code; nothing else. Completion is known by
a ping round trip on each connection: the server queues replies and
notifications on one per-connection queue, so the pong comes after anything
queued before it.

One server serves the whole module; every example tears its connections
down and then checks, through the console ``stats``, that the server is back
to zero connections and zero subscriptions.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fuzz.profiles import stateful_settings
from fuzz.rawclients import Closed, Conn, TcpConn, WsConn
from fuzz.strategies import deep_json, json_values
from livenotify import protocol
from livenotify.config import Limits
from tests.helpers import ServerProcess, running_server

CATALOG = ("a", "b", "c")
#: Names a client may try: the catalog, "everything", and one unknown.
NAMES = (*CATALOG, "*", "zzz")
#: Small, so over-long input is cheap to send.
MAX_MESSAGE_BYTES = 4096
LIMITS = Limits(max_message_bytes=MAX_MESSAGE_BYTES)
#: Connections open at once: enough for fan-out, few enough that every
#: step's ping round trip on each stays cheap.
MAX_PEERS = 5
#: Bound on waiting for the server to notice a disconnect.
SETTLE_TIMEOUT = 10.0
HEX_ID = re.compile(r"[0-9a-f]{32}")
POSITION = re.compile(r"([0-9a-f]{8}):(\d+)")
#: Departed connections remembered for a resume.
MAX_DEPARTED = 4
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
STATS = r"^connections=(\d+) subscribers=(\d+) "


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    args = ("--events", ",".join(CATALOG), "--rate-limit", "0", "--no-worker",
            "--max-message-bytes", str(MAX_MESSAGE_BYTES))  # fmt: skip
    with running_server(*args) as srv:
        yield srv


@dataclass
class Peer:
    """One live connection and what the model says about it."""

    name: str
    conn: Conn
    #: Everything it is subscribed to (the hub's view).
    subs: set[str]
    #: What it subscribed to by message (what ``registered`` reports).
    explicit: set[str] = field(default_factory=set)
    #: Messages owed to it since the last sync, in order (normalised).
    expected: list[Any] = field(default_factory=list)
    #: The offset of the last notification it received (or the head when it
    #: connected): where a resume starts.
    last: int = 0


@dataclass(frozen=True)
class Departed:
    """A connection that went away: what it had and where it got to."""

    subs: frozenset[str]
    last: int


def normalise(obj: dict[str, Any], ids: dict[int, set[str]] | None = None, epoch: str = "") -> Any:
    """A received message in the form the model predicts it; notification ids
    are collected into ``ids`` by the ``seq`` the machine put in each, and
    every notification is of ``epoch``."""
    kind = obj.get("type")
    if kind == "error":
        assert obj["code"] in protocol.ERROR_CODES and isinstance(obj["message"], str)
        count = obj.get("count", 1)
        assert isinstance(count, int) and count >= 1, obj
        return ("error", obj["code"], count)
    if kind == "published":
        assert HEX_ID.fullmatch(obj["id"]), obj
        return ("published", obj["event"], obj["delivered"], obj["id"], obj["offset"])
    if kind in CATALOG:
        body = dict(obj)
        notification_id = body.pop("id")
        assert HEX_ID.fullmatch(notification_id), obj
        assert TIMESTAMP.fullmatch(body.pop("timestamp")), obj
        assert body.pop("epoch") == epoch, obj
        offset = body.pop("offset")
        if ids is not None:
            seq = body["seq"] if "seq" in body else body["data"]["seq"]
            ids.setdefault(seq, set()).add(notification_id)
        return ("notification", body, offset)
    return obj


def merged(items: list[Any]) -> list[Any]:
    """``items`` with each run of errors of one code as one ("error", code,
    count): the server answers a run of refusals with one error and a count
    (how it splits a run over errors depends on timing)."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, tuple) and item[0] == "error":
            count = item[2] if len(item) > 2 else 1
            if out and out[-1][0:2] == ("error", item[1]):
                out[-1] = ("error", item[1], out[-1][2] + count)
                continue
            item = ("error", item[1], count)
        out.append(item)
    return out


def oracle_code(text: str, kind: str) -> str | None:
    """The error code the contract gives ``text`` on transport ``kind``, or
    None if it is not an error (or sends nothing, like a blank TCP line)."""
    try:
        if kind == "ws":
            protocol.decode_client(text, CATALOG, LIMITS)
        else:
            stripped = text.strip()
            if not stripped:
                return None
            if stripped[0] in "{[":
                protocol.decode_client(stripped, CATALOG, LIMITS)
            else:
                protocol.decode_command(stripped, LIMITS)
    except protocol.ProtocolError as exc:
        return exc.code
    return None


# Inputs that must get exactly this error and leave the connection open.
GARBAGE: list[tuple[str, str]] = [
    ("{", protocol.INVALID_JSON),
    ('{"type":"ping","x":NaN}', protocol.INVALID_JSON),
    ("[1,2]", protocol.INVALID_MESSAGE),
    ('{"type":1}', protocol.INVALID_MESSAGE),
    ('{"type":"nope"}', protocol.UNKNOWN_TYPE),
    ('{"type":"*","data":1}', protocol.UNKNOWN_TYPE),
    ('{"type":"subscribe","events":["bad name"]}', protocol.INVALID_EVENT),
    ('{"type":"subscribe","events":"zzz"}', protocol.UNKNOWN_EVENT),
    ('{"type":"subscribe","events":{"a":1}}', protocol.INVALID_MESSAGE),
    ('{"type":"publish","event":"a","message":5}', protocol.INVALID_MESSAGE),
    ('{"type":"publish","data":{}}', protocol.INVALID_EVENT),
    ('{"type":"register","email":"nope"}', protocol.INVALID_EMAIL),
    ('{"type":"register","email":"' + "u" * 250 + '@ex.io"}', protocol.INVALID_EMAIL),
    ('{"type":"ping","x":' + deep_json(40) + "}", protocol.JSON_TOO_DEEP),
    (json.dumps({"type": "subscribe", "events": ["a"] * 101}), protocol.TOO_MANY_EVENTS),
    ('{"type":"ping","y":"\x00"}', protocol.NUL_BYTE),
    ('{"type":"ping","x":"\\u0000 is a NUL too"}', protocol.NUL_BYTE),
    ('{"type":"register","email":"<evil@example.com>"}', protocol.INVALID_EMAIL),
    ('{"type":"register","email":"ana\u202e@example.com"}', protocol.INVALID_EMAIL),
]
TCP_GARBAGE: list[tuple[bytes, str]] = [
    (b"flibble", protocol.UNKNOWN_COMMAND),
    (b"events now", protocol.UNKNOWN_COMMAND),
    (b"subscribe", protocol.INVALID_MESSAGE),
    (b"register a@b.io c@d.io", protocol.INVALID_EMAIL),
    (b"\xff\xfe{}", protocol.INVALID_UTF8),
    (b"ping\x00", protocol.NUL_BYTE),
    (b"x" * (MAX_MESSAGE_BYTES + 1), protocol.MESSAGE_TOO_LARGE),
    # The CR of a CRLF does not count toward the limit.
    (b"x" * MAX_MESSAGE_BYTES + b"\r", protocol.UNKNOWN_COMMAND),
    (b'{"type":"ping","pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}', protocol.MESSAGE_TOO_LARGE),
]
random_text = st.text(max_size=40).filter(lambda t: "\n" not in t)


@dataclass(frozen=True)
class PublishItem:
    event: str
    seed_form: bool
    value: Any
    message: str | None


publish_items = st.builds(
    PublishItem,
    event=st.sampled_from(NAMES),
    seed_form=st.booleans(),
    value=json_values(),
    message=st.none() | st.text(max_size=10),
)


class LiveServerMachine(RuleBasedStateMachine):
    """Drives one live server; the model is :attr:`peers`."""

    #: Set on a per-test subclass (hypothesis builds machines from a class).
    SERVER: ServerProcess

    def __init__(self) -> None:
        super().__init__()
        self.server = self.SERVER
        self.peers: dict[str, Peer] = {}
        self.counter = 0
        self.run_id = uuid.uuid4().hex[:8]
        #: seq -> ids seen on notifications carrying it (one id per publish).
        self.ids: dict[int, set[str]] = {}
        #: The log: its epoch and head (learnt from the first welcome), and
        #: this example's notifications as (offset, event, body).
        self.epoch = ""
        self.head = -1
        self.log: list[tuple[int, str, Any]] = []
        self.departed: list[Departed] = []
        # The previous example's teardown left the server empty.
        self.settle()

    # -- helpers ---------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def pick(self, index: int) -> Peer:
        return self.peers[sorted(self.peers)[index % len(self.peers)]]

    def sync(self, peer: Peer) -> None:
        """Ping; everything read before the pong must be exactly what is owed."""
        peer.conn.send_text('{"type":"ping"}')
        got: list[Any] = []
        while True:
            try:
                obj = peer.conn.recv()
            except (Closed, TimeoutError) as exc:
                raise AssertionError(
                    f"{peer.name}: {exc!r} after {got}; expected {peer.expected}\n"
                    f"server log:\n{self.server.log_text()}"
                ) from None
            if obj.get("type") == "pong":
                assert TIMESTAMP.fullmatch(obj["timestamp"]), obj
                break
            got.append(self.normalise(peer, obj))
        assert merged(got) == merged(peer.expected), (
            f"{peer.name}: got {got}, expected {peer.expected}"
        )
        peer.expected.clear()

    def sync_all(self) -> None:
        for peer in list(self.peers.values()):
            self.sync(peer)

    def settle(self) -> None:
        """Wait until the server's counts match the model (disconnects are async)."""
        want = (len(self.peers), sum(len(p.subs) for p in self.peers.values()))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            m = self.server.command("stats", STATS)
            got = (int(m.group(1)), int(m.group(2)))
            if got == want:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stats say connections,subscribers={got}, model says {want}\n"
                    f"server log:\n{self.server.log_text()}"
                )
            time.sleep(0.02)  # polling a counter; there is no event to await

    def normalise(self, peer: Peer, obj: dict[str, Any]) -> Any:
        item = normalise(obj, self.ids, self.epoch)
        if isinstance(item, tuple) and item[0] == "notification":
            peer.last = item[2]
        return item

    def welcome(self, conn: Conn) -> None:
        """Read the welcome: its position is the model's head."""
        welcome = conn.recv()
        m = POSITION.fullmatch(welcome.pop("position"))
        assert m is not None and welcome == {"type": "welcome", "events": list(CATALOG)}
        if self.head < 0:
            self.epoch, self.head = m.group(1), int(m.group(2))
        assert (m.group(1), int(m.group(2))) == (self.epoch, self.head)

    def add(
        self, conn: Conn, subs: set[str], owed: list[Any], *, welcomed: bool = False,
        explicit: set[str] | None = None,
    ) -> None:  # fmt: skip
        if not welcomed:
            self.welcome(conn)
        peer = Peer(self.fresh(conn.kind), conn, subs, explicit or set(), owed, self.head)
        self.peers[peer.name] = peer
        # The ping also proves the initial subscriptions are in place.
        self.sync(peer)

    def drop(self, peer: Peer) -> None:
        del self.peers[peer.name]
        self.departed = [*self.departed, Departed(frozenset(peer.subs), peer.last)]
        self.departed = self.departed[-MAX_DEPARTED:]
        self.settle()

    def missed(self, subs: frozenset[str], after: int) -> list[Any]:
        """What the model's log holds for ``subs`` after offset ``after``."""
        return [
            ("notification", body, offset)
            for offset, event, body in self.log
            if offset > after and (event in subs or "*" in subs)
        ]

    # -- connections -----------------------------------------------------------

    @precondition(lambda self: len(self.peers) < MAX_PEERS)
    @rule()
    def connect_tcp(self) -> None:
        self.add(TcpConn(self.server.tcp_port), set(), [])

    @precondition(lambda self: len(self.peers) < MAX_PEERS)
    @rule(query=st.sampled_from(["", "?events=a,b", "?events=c", "?events=a,zzz", "?events=*"]))
    def connect_ws(self, query: str) -> None:
        if not query:
            subs, owed = {"*"}, []
        else:
            names = query.removeprefix("?events=").split(",")
            subs = {n for n in names if n != "zzz"}
            owed = [("error", protocol.UNKNOWN_EVENT)] if "zzz" in names else []
        self.add(WsConn(self.server.ws_port, "/" + query), subs, owed)

    @precondition(lambda self: self.departed and len(self.peers) < MAX_PEERS)
    @rule(index=st.integers(0, MAX_DEPARTED - 1), transport=st.sampled_from(["tcp", "ws"]))
    def resume(self, index: int, transport: str) -> None:
        """A departed connection comes back from where it got to: exactly
        what its events missed is replayed, then it is live again."""
        gone = self.departed.pop(index % len(self.departed))
        subs = sorted(gone.subs) or ["a"]
        since = f"{self.epoch}:{gone.last}"
        missed = self.missed(frozenset(subs), gone.last)
        reply = {"type": "subscribed", "events": subs, "recovered": True,
                 "replayed": len(missed), "position": f"{self.epoch}:{self.head}"}  # fmt: skip
        conn: Conn
        if transport == "ws":
            conn = WsConn(self.server.ws_port, f"/?events={','.join(subs)}&since={since}")
            self.welcome(conn)
        else:
            conn = TcpConn(self.server.tcp_port)
            self.welcome(conn)
            conn.send({"type": "subscribe", "events": subs, "since": since})
        # Subscribed by message over TCP (what a later ``registered`` lists).
        explicit = set(subs) if transport == "tcp" else set()
        self.add(conn, set(subs), [reply, *missed], welcomed=True, explicit=explicit)

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1))
    def disconnect_abruptly(self, index: int) -> None:
        peer = self.pick(index)
        peer.conn.close_abruptly()
        self.drop(peer)

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1), command=st.sampled_from(["json", "exit", "quit"]))
    def leave(self, index: int, command: str) -> None:
        peer = self.pick(index)
        conn = peer.conn
        if isinstance(conn, TcpConn):
            conn.send_text('{"type":"exit"}' if command == "json" else command)
            assert conn.recv() == {"type": "goodbye", "reason": "exit"}
            with pytest.raises(Closed):
                conn.recv()
        else:
            conn.send_text('{"type":"exit"}')
            with pytest.raises(Closed) as info:
                conn.recv()
            assert info.value.code == 1000, info.value
        conn.close()
        self.drop(peer)

    # -- subscriptions ---------------------------------------------------------

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, MAX_PEERS - 1),
        events=st.lists(st.sampled_from(NAMES), max_size=4),
        unsubscribe=st.booleans(),
        as_command=st.booleans(),
    )
    def change_subscriptions(
        self, index: int, events: list[str], unsubscribe: bool, as_command: bool
    ) -> None:
        peer = self.pick(index)
        verb = "unsubscribe" if unsubscribe else "subscribe"
        if as_command and peer.conn.kind == "tcp" and events:
            peer.conn.send_text(" ".join([verb, *events]))
        else:
            peer.conn.send({"type": verb, "events": events})
        if unsubscribe:
            peer.subs -= set(events)
            peer.explicit -= set(events)
            peer.expected.append({"type": "unsubscribed", "events": sorted(peer.subs)})
        elif "zzz" in events:
            peer.expected.append(("error", protocol.UNKNOWN_EVENT))
        else:
            peer.subs |= set(events)
            peer.explicit |= set(events)
            peer.expected.append({"type": "subscribed", "events": sorted(peer.subs)})
        self.sync(peer)

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1), what=st.sampled_from(["events", "subscriptions"]))
    def ask(self, index: int, what: str) -> None:
        peer = self.pick(index)
        peer.conn.send({"type": what})
        listed = list(CATALOG) if what == "events" else sorted(peer.subs)
        peer.expected.append({"type": what, "events": listed})
        self.sync(peer)

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1))
    def register(self, index: int) -> None:
        peer = self.pick(index)
        # A new address every time: nothing stored to restore, so the reply
        # is exactly what this connection subscribed to by message.
        email = f"{self.fresh('u')}-{self.run_id}@example.com"
        peer.conn.send({"type": "register", "email": email})
        # running_server's --no-confirm: every address is confirmed at once.
        peer.expected.append({"type": "registered", "email": email,
                              "events": sorted(peer.explicit), "confirmed": True})  # fmt: skip
        self.sync(peer)

    # -- publishing ------------------------------------------------------------

    @precondition(lambda self: self.peers)
    @rule(
        index=st.integers(0, MAX_PEERS - 1),
        items=st.lists(publish_items, min_size=1, max_size=4),
    )
    def publish(self, index: int, items: list[PublishItem]) -> None:
        """Pipeline a few publishes from one connection, then check every inbox."""
        publisher = self.pick(index)
        replied: list[int] = []  # seqs of the publishes that get a "published" reply
        self.ids.clear()
        for item in items:
            seq = self.counter = self.counter + 1
            if item.seed_form:
                obj: dict[str, Any] = {"type": item.event, "seq": seq, "payload": item.value}
                if item.message is not None:
                    obj["message"] = item.message
                body = {k: v for k, v in obj.items()}
            else:
                data = {"seq": seq, "value": item.value}
                obj = {"type": "publish", "event": item.event, "data": data}
                body = {"type": item.event, "data": data}
                if item.message is not None:
                    obj["message"] = body["message"] = item.message
            publisher.conn.send(obj)
            if _has_nul(obj):
                # A NUL in any string, even sent as a \u0000 escape, is refused first.
                publisher.expected.append(("error", protocol.NUL_BYTE))
                continue
            if item.event not in CATALOG:
                if item.seed_form:
                    code = protocol.UNKNOWN_TYPE
                elif item.event == "*":
                    code = protocol.INVALID_EVENT
                else:
                    code = protocol.UNKNOWN_EVENT
                publisher.expected.append(("error", code))
                continue
            receivers = [
                p for p in self.peers.values()
                if (item.event in p.subs or "*" in p.subs)
                and not (item.seed_form and p is publisher)  # seed form relays to others
            ]  # fmt: skip
            self.head += 1
            self.log.append((self.head, item.event, body))
            for peer in receivers:
                peer.expected.append(("notification", body, self.head))
            if not item.seed_form:
                replied.append(seq)
                publisher.expected.append(
                    ("published", item.event, len(receivers), None, self.head)
                )
        self.check_inboxes(publisher, replied)

    def check_inboxes(self, publisher: Peer, replied: list[int]) -> None:
        """Sync everyone; one id per notification, the one ``published`` named."""
        # The reply's id is random: read the publisher first and adopt it.
        publisher.conn.send_text('{"type":"ping"}')
        got: list[Any] = []
        ids: list[str] = []
        while (obj := publisher.conn.recv()).get("type") != "pong":
            item = self.normalise(publisher, obj)
            if item[0] == "published":
                ids.append(item[3])
                item = (*item[:3], None, item[4])
            got.append(item)
        assert merged(got) == merged(publisher.expected), (
            f"{publisher.name}: got {got}, expected {publisher.expected}"
        )
        publisher.expected.clear()
        self.sync_all()
        assert all(len(seen) == 1 for seen in self.ids.values()), self.ids
        for seq, published_id in zip(replied, ids, strict=True):
            assert self.ids.get(seq, {published_id}) == {published_id}, (seq, self.ids)

    # -- bad input -------------------------------------------------------------

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1), case=st.sampled_from(GARBAGE))
    def garbage(self, index: int, case: tuple[str, str]) -> None:
        peer = self.pick(index)
        text, code = case
        peer.conn.send_text(text)
        peer.expected.append(("error", code))
        self.sync(peer)

    @precondition(lambda self: any(p.conn.kind == "tcp" for p in self.peers.values()))
    @rule(index=st.integers(0, MAX_PEERS - 1), case=st.sampled_from(TCP_GARBAGE))
    def tcp_garbage(self, index: int, case: tuple[bytes, str]) -> None:
        tcp = [p for p in self.peers.values() if isinstance(p.conn, TcpConn)]
        peer = tcp[index % len(tcp)]
        assert isinstance(peer.conn, TcpConn)
        data, code = case
        peer.conn.send_raw(data + b"\n")
        peer.expected.append(("error", code))
        self.sync(peer)

    @precondition(lambda self: self.peers)
    @rule(index=st.integers(0, MAX_PEERS - 1), text=random_text)
    def random_input(self, index: int, text: str) -> None:
        peer = self.pick(index)
        code = oracle_code(text, peer.conn.kind)
        if code is None:
            return  # a valid message or a blank line: the other rules model those
        peer.conn.send_text(text)
        peer.expected.append(("error", code))
        self.sync(peer)

    @precondition(lambda self: any(p.conn.kind == "ws" for p in self.peers.values()))
    @rule(index=st.integers(0, MAX_PEERS - 1), data=st.binary(max_size=20))
    def binary_frame(self, index: int, data: bytes) -> None:
        ws = [p for p in self.peers.values() if isinstance(p.conn, WsConn)]
        peer = ws[index % len(ws)]
        assert isinstance(peer.conn, WsConn)
        peer.conn.send_binary(data)
        peer.expected.append(("error", protocol.BINARY_FRAME))
        self.sync(peer)

    @precondition(lambda self: any(p.conn.kind == "ws" for p in self.peers.values()))
    @rule(index=st.integers(0, MAX_PEERS - 1))
    def oversized_frame(self, index: int) -> None:
        """A frame over the limit ends a WebSocket with 1009 (TCP: tcp_garbage)."""
        ws = [p for p in self.peers.values() if isinstance(p.conn, WsConn)]
        peer = ws[index % len(ws)]
        assert isinstance(peer.conn, WsConn)
        peer.conn.send_text('{"type":"ping","pad":"' + "x" * MAX_MESSAGE_BYTES + '"}')
        with pytest.raises(Closed) as info:
            while True:
                peer.conn.recv()
        assert info.value.code == 1009, info.value
        peer.conn.close()
        self.drop(peer)

    # -- invariants and teardown -------------------------------------------------

    @invariant()
    def nothing_owed(self) -> None:
        # Every rule syncs what it touched; nothing may be left unchecked.
        assert all(not p.expected for p in self.peers.values())

    def teardown(self) -> None:
        for peer in list(self.peers.values()):
            peer.conn.close_abruptly()
            del self.peers[peer.name]
        self.settle()  # zero connections and zero subscriptions left behind


def test_live_server_matches_model(server: ServerProcess) -> None:
    class Machine(LiveServerMachine):
        SERVER = server

    run_state_machine_as_test(Machine, settings=stateful_settings())


def _has_nul(value: object) -> bool:
    """Whether a NUL is in any string (key or value) of a JSON value."""
    # JSON text has backslashes only in escapes: with the escaped
    # backslashes taken out, any "\u0000" left is a NUL.
    return "\\u0000" in json.dumps(value).replace("\\\\", "")

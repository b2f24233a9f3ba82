"""A frame-level fuzzer against the real server process (issue 13).

Raw websocket and long-polling clients send seeded random streams of Engine.IO and
Socket.IO frames, all at once and interleaved: every packet type, reserved and unknown
event names, JSON that does not decode, binary attachments with wrong counts, oversize
messages, namespace disconnects and reconnects, and valid relays between the fuzzers.
A python-socketio bystander shares a video room, a study and a guide room with all of them.

Asserted: zero tracebacks in the server's log, and few lines; every fuzzing socket is
either alive and still served (its probe is acked) or really closed by the server (its
websocket closed, its long-poll session gone); the bystander received nothing but the
departures of sockets that really left; the server's RSS is back near its baseline with
the surviving fuzzers still connected.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from signaling.edge.server import LIFECYCLE_EVENTS
from tests.clients import Client, http_json
from tests.raw import RawPolling, event, ws_url
from tests.server import ServerProcess, running_server
from tests.signaling.test_slow_reader import rss

SEED = 1313
WS_FUZZERS = 60  # half of them also send what closes a connection
POLL_FUZZERS = 10
ATTACKERS = 4
FRAMES = 120
SURVIVOR_FRAMES = 70  # fewer refusals than the budget (100)
POSTS = 12
ROUNDS = 3
ROOM, STUDY, GUIDE = "fz-room", "fz-study", "fz-guide"
PROBE_ACK = 987654321
MAX_MESSAGE = 1_000_000

CLIENT_EVENTS = [
    "video:join-room", "video:leave-room", "video:offer", "video:answer",
    "video:ice-candidate", "video:toggle-audio", "video:toggle-video",
    "video:start-screen-share", "video:stop-screen-share", "video:chat", "create-room",
    "join-room", "offer", "answer", "ice-candidate", "presence:join-study", "join-study",
    "presence:leave-study", "leave-study", "message", "typing", "read", "notification-read",
    "pair:cancel",
]  # fmt: skip
# What the bystander may see: departures (of sockets that really left), nothing else.
DEPARTURES = {
    "video:user-left", "presence:user-offline", "user-offline", "member-left", "user-left",
}  # fmt: skip


def junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**63), 2**63)
    if kind == 3:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if kind == 4:
        return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 12)))
    if kind in (5, 6):
        return {
            "".join(rng.choices("abcxyz", k=rng.randint(1, 6))): junk(rng, depth + 1)
            for _ in range(rng.randint(0, 4))
        }
    return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def ack(rng: random.Random) -> str:
    return str(rng.randint(1, 10**6)) if rng.random() < 0.4 else ""


# Each maker returns frames sent back to back (a binary event and its attachments travel
# together); `peers` are the other fuzzers' session ids for valid relays.
def reserved_name(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    name = rng.choice([*sorted(LIFECYCLE_EVENTS), "connect", "disconnect"])
    auth = {"userId": "impersonated"} if rng.random() < 0.5 else junk(rng)
    return ["42" + ack(rng) + json.dumps([name, auth])]


def unknown_name(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    name = rng.choice(["", "*", "error", "__proto__", "x" * rng.randint(1, 300), "vídeo:chat"])
    return ["42" + ack(rng) + json.dumps([name, junk(rng)])]


def junk_payload(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    name = rng.choice(CLIENT_EVENTS)
    args = [junk(rng) for _ in range(rng.randint(0, 3))]
    if name in ("create-room", "join-room") and args and isinstance(args[0], str):
        args[0] = [args[0]]  # any string is a valid guide room id: a real join, not junk
    return ["42" + ack(rng) + json.dumps([name, *args])]


def relay(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    if not peers:
        return []
    target = rng.choice(peers)
    offer = {"type": "offer", "sdp": f"v=0\r\ns=fuzz-{rng.random()}\r\n", "x": junk(rng)}
    return [
        rng.choice(
            [
                event("video:offer", {"to": target, "offer": offer}),
                event("video:ice-candidate", {"to": target, "candidate": None}),
                event("offer", {"target": target, "offer": offer}),
            ]
        )
    ]


def undecodable(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    name = rng.choice(CLIENT_EVENTS)
    return [
        "42"
        + ack(rng)
        + rng.choice(
            [
                f'["{name}",{{"x":"\\ud83d"}}]',
                f'["{name}",' + "[" * rng.randint(1025, 3000) + "]" * 5,
                f'["{name}",NaN]',
                f'["{name}",{{"n":1e999}}]',
                f'["{name}",{{"a":',
                "[42,{}]",
                '{"a":1}',
                '"x"',
                "[]",
                "",
            ]
        )
    ]


def broken_socketio(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return [
        rng.choice(
            [
                "4" + rng.choice("789xyz!") + json.dumps(junk(rng)),
                '44{"message":"x"}',
                '45["a",{}]',
                "45" + str(rng.randint(11, 999)) + '-["a",{}]',
                "42" + "9" * rng.randint(16, 40) + '["pair:cancel",{}]',
                '40{"userId":',
            ]
        )
    ]


def broken_engineio(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return [rng.choice(["9", "x", "", "7abc", "b!!!", "4"])]


def engine_noise(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return [rng.choice(["2probe", "3", "5", "6", "0", "2"])]


def stray_ack(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return ["43" + str(rng.randint(0, 99)) + json.dumps([junk(rng)])]


def connect_again(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return [
        rng.choice(
            [
                '40{"userId":"impersonated"}',
                "40",
                "40[1,2]",
                '40/admin,{"userId":"x"}',
                '42/admin,["video:chat",{}]',
                "41/admin,",
            ]
        )
    ]


def reconnect(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    """A namespace DISCONNECT and a fresh CONNECT: a new session, in no room."""
    return ["41", '40{"userId":"' + f"fuzz-again-{rng.randint(0, 10**6)}" + '"}']


def binary(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    count = rng.randint(0, 12)
    name = rng.choice(["offer", "video:chat", "nope", "connect"])
    frames: list[str | bytes] = [
        "45" + str(count) + "-" + json.dumps([name, {"_placeholder": True, "num": 0}])
    ]
    for _ in range(rng.choice([count, count, max(count - 1, 0), count + 1])):
        frames.append(rng.randbytes(rng.randint(0, 64)))
    if rng.random() < 0.2:
        frames.insert(rng.randint(1, len(frames)), '42["pair:cancel",{}]')
    return frames


def binary_complete(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    """A binary event with exactly its attachments: refused, the connection lives."""
    count = rng.randint(1, 10)
    name = rng.choice(["offer", "video:chat", "nope", "connect"])
    placeholders = [{"_placeholder": True, "num": n} for n in range(count)]
    header = "45" + str(count) + "-" + json.dumps([name, *placeholders])
    return [header, *(rng.randbytes(rng.randint(0, 64)) for _ in range(count))]


def oversize(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    if rng.random() < 0.5:
        return ['42["video:chat",{"content":"' + "a" * (MAX_MESSAGE + 100) + '"}]']
    return [
        '452-["video:chat",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x00" * (MAX_MESSAGE // 2 + 100),
        b"\x01" * (MAX_MESSAGE // 2 + 100),
    ]


def engine_close(rng: random.Random, peers: list[str]) -> list[str | bytes]:
    return ["1"]


Maker = Callable[[random.Random, list[str]], list[str | bytes]]
CLOSERS = {broken_socketio, broken_engineio, oversize, engine_close, binary}
MAKERS: list[tuple[Maker, float]] = [
    (reserved_name, 10),
    (unknown_name, 8),
    (junk_payload, 20),
    (relay, 8),
    (undecodable, 10),
    (stray_ack, 3),
    (connect_again, 4),
    (engine_noise, 4),
    (binary, 3),
    (binary_complete, 3),
    (reconnect, 1),
    (broken_socketio, 0.8),
    (broken_engineio, 0.5),
    (oversize, 0.3),
    (engine_close, 0.2),
]


def stream(
    rng: random.Random, peers: list[str], count: int, closing: bool = True
) -> list[list[str | bytes]]:
    """`count` groups of frames; `closing` False leaves out what closes a connection."""
    chosen = [(m, w) for m, w in MAKERS if closing or m not in CLOSERS]
    makers, weights = zip(*chosen, strict=True)
    return [rng.choices(makers, weights)[0](rng, peers) for _ in range(count)]


@dataclass
class Fuzzer:
    """One raw websocket: its reader records acks, session ids and the server's close."""

    name: str
    ws: aiohttp.ClientWebSocketResponse
    sids: list[str] = field(default_factory=list)
    acks: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    closed_by_server: asyncio.Event = field(default_factory=asyncio.Event)
    left_namespace: bool = False
    sent: int = 0
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = str(message.data)
                if data == "2":
                    await self.ws.send_str("3")
                elif data.startswith("40{"):
                    self.sids.append(json.loads(data[2:])["sid"])
                elif match := re.match(r"43(\d+)\[", data):
                    future = self.acks.get(int(match.group(1)))
                    if future is not None and not future.done():
                        future.set_result(json.loads(data[2 + len(match.group(1)) :]))
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            pass
        self.closed_by_server.set()

    async def send_all(self, frames: list[list[str | bytes]]) -> None:
        for group in frames:
            for frame in group:
                if self.closed_by_server.is_set():
                    return
                try:
                    if isinstance(frame, bytes):
                        await self.ws.send_bytes(frame)
                    else:
                        await self.ws.send_str(frame)
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    return
                self.sent += 1
            if group and group[0] == "41":
                self.left_namespace = True
            await asyncio.sleep(0)  # interleave with the other fuzzers

    async def probe(self) -> bool:
        """True if the server still serves it (the probe's ack came back)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[PROBE_ACK] = future
        try:
            await self.ws.send_str(f'42{PROBE_ACK}["pair:cancel",{{}}]')
            reply = await asyncio.wait_for(asyncio.shield(future), 5)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        except TimeoutError:
            return False
        return bool(reply and reply[0].get("ok") is True)


async def open_fuzzer(http: aiohttp.ClientSession, url: str, name: str) -> Fuzzer:
    ws = await http.ws_connect(ws_url(url), autoping=True, max_msg_size=0)
    assert (await ws.receive_str()).startswith("0{")
    await ws.send_str('40{"userId":"' + name + '"}')
    reply = await ws.receive_str()
    assert reply.startswith("40{")
    fuzzer = Fuzzer(name, ws, sids=[json.loads(reply[2:])["sid"]])
    for n, (event_name, payload) in enumerate(
        [
            ("video:join-room", {"roomId": ROOM}),
            ("join-study", {"studyId": STUDY}),
            ("join-room", GUIDE),
        ]
    ):
        await ws.send_str(event(event_name, payload, ack=n + 1))
        while not (reply := await ws.receive_str()).startswith(f"43{n + 1}"):
            pass
        joined = json.loads(reply[3:])[0]
        assert joined.get("ok", joined.get("success")) is True, joined
    fuzzer.reader = asyncio.create_task(fuzzer.read())
    return fuzzer


async def poll_fuzzer(
    http: aiohttp.ClientSession, url: str, rng: random.Random, index: int
) -> tuple[bool, int]:
    """A long-polling session fed fuzz packets; (still served, packets sent).

    Each POST ends with an acked probe, so its GET always has an answer to collect.
    """
    poll = await RawPolling(http, url).open()
    await poll.connect({"userId": f"fuzz-poll-{index}"})
    sent = 0
    for n in range(POSTS):
        group = [f for f in stream(rng, [], 1)[0] if isinstance(f, str) and f]
        group = [f for f in group if f != "41" and not f.startswith("40")]
        probe_id = PROBE_ACK + n
        await poll.post(*group, f'42{probe_id}["pair:cancel",{{}}]')
        sent += len(group) + 1
        replies: list[str] = []
        while not any(r.startswith(f"43{probe_id}[") for r in replies):
            status, text = await poll.get()
            packets = text.split("\x1e") if status == 200 else []
            if status != 200 or "1" in packets:
                # Closed: the session must be gone for good.
                assert (await poll.get())[0] == 400, "a closed session still answers"
                return False, sent
            replies += packets
    return True, sent


async def attacker(http: aiohttp.ClientSession, url: str, index: int) -> bool:
    """The issue's memory attack: 1 MB attachments that never complete a packet."""
    ws = await http.ws_connect(ws_url(url), autoping=True)
    try:
        await ws.receive_str()
        await ws.send_str('40{"userId":"attacker-' + str(index) + '"}')
        await ws.receive_str()
        await ws.send_str('4510-["video:chat",{"_placeholder":true,"num":0}]')
        for _ in range(8):
            await ws.send_bytes(b"\x00" * (MAX_MESSAGE - 10))
    except (ConnectionError, RuntimeError, aiohttp.ClientError):
        pass

    async def until_closed() -> None:
        while (await ws.receive()).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            pass

    try:
        await asyncio.wait_for(until_closed(), 5)
    except TimeoutError:
        return False
    finally:
        await ws.close()
    return True


async def test_frame_fuzzer(capsys: Any) -> None:
    rng = random.Random(SEED)
    with tempfile.TemporaryFile() as log:
        async with running_server(
            ROOM_MODE="mesh",
            MAX_PARTICIPANTS="256",
            LOG_LEVEL="INFO",
            JWT_SECRET="",
            AUTH_VERIFY_URL="",
            stderr=log,
        ) as node:
            report = await fuzz(node, rng)
        log.seek(0)
        text = log.read().decode(errors="replace")
    lines = text.splitlines()
    tracebacks = sum("Traceback" in line for line in lines)
    warnings = [line for line in lines if " WARNING " in line and "signaling.edge" in line]
    report.update(tracebacks=tracebacks, log_lines=len(lines), edge_warnings=len(warnings))
    with capsys.disabled():
        print("\nframe fuzzer:", json.dumps(report))
    assert tracebacks == 0, "\n".join(lines[-60:])
    # One refusal line per connection per interval (the run is shorter) and one close line.
    assert len(warnings) <= 2 * report["connections"], warnings[:20]
    assert len(text) < 2_000_000


@dataclass
class Tally:
    inputs: int = 0
    websockets: int = 0
    closed: int = 0
    polling_sessions: int = 0
    polling_closed: int = 0
    bystander_departures: int = 0
    alive: list[Fuzzer] = field(default_factory=list)


async def fuzz(node: ServerProcess, rng: random.Random) -> dict[str, Any]:
    # No client-side cap on connections: the survivors of every round stay connected.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        bystander = await Client(node.url, "bystander").connect()
        tally = Tally()
        try:
            await bystander.call("create-room", GUIDE)
            await bystander.call("video:join-room", {"roomId": ROOM})
            await bystander.call("join-study", {"studyId": STUDY})
            baseline = peak = rss(node)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for round_ in range(ROUNDS):
                await fuzz_round(http, node, rng, round_, bystander, tally)
                peak = max(peak, rss(node))
            # The survivors of every round are still served, and still connected.
            for fuzzer in tally.alive:
                assert await fuzzer.probe(), f"{fuzzer.name} stopped being served"
            elapsed = loop.time() - started
            final = rss(node)
            _, health = await http_json("GET", node.url + "/health")
            alive_polls = tally.polling_sessions - tally.polling_closed
            assert health["connections"] == 1 + len(tally.alive) + alive_polls
            assert final - baseline < 40_000_000, (baseline, peak, final)
            return {
                "inputs": tally.inputs,
                "websockets": tally.websockets,
                "alive": len(tally.alive),
                "closed": tally.closed,
                "polling_sessions": tally.polling_sessions,
                "polling_closed": tally.polling_closed,
                "connections": tally.websockets + tally.polling_sessions + 1,
                "bystander_departures": tally.bystander_departures,
                "rss_mb": {
                    "baseline": round(baseline / 1e6, 1),
                    "peak": round(peak / 1e6, 1),
                    "final": round(final / 1e6, 1),
                },
                "seconds": round(elapsed, 2),
            }
        finally:
            for fuzzer in tally.alive:
                await fuzzer.ws.close()
            await bystander.close()


async def fuzz_round(
    http: aiohttp.ClientSession,
    node: ServerProcess,
    rng: random.Random,
    round_: int,
    bystander: Client,
    tally: Tally,
) -> None:
    fuzzers = [await open_fuzzer(http, node.url, f"fuzz-{round_}-{n}") for n in range(WS_FUZZERS)]
    # The joins' own events are what the bystander may have seen so far.
    await bystander.call("pair:cancel", {})
    for name in list(bystander.events):
        bystander.pending(name)
    sids = [f.sids[0] for f in fuzzers]
    streams = [
        stream(
            rng,
            [s for s in sids if s != f.sids[0]],
            FRAMES if n % 2 == 0 else SURVIVOR_FRAMES,
            closing=n % 2 == 0,
        )
        for n, f in enumerate(fuzzers)
    ]
    poll_rngs = [random.Random(rng.random()) for _ in range(POLL_FUZZERS)]
    sending = asyncio.gather(*(f.send_all(s) for f, s in zip(fuzzers, streams, strict=True)))
    polling = asyncio.gather(
        *(poll_fuzzer(http, node.url, r, round_ * 100 + n) for n, r in enumerate(poll_rngs))
    )
    attacking = asyncio.gather(*(attacker(http, node.url, n) for n in range(ATTACKERS)))
    await asyncio.gather(sending, polling, attacking)
    polls, attacks = polling.result(), attacking.result()
    assert all(attacks), "a memory attacker was not cut off"

    # Every websocket fuzzer: alive and served, or closed by the server.
    alive, closed = [], []
    for fuzzer in fuzzers:
        if not fuzzer.closed_by_server.is_set() and await fuzzer.probe():
            alive.append(fuzzer)
        else:
            await asyncio.wait_for(fuzzer.closed_by_server.wait(), 10)
            closed.append(fuzzer)

    # The bystander: the departures of those that left, nothing else, never twice.
    left = [*closed, *(f for f in alive if f.left_namespace)]
    gone = {sid for f in left for sid in f.sids} | {f.name for f in left}
    departures: list[tuple[str, Any]] = []

    async def all_departed() -> None:
        expected = {f.name for f in left}
        while not expected <= {p["userId"] for n, p in departures if n == "video:user-left"}:
            departures.append(("video:user-left", await bystander.next("video:user-left")))

    await asyncio.wait_for(all_departed(), 10)
    await bystander.call("pair:cancel", {})  # what was emitted before it has arrived
    for name in list(bystander.events):
        departures += [(name, payload) for payload in bystander.pending(name)]
    seen: Counter[tuple[str, str]] = Counter()
    for name, payload in departures:
        assert name in DEPARTURES, (name, payload)
        who = payload.get("socketId") or payload.get("userId")
        assert who in gone, (name, payload)
        seen[(name, who)] += 1
    assert all(n == 1 for key, n in seen.items() if key[0] == "video:user-left"), seen

    tally.inputs += sum(f.sent for f in fuzzers) + sum(p[1] for p in polls) + ATTACKERS * 10
    tally.websockets += WS_FUZZERS + ATTACKERS
    tally.closed += len(closed) + ATTACKERS
    tally.polling_sessions += POLL_FUZZERS
    tally.polling_closed += sum(1 for p in polls if not p[0])
    tally.bystander_departures += sum(seen.values())
    tally.alive += alive

"""Real networks: N Chromium pages of our web client in one room, the last one on a shaped link.

Pages A, B, C (``--pages`` minus one) run in a Chromium on the host; page D runs in a
second Chromium inside a network namespace (`devtools.netns`: a veth pair on a private /30,
the namespace's default route via the host end). The server (``python -m signaling``,
``ROOM_MODE=sfu`` or ``mesh``, one process) listens on the host end's address, which every
page reaches (D over the veth, A-C locally). D's link is set up before D joins:

* ``none``: D in the namespace, unshaped (the baseline of the same run);
* ``down<K>``: D's downlink held to K kbit/s (``tc tbf`` on the host end's egress);
* ``up<K>``: D's uplink held to K kbit/s (``tc tbf`` on D's end's egress);
* ``loss<P>``: P % of UDP dropped at random each way (nftables ``numgen random``);
* ``udp-blocked``: every UDP datagram to or from D dropped (signaling over TCP still works);
* several joined with ``+``, e.g. ``down300+loss5``.

Each case (mode x scenario x round) gets a fresh namespace, server and browsers. The run
waits until every page plays every other (``complete``; bounded by ``--setup-timeout``,
then measured anyway: what never played counts as 0 fps), warms up, then
samples every page's ``getStats()`` every ``--interval`` s over a ``--seconds`` window
(`benchmarks._pagestats`). Rows are medians over ``--rounds`` rounds.

The camera: Chromium's fake device at ``--camera-fps`` (15) and the client's default
profile (640x480, capped at 600 kbit/s in sfu rooms, no cap in mesh): the capture of the
issue-20 measurement. ``--resolution low`` uses ``?lowres=1`` (320x240 at 15 fps).

    python -m benchmarks.network --modes sfu,mesh \\
        --scenarios none,down300,up250,loss5,udp-blocked --rounds 3 --warmup 15 --seconds 30 \\
        --json benchmarks/results/network.json --markdown benchmarks/results/network.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from rich.console import Console
from rich.progress import Progress, TaskID

import devtools.server
from benchmarks import _pagestats, _report
from benchmarks._network_report import markdown, plot, table
from devtools.browser import CHROMIUM_ARGS, fake_camera, launch_chromium, secure_origins
from devtools.netns import DEFAULT_QUEUE_MS, Namespace, sweep_stale
from devtools.server import ServerExited

ROOT = Path(__file__).resolve().parent.parent
MODES = ("sfu", "mesh")
SCENARIOS = ("none", "down300", "up250", "loss5", "udp-blocked")
console = Console(stderr=True)


class BenchError(RuntimeError):
    """The server or the browsers did not behave; the case records the message."""


@dataclass(frozen=True)
class Scenario:
    """What D's link does: `name` parsed into namespace calls."""

    name: str
    steps: tuple[tuple[str, int], ...]

    def apply(self, ns: Namespace, queue_ms: float) -> None:
        for what, value in self.steps:
            if what == "down":
                ns.shape_downlink(value, latency_ms=queue_ms)
            elif what == "up":
                ns.shape_uplink(value, latency_ms=queue_ms)
            elif what == "loss":
                ns.drop_udp(value)
            elif what == "udp-blocked":
                ns.block_udp()


def scenario(text: str) -> Scenario:
    steps: list[tuple[str, int]] = []
    for part in text.split("+"):
        if part in ("none", "udp-blocked"):
            steps += [] if part == "none" else [("udp-blocked", 0)]
        elif m := re.fullmatch(r"(down|up)(\d+)", part):
            steps.append((m.group(1), int(m.group(2))))
        elif (m := re.fullmatch(r"loss(\d+)", part)) and int(m.group(1)) <= 100:
            steps.append(("loss", int(m.group(1))))
        else:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {part!r}: none, down<kbit/s>, up<kbit/s>, loss<percent>, "
                "udp-blocked, or several joined with +"
            )
    return Scenario(text, tuple(steps))


@dataclass
class Params:
    """One run's knobs, echoed into the JSON so a result says how it was made."""

    pages: int
    modes: list[str]
    scenarios: list[Scenario]
    rounds: int
    warmup: float
    seconds: float
    setup_timeout: float
    interval: float
    resolution: str
    camera_fps: int
    queue_ms: float
    root: Path = ROOT

    @property
    def names(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(self.pages)]


# ---------------------------------------------------------------- one case


def _cpu(pid: int) -> float:
    """CPU-seconds of a process and its children."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


class Sampler:
    """Every page's getStats() every `interval` s, in the background, from page open on.

    Each page has its own loop: a page whose renderer is starved (getStats() taking
    seconds on a saturated machine) delays only its own samples.
    """

    def __init__(self, pages: dict[str, Page], interval: float) -> None:
        self.pages = pages
        self.interval = interval
        self.samples: dict[str, list[_pagestats.Sample]] = {n: [] for n in pages}
        self.errors: dict[str, str] = {}  # the last failed sample of each page
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Sampler:
        self._tasks = [asyncio.create_task(self._run(name)) for name in self.pages]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                sample = await self.pages[name].evaluate(_pagestats.SAMPLE)
            except Exception as exc:  # a page that crashed or navigated: say so in the row
                self.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                self.samples[name].append({**sample, "wall": time.monotonic()})
                self.changed.set()
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def count(self) -> dict[str, int]:
        return {n: len(s) for n, s in self.samples.items()}

    def sees(self, viewer: str, owners: list[str]) -> bool:
        """Whether `viewer` has decoded video from every one of `owners`."""
        if not self.samples[viewer]:
            return False
        last = self.samples[viewer][-1]
        decoded = {e["owner"] for e in last["inbound"] if (e.get("framesDecoded") or 0) > 0}
        return set(owners) <= decoded

    async def until(self, holds: Callable[[], bool], timeout: float) -> bool:
        """Waits (bounded) for a condition on the samples; whether it held."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not holds():
                    self.changed.clear()
                    await self.changed.wait()
                return True
        return False


async def _open(context: BrowserContext, url: str, room: str, name: str, lowres: bool) -> Page:
    page = await context.new_page()
    query = {"room": room, "name": name, **({"lowres": "1"} if lowres else {})}
    await page.goto(f"{url}/?{urlencode(query)}")
    return page


@contextlib.asynccontextmanager
async def running_server(
    mode: str, address: str, root: Path
) -> AsyncIterator[devtools.server.ServerProcess]:
    """`python -m signaling` on `address` (the namespace's host end: every page reaches it,
    D over the veth, A-C locally), one process, history in memory."""
    env = {
        "HOST": address,
        "ROOM_MODE": mode,
        "MAX_PARTICIPANTS": "16",
        "DATABASE_URL": "memory",
        "MEDIA_WORKERS": "1",  # the server's CPU is this one process
    }
    try:
        async with devtools.server.running_server(env=env, cwd=root) as server:
            yield server
    except ServerExited as exc:
        raise BenchError(str(exc)) from None


async def run_case(
    pw: Playwright, mode: str, scen: Scenario, rnd: int, p: Params, progress: Progress, task: TaskID
) -> dict[str, Any]:
    """One room on a fresh namespace, server and browsers; what every page saw."""

    def step(what: str) -> None:
        progress.update(task, description=f"{mode} {scen.name} r{rnd}: {what}")

    async with Namespace() as ns:
        scen.apply(ns, p.queue_ms)
        async with running_server(mode, ns.host_address, p.root) as server:
            args = secure_origins(fake_camera(CHROMIUM_ARGS, fps=p.camera_fps), [server.url])
            async with (
                launch_chromium(pw, args=args) as host_browser,
                launch_chromium(pw, args=args, namespace=ns) as inside_browser,
            ):
                case = await _measure(
                    (host_browser, inside_browser), server, mode, scen.name, rnd, p, step
                )
        return {"link": ns.describe(), **case}


async def _measure(
    browsers: tuple[Browser, Browser],
    server: devtools.server.ServerProcess,
    mode: str,
    scenario_name: str,
    rnd: int,
    p: Params,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Opens the pages (the last one in the namespace's browser), waits for video, warms up
    and measures the window."""
    names = p.names
    host, inside = names[:-1], names[-1]
    room = f"net-{mode}-{scenario_name}-{rnd}-{int(time.time() * 1000)}"
    pages: dict[str, Page] = {}
    opened: dict[str, float] = {}
    step("joining")
    started = time.monotonic()
    for name in names:
        browser = browsers[1] if name == inside else browsers[0]
        context = await browser.new_context(viewport={"width": 1000, "height": 620})
        pages[name] = await _open(context, server.url, room, name, p.resolution == "low")
        opened[name] = time.monotonic()
    async with Sampler(pages, p.interval) as sampler:
        step("waiting for video")
        complete = await sampler.until(
            lambda: all(sampler.sees(v, [o for o in names if o != v]) for v in names),
            started + p.setup_timeout - time.monotonic(),
        )
        # What did not play by now is measured as it is (0 fps), not waited for.
        host_complete = all(sampler.sees(v, [o for o in host if o != v]) for v in host)
        setup_s = time.monotonic() - started
        modes = {await pg.evaluate("window.__call.state.mode") for pg in pages.values()}
        if modes != {mode}:
            raise BenchError(f"pages report room mode {sorted(map(str, modes))}")
        step("warm-up")
        await asyncio.sleep(p.warmup)
        step("measuring")
        w0 = sampler.count()
        cpu0, busy0, t0 = _cpu(server.pid), _report.machine_busy_s(), time.monotonic()
        await asyncio.sleep(p.seconds)
        await sampler.until(lambda: all(n > w0[k] + 1 for k, n in sampler.count().items()), 10)
        cpu1, busy1, t1 = _cpu(server.pid), _report.machine_busy_s(), time.monotonic()
        load = os.getloadavg()[0]
        samples = {n: list(s) for n, s in sampler.samples.items()}
        errors = dict(sampler.errors)
    for pg in pages.values():
        with contextlib.suppress(Exception):
            await pg.context.close()
    elapsed = t1 - t0
    per_page: dict[str, Any] = {}
    for name in names:
        window = samples[name][w0[name] :]
        where = "namespace" if name == inside else "host"
        if len(window) < 2:  # its renderer starved: what it saw is unknown, not zero
            why = errors.get(name, "getStats() did not answer in the window")
            per_page[name] = {"where": where, "stalled": why, "video": {}, "audio": {}, "sent": {}}
            continue
        walls = {o: opened[o] - opened[name] for o in names}
        first = _pagestats.first_frames(
            [{**s, "t": s["wall"] - opened[name]} for s in samples[name]],
            {o: max(0.0, w) for o, w in walls.items()},
        )
        per_page[name] = {
            "where": where,
            "first_frame_s": first,
            **_pagestats.window_stats(window),
        }
    server_cpu = (cpu1 - cpu0) / elapsed
    return {
        "mode": mode,
        "scenario": scenario_name,
        "round": rnd,
        "complete": complete,
        "host_complete": host_complete,
        "stalled_pages": [n for n, pg in per_page.items() if "stalled" in pg],
        "setup_s": round(setup_s, 1),
        "window_s": round(elapsed, 1),
        "server_cpu_s_per_s": round(server_cpu, 3),
        "other_cpu_s_per_s": round(max(0.0, (busy1 - busy0) / elapsed - server_cpu), 2),
        "load_avg_1m": round(load, 2),
        "pages": per_page,
        "groups": groups(per_page, host, inside),
    }


# ---------------------------------------------------------------- the figures of a case


def _streams(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> list[dict[str, Any]]:
    """The streams `viewers` decoded from `owners` (pages that stalled are left out)."""
    return [
        pages[v]["video"][o] for v in viewers for o in owners if o != v and o in pages[v]["video"]
    ]


def _expected(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> int:
    """How many streams `viewers` that did not stall should have decoded from `owners`."""
    return sum(1 for v in viewers if "stalled" not in pages[v] for o in owners if o != v)


def _video(streams: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """One direction's streams in a few numbers (a missing stream counts as 0 fps)."""
    if not expected:  # every viewer stalled: unknown, not zero
        return {"streams": 0, "streams_expected": 0}
    if not streams:
        return {"streams": 0, "streams_expected": expected, "fps_median": 0.0, "fps_min": 0.0}
    sizes = Counter(f"{s['width']}x{s['height']}" for s in streams)
    lost = [s["loss_percent"] for s in streams if s["loss_percent"] is not None]
    return {
        "streams": len(streams),
        "streams_expected": expected,
        "fps_median": statistics.median(
            [s["fps_median"] for s in streams] + [0.0] * (expected - len(streams))
        ),
        "fps_min": 0.0 if len(streams) < expected else min(s["fps_min"] for s in streams),
        "size": sizes.most_common(1)[0][0],
        "kbps": statistics.median(s["kbps"] for s in streams),
        "loss_percent": max(lost) if lost else None,
        "freezes": sum(s["freezes"] for s in streams),
        "freeze_s": round(sum(s["freeze_s"] for s in streams), 1),
        "nacks": sum(s["nacks_sent"] for s in streams),
        "plis": sum(s["plis_sent"] for s in streams),
    }


def _concealed(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> float | None:
    """Concealed share of the audio samples `viewers` played from `owners`, pooled."""
    got = [
        pages[v]["audio"][o] for v in viewers for o in owners if o != v and o in pages[v]["audio"]
    ]
    total = sum(a["samples"] for a in got)
    concealed = sum(a["concealed_samples"] for a in got)
    return round(100 * concealed / total, 2) if total else None


def groups(pages: dict[str, Any], host: list[str], inside: str) -> dict[str, Any]:
    """The headline figures: A-C among themselves, A-C seeing D, D seeing A-C, senders."""

    def video(viewers: list[str], owners: list[str]) -> dict[str, Any]:
        return _video(_streams(pages, viewers, owners), _expected(pages, viewers, owners))

    def first_frame(viewers: list[str], owners: list[str]) -> float | None:
        """The slowest first frame of a direction; None while one stream never decoded."""
        got = [pages[v].get("first_frame_s", {}).get(o) for v in viewers for o in owners if o != v]
        return None if None in got or not got else max(got)

    sent_host = [pages[v]["sent"] for v in host if pages[v]["sent"]]

    def summed(key: str) -> int:
        return sum(s[key] for s in sent_host)

    return {
        "host": video(host, host),
        "host_sees_ns": {**video(host, [inside]), "first_frame_s": first_frame(host, [inside])},
        "ns_sees_host": {**video([inside], host), "first_frame_s": first_frame([inside], host)},
        "audio": {
            "host_concealed_percent": _concealed(pages, host, host),
            "host_hears_ns_concealed_percent": _concealed(pages, host, [inside]),
            "ns_concealed_percent": _concealed(pages, [inside], host),
        },
        "host_sent": {
            "video_kbps": (
                statistics.median(s["video_kbps"] for s in sent_host) if sent_host else None
            ),
            "plis_received": summed("plis_received"),
            "firs_received": summed("firs_received"),
            "retransmitted_packets": summed("retransmitted_packets"),
            "quality_limitation": sorted({r for s in sent_host for r in s["quality_limitation"]}),
        },
        "ns_sent": pages[inside]["sent"],
    }


# ---------------------------------------------------------------- rounds -> rows


def flat(case: dict[str, Any]) -> dict[str, Any]:
    """A case's headline figures as one flat dict (`host_fps_median`, `ns_sent_plis_received`)."""
    out: dict[str, Any] = {}
    for group, values in case["groups"].items():
        for key, value in values.items():
            out[key if group == "audio" else f"{group}_{key}"] = value
    for key in ("server_cpu_s_per_s", "other_cpu_s_per_s", "load_avg_1m", "setup_s"):
        out[key] = case[key]
    return out


def summarize(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, scenario): the median over its rounds of every figure (the most
    common value of a text, every value of a list)."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((c["mode"], c["scenario"]) for c in cases))
    for mode, scen in keys:
        mine = [c for c in cases if (c["mode"], c["scenario"]) == (mode, scen)]
        ok = [flat(c) for c in mine if "error" not in c]
        row: dict[str, Any] = {
            "mode": mode,
            "scenario": scen,
            "rounds": len(ok),
            "complete_rounds": sum(1 for c in mine if c.get("complete")),
            "errors": [c["error"] for c in mine if "error" in c],
            "stalled_pages": sorted({p for c in mine for p in c.get("stalled_pages", [])}),
        }
        for key in dict.fromkeys(k for f in ok for k in f):
            values = [f[key] for f in ok if f.get(key) is not None]
            if not values:
                row[key] = None
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                row[key] = round(statistics.median(values), 2)
            elif all(isinstance(v, list) for v in values):
                row[key] = sorted({x for v in values for x in v})
            else:
                row[key] = Counter(map(str, values)).most_common(1)[0][0]
        rows.append(row)
    return rows


async def run(p: Params) -> list[dict[str, Any]]:
    """Every round runs every mode and scenario once (rounds interleave: drift spreads)."""
    cases: list[dict[str, Any]] = []
    total = p.rounds * len(p.modes) * len(p.scenarios)
    with _report.sweep_progress(console) as progress:
        overall = progress.add_task("sweep", total=total)
        async with async_playwright() as pw:
            for rnd in range(1, p.rounds + 1):
                for mode in p.modes:
                    for scen in p.scenarios:
                        task = progress.add_task(f"{mode} {scen.name} r{rnd}", total=1)
                        try:
                            case = await run_case(pw, mode, scen, rnd, p, progress, task)
                        except Exception as exc:
                            console.print(f"[red]{mode} {scen.name} r{rnd}: {exc!s:.300}")
                            case = {
                                "mode": mode,
                                "scenario": scen.name,
                                "round": rnd,
                                "error": str(exc)[:500],
                            }
                        cases.append(case)
                        progress.remove_task(task)
                        progress.advance(overall)
    return cases


# ---------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _pages(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2 pages (one on the host, one in the namespace)")
    return value


def _list(allowed: tuple[str, ...] | None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed or ())}")
        return values

    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.network",
        description=(
            "N Chromium pages of the web client in one room, the last one (D) in a network "
            "namespace whose link is shaped (tc tbf) or lossy/blocked (nftables); what each "
            "page sees, from getStats(). Needs root, iproute2 and nftables."
        ),
    )
    ap.add_argument("--pages", type=_pages, default=4, help="pages in the room (default 4)")
    ap.add_argument("--modes", type=_list(MODES), default=list(MODES), help="sfu,mesh")
    ap.add_argument(
        "--scenarios",
        type=lambda t: [scenario(x.strip()) for x in t.split(",") if x.strip()],
        default=[scenario(s) for s in SCENARIOS],
        help="D's link: none, down<kbit/s>, up<kbit/s>, loss<percent>, udp-blocked, joined "
        f"with + (default {','.join(SCENARIOS)})",
    )
    ap.add_argument("--rounds", type=_positive_int, default=3, help="rounds; rows are medians")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window (s)")
    ap.add_argument(
        "--setup-timeout",
        type=float,
        default=40.0,
        help="seconds for every page to play every other before measuring anyway",
    )
    ap.add_argument("--interval", type=float, default=1.0, help="getStats() sampling period")
    ap.add_argument(
        "--resolution",
        choices=["medium", "low"],
        default="medium",
        help="medium: the client's default, 640x480 capped at 600 kbit/s in sfu (default); "
        "low: ?lowres=1, 320x240 at 15 fps capped at 250 kbit/s",
    )
    ap.add_argument("--camera-fps", type=_positive_int, default=15, help="fake camera fps")
    ap.add_argument(
        "--queue-ms",
        type=float,
        default=DEFAULT_QUEUE_MS,
        help="tbf queue (latency) of a shaped direction, ms",
    )
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose server and client run")
    ap.add_argument("--json", type=Path, help="write {meta, rows, cases} to this JSON file")
    ap.add_argument("--markdown", type=Path, help="write the README table to this file")
    ap.add_argument("--plot", type=Path, help="write a PNG plot to this file")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = Params(
        pages=args.pages,
        modes=args.modes,
        scenarios=args.scenarios,
        rounds=args.rounds,
        warmup=args.warmup,
        seconds=args.seconds,
        setup_timeout=args.setup_timeout,
        interval=args.interval,
        resolution=args.resolution,
        camera_fps=args.camera_fps,
        queue_ms=args.queue_ms,
        root=args.root.resolve(),
    )
    swept = sweep_stale()
    if swept:
        console.print(f"removed what a killed run left: {', '.join(swept)}")
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.network "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": _report.machine(),
        "params": {
            **params.__dict__,
            "scenarios": [s.name for s in params.scenarios],
            "root": str(params.root),
        },
    }
    cases = asyncio.run(run(params))
    rows = summarize(cases)
    Console(width=160).print(table(rows, params.names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "cases": cases}, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(meta, rows, params.names))
    if args.plot:
        plot(rows, args.plot)
    if any("error" in c for c in cases):
        sys.exit(1)


if __name__ == "__main__":
    main()

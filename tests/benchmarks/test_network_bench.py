"""Smoke test of `python -m benchmarks.network`: three pages in an sfu room, the third in a
namespace whose downlink is held to 300 kbit/s.

It checks the benchmark still measures (the row has its fields, the link was shaped, the
host pages played each other), not how well anything does: that belongs in benchmarks/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import run_benchmark

FIELDS = (
    "mode",
    "scenario",
    "rounds",
    "host_fps_median",
    "host_fps_min",
    "host_size",
    "host_sees_ns_fps_median",
    "ns_sees_host_fps_median",
    "ns_sees_host_fps_min",
    "ns_sees_host_size",
    "ns_sees_host_kbps",
    "ns_sees_host_freezes",
    "ns_sees_host_freeze_s",
    "ns_sees_host_loss_percent",
    "ns_sees_host_nacks",
    "ns_sees_host_first_frame_s",
    "ns_sent_video_kbps",
    "ns_sent_retransmitted_packets",
    "ns_sent_plis_received",
    "ns_sent_firs_received",
    "ns_sent_quality_limitation",
    "host_sent_video_kbps",
    "host_concealed_percent",
    "ns_concealed_percent",
    "server_cpu_s_per_s",
    "load_avg_1m",
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(75)]


def test_network_benchmark_measures_a_page_on_a_shaped_downlink(
    tmp_path: Path, netns_swept: list[str]
) -> None:
    args = [
        *("--pages", "3", "--modes", "sfu", "--scenarios", "down300", "--rounds", "1"),
        *("--warmup", "1", "--seconds", "3", "--setup-timeout", "20", "--resolution", "low"),
    ]
    run = run_benchmark("network", args, tmp_path, FIELDS, 70)
    [row] = run.rows
    assert (row["mode"], row["scenario"], row["rounds"]) == ("sfu", "down300", 1)
    assert row["host_fps_median"] > 0, row  # A and B played each other
    [case] = run.result["cases"]
    assert case["link"]["downlink"]["rate_kbit"] == 300
    assert case["pages"]["C"]["where"] == "namespace"
    assert set(case["pages"]["A"]["video"]) == {"B", "C"} or not case["complete"]

"""Tooling shared by the tests and the benchmarks (which may not import `tests`).

`server`: run `python -m signaling` (or any command that prints its Listening line);
`media` and `frames`: pre-encoded clips to publish and frames reassembled on receipt;
`poll`: one bounded wait for a condition no event announces; `netns`: network namespaces on
a veth pair, shaped (tc tbf), lossy or UDP-blocked (nftables); `browser`: Debian's Chromium
under Playwright, on the host or inside a namespace.
"""

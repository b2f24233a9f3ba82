"""signaling.edge.frames on recorded packets (socket.io-client 4.x and python-socketio 5.x)."""

from __future__ import annotations

import pytest

from signaling.edge import frames
from signaling.edge.frames import BadFrame, BadPayload, Header


@pytest.mark.parametrize(
    "text,header",
    [
        # What follows engine.io's MESSAGE type ("4") in a frame.
        ("0", Header(0, 0, "/", None, "")),
        ('0{"userId":"ann","token":"t"}', Header(0, 0, "/", None, '{"userId":"ann","token":"t"}')),
        ("1", Header(1, 0, "/", None, "")),
        ('2["video:offer",{"to":"x"}]', Header(2, 0, "/", None, '["video:offer",{"to":"x"}]')),
        ('213["join-room","r"]', Header(2, 0, "/", 13, '["join-room","r"]')),
        ('2/admin,7["x"]', Header(2, 0, "/admin", 7, '["x"]')),
        ("0/chat?token=1,", Header(0, 0, "/chat", None, "")),
        ('31[{"ok":true}]', Header(3, 0, "/", 1, '[{"ok":true}]')),
        (
            '51-["offer",{"_placeholder":true,"num":0}]',
            Header(5, 1, "/", None, '["offer",{"_placeholder":true,"num":0}]'),
        ),
        ('62-/x,4["a"]', Header(6, 2, "/x", 4, '["a"]')),
    ],
)
def test_headers_of_real_packets(text: str, header: Header) -> None:
    assert frames.parse(text) == header


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "x",
        "٣",  # a digit to int(), not to the protocol
        '5["a"]',
        "5-[]",
        "511-[]",
        "2" + "1" * 16 + "[]",
        "2/" + "n" * 300 + ",[]",
    ],
)
def test_broken_framing(text: str) -> None:
    with pytest.raises(BadFrame):
        frames.parse(text)


@pytest.mark.parametrize(
    "body,event,words",
    [
        ('["chat","\\ud83d"]', "chat", "lone UTF-16 surrogate"),
        ('["deep",' + "[" * 2000 + "]" * 2000 + "]", "deep", "nested too deeply"),
        ('["n",1e999]', "n", "out of range"),
        ('["t",{"a":', "t", "not valid JSON"),
        ("[1,2]", "", "must be a string"),
        ("{}", "", "JSON array"),
        ("", "", "JSON array"),
        ('["\\ud800x"', "", "lone UTF-16 surrogate"),  # not even the name decodes
    ],
)
def test_undecodable_bodies_say_what_is_wrong(body: str, event: str, words: str) -> None:
    with pytest.raises(BadPayload) as refused:
        frames.decode_event(body)
    assert refused.value.event == event
    assert words in refused.value.message


def test_events_decode_to_name_and_arguments() -> None:
    assert frames.decode_event('["typing",{"studyId":"s"},2]') == ("typing", [{"studyId": "s"}, 2])
    assert frames.decode_event('["pair:request"]') == ("pair:request", [])
    assert frames.fast_event('2["video:offer",{"to":"a"}]') == ("video:offer", [{"to": "a"}])
    assert frames.fast_event('21["video:offer",{}]') is None  # an ack id: not the fast path
    assert frames.encode_event("e", {"a": 1}) == '2["e",{"a":1}]'

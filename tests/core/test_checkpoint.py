"""Checkpoints (logserver.core.checkpoint): spec example, strict parsing, round trips, fuzzing."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logserver.core.checkpoint import MAX_EXTENSION_LINES, Checkpoint
from logserver.core.errors import FormatError, UsageError

# From c2sp.org/tlog-checkpoint.
SPEC_BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
ROOT = base64.b64encode(bytes(range(32)))


def test_spec_example() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.to_bytes() == SPEC_BODY


def test_empty_tree_and_extensions() -> None:
    body = b"o\n0\n" + ROOT + b"\next one\n\xe2\x80\x94 ext two\n"
    cp = Checkpoint.parse(body)
    assert cp.size == 0
    assert cp.extensions == ("ext one", "— ext two")
    assert cp.to_bytes() == body


def test_largest_size() -> None:
    cp = Checkpoint.parse(b"o\n9223372036854775807\n" + ROOT + b"\n")
    assert cp.size == 2**63 - 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o\n1\n" + ROOT,  # no final newline
        b"o\n1\n",  # no root
        b"o\n1\n" + ROOT + b"\n\n",  # empty extension line
        b"\n1\n" + ROOT + b"\n",  # empty origin
        b"o\n01\n" + ROOT + b"\n",  # leading zero
        b"o\n00\n" + ROOT + b"\n",
        b"o\n+1\n" + ROOT + b"\n",
        b"o\n-1\n" + ROOT + b"\n",
        b"o\n 1\n" + ROOT + b"\n",
        b"o\n1 \n" + ROOT + b"\n",
        b"o\n0x1\n" + ROOT + b"\n",
        b"o\n1e3\n" + ROOT + b"\n",
        b"o\n\n" + ROOT + b"\n",
        b"o\n9223372036854775808\n" + ROOT + b"\n",  # 2^63
        b"o\n" + b"9" * 5000 + b"\n" + ROOT + b"\n",
        b"o\n1\n" + base64.b64encode(bytes(31)) + b"\n",  # wrong hash length
        b"o\n1\n" + base64.b64encode(bytes(33)) + b"\n",
        b"o\n1\n" + ROOT[:-1] + b"\n",  # bad padding
        b"o\n1\n" + ROOT[:-2] + b"B=\n",  # non-canonical base64
        b"o\n1\n" + ROOT.replace(b"A", b"-") + b"\n",  # URL-safe alphabet
        b"o\n1\n" + ROOT + b" \n",
        b"o\r\n1\n" + ROOT + b"\n",  # CR
        b"o\t\n1\n" + ROOT + b"\n",  # control character
        b"\xff\n1\n" + ROOT + b"\n",  # not UTF-8
        b"o\n1\n" + ROOT + b"\n" + b"e\n" * (MAX_EXTENSION_LINES + 1),
        b"o" * 70000 + b"\n1\n" + ROOT + b"\n",
    ],
)
def test_rejections(body: bytes) -> None:
    with pytest.raises(FormatError):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"origin": "\udcff"},
        {"size": -1},
        {"size": 2**63},
        {"root_hash": bytes(31)},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": ("e",) * (MAX_EXTENSION_LINES + 1)},
    ],
)
def test_constructor_misuse(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"origin": "o", "size": 1, "root_hash": bytes(32)}
    args.update(kwargs)
    with pytest.raises(UsageError):
        Checkpoint(**args)  # type: ignore[arg-type]


line_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=[chr(i) for i in range(32)]),
    min_size=1,
    max_size=40,
)
checkpoints = st.builds(
    Checkpoint,
    origin=line_text,
    size=st.integers(0, 2**63 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(line_text, max_size=4).map(tuple),
)


@given(checkpoints)
def test_round_trip(cp: Checkpoint) -> None:
    assert Checkpoint.parse(cp.to_bytes()) == cp


@given(st.binary(max_size=300))
def test_fuzz_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        cp = Checkpoint.parse(data)
        assert cp.to_bytes() == data  # whatever parses is canonical


@given(checkpoints, st.data())
def test_mutations_either_fail_or_stay_canonical(cp: Checkpoint, data: st.DataObject) -> None:
    body = bytearray(cp.to_bytes())
    body[data.draw(st.integers(0, len(body) - 1))] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(FormatError):
        assert Checkpoint.parse(bytes(body)).to_bytes() == bytes(body)

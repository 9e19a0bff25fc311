"""Line protocol: escaping, types, round trip, and agreement with influxdb-client's serializer."""

import math

import pytest
from hypothesis import given, strategies as st
from influxdb_client import Point as RefPoint, WritePrecision

from edge.errors import LineProtocolError, PayloadError
from edge.point import I64_MAX, I64_MIN, U64_MAX, Point, UInt, parse_line, parse_lines, to_line, to_lines

# identifiers: anything printable but backslash and line breaks (refused by design, see edge.point)
ident = st.text(st.characters(blacklist_characters="\\\n\r\t", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
field_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(I64_MIN, I64_MAX),
    st.integers(0, U64_MAX).map(UInt),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)
points = st.builds(
    Point,
    measurement=ident.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(ident, ident, max_size=4),
    fields=st.dictionaries(ident, field_value, min_size=1, max_size=5),
    time_ns=st.integers(I64_MIN, I64_MAX),
)


def _same_value(a, b) -> bool:
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b)))
    return type(a) is type(b) and a == b


@given(points)
def test_round_trip(p):
    q = parse_line(to_line(p))
    assert q.measurement == p.measurement
    assert q.tags == p.tags
    assert q.time_ns == p.time_ns
    assert q.fields.keys() == p.fields.keys()
    for k, v in p.fields.items():
        assert _same_value(v, q.fields[k]), (k, v, q.fields[k])


@given(st.lists(points, min_size=1, max_size=5))
def test_many_lines_round_trip_even_with_newlines_in_strings(ps):
    back = parse_lines(to_lines(ps))
    assert [(q.measurement, q.tags, q.time_ns) for q in back] == [(p.measurement, p.tags, p.time_ns) for p in ps]


ref_ident = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters=" ,=-_.·/"), min_size=1, max_size=10)
ref_value = st.one_of(st.integers(I64_MIN, I64_MAX), st.booleans(),
                      st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
                      st.floats(allow_nan=False, allow_infinity=False, width=64))


@given(ref_ident, st.dictionaries(ref_ident, ref_ident, max_size=3), st.dictionaries(ref_ident, ref_value, min_size=1, max_size=4),
       st.integers(0, I64_MAX))
def test_agrees_with_influxdb_client(meas, tags, fields, t):
    """An independent serializer: the same point must parse to the same thing from both texts."""
    ref = RefPoint(meas)
    for k, v in tags.items():
        ref.tag(k, v)
    for k, v in fields.items():
        ref.field(k, v)
    ref.time(t, WritePrecision.NS)
    ref_line = ref.to_line_protocol()
    ours = to_line(Point(meas, tags, fields, t))
    a, b = parse_line(ours), parse_line(ref_line)
    assert (a.measurement, a.tags, a.time_ns) == (b.measurement, b.tags, b.time_ns)
    assert a.fields.keys() == b.fields.keys()
    for k in fields:
        va, vb = a.fields[k], b.fields[k]
        if isinstance(va, float) or isinstance(vb, float):
            assert float(va) == float(vb)
        else:
            assert va == vb


def test_escaping_by_hand():
    p = Point("energy meter,x", {"org path": "330000/330100", "k=v": "a,b c"},
              {"note": 'say "hi" \\ there', "n": 3, "u": UInt(7), "ok": True, "kw": 1.5}, 1_700_000_000_000_000_000)
    assert to_line(p) == ('energy\\ meter\\,x,k\\=v=a\\,b\\ c,org\\ path=330000/330100 '
                          'note="say \\"hi\\" \\\\ there",n=3i,u=7u,ok=true,kw=1.5 1700000000000000000')


def test_utf8_plates_survive():
    p = Point("position", {"vehicle": "浙A·12345"}, {"lat": 30.27}, 1)
    assert parse_line(to_line(p)).tags["vehicle"] == "浙A·12345"


def test_float_without_loss():
    for v in (0.1, 1 / 3, 1e-300, 123456789.123456789, -0.0, 5e-324):
        assert parse_line(to_line(Point("m", {}, {"v": v}, 0))).fields["v"] == v


@pytest.mark.parametrize("p, reason", [
    (Point("m", {}, {}, 0), "no fields"),
    (Point("m", {}, {"v": float("nan")}, 0), "non-finite float"),
    (Point("m", {}, {"v": float("inf")}, 0), "non-finite float"),
    (Point("m", {}, {"v": 2**63}, 0), "integer out of range"),
    (Point("m", {"t": "a\\b"}, {"v": 1}, 0), "bad identifier"),
    (Point("m\nx", {}, {"v": 1}, 0), "bad identifier"),
    (Point("", {}, {"v": 1}, 0), "empty identifier"),
    (Point("#m", {}, {"v": 1}, 0), "bad identifier"),
])
def test_refused_points_say_why(p, reason):
    with pytest.raises(LineProtocolError) as e:
        to_line(p)
    assert e.value.reason == reason


def test_empty_tag_value_is_an_absent_tag():
    assert to_line(Point("m", {"a": "", "b": "x"}, {"v": 1}, 5)) == "m,b=x v=1i 5"


@given(st.text(max_size=60))
def test_parser_never_crashes(text):
    try:
        parse_lines(text, default_time_ns=0)
    except PayloadError:
        pass


@pytest.mark.parametrize("line", ["m", "m v=", "m v=1 x", 'm s="abc', "m,t v=1 1", "m v=nan 1", "m v=12q 1", ",t=1 v=1 1"])
def test_malformed_lines_are_payload_errors(line):
    with pytest.raises(LineProtocolError):
        parse_line(line)


# lines built from the characters that matter to the parser: the fast path (split at separators) must
# give exactly what the scanner gives, or step aside (None)
_lp_chars = st.lists(st.sampled_from(list('ab1.-e, ="\\') + ["1i", "true", " 17"]), max_size=25).map("".join)


@given(st.one_of(_lp_chars, points.map(to_line)), st.one_of(st.none(), st.just(5)))
def test_plain_fast_path_agrees_with_the_scanner(line, default):
    from edge.point import _parse_plain, _parse_scan
    try:
        want = _parse_scan(line, default)
    except LineProtocolError as e:
        want = e
    try:
        got = _parse_plain(line, default)
    except LineProtocolError as e:
        got = e
    if got is None:
        return
    if isinstance(want, LineProtocolError):
        assert isinstance(got, LineProtocolError) and str(got) == str(want)
    else:
        assert not isinstance(got, LineProtocolError), (line, got)
        assert (got.measurement, got.tags, got.time_ns) == (want.measurement, want.tags, want.time_ns)
        assert got.fields.keys() == want.fields.keys()
        assert all(_same_value(got.fields[k], want.fields[k]) for k in want.fields)

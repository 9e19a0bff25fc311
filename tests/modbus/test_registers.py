import math
import struct

import pytest
from hypothesis import given, strategies as st

from collector.modbus.profiles import TYPES, WORD_ORDERS, Register
from collector.modbus.registers import compile_field, decode_block, decode_raw, words_to_bytes
from edge.errors import PayloadError


@pytest.mark.parametrize("order, words", [
    ("ABCD", [0x3F80, 0x0000]), ("CDAB", [0x0000, 0x3F80]),
    ("BADC", [0x803F, 0x0000]), ("DCBA", [0x0000, 0x803F]),
])
def test_float32_one_in_every_word_order(order, words):
    assert decode_raw(words, "float32", order) == 1.0


def test_cdab_word_order_em340():
    """EM340 sends INT32 low word first: 2301 (230.1 V) arrives as [2301, 0]."""
    reg = Register("voltage_l1_v", 0, "input", "int32", "CDAB", scale=0.1, min=0, max=500)
    assert decode_block([compile_field(reg, 0)], [2301, 0]).values["voltage_l1_v"] == pytest.approx(230.1)
    # and a negative power: -1234 (-123.4 W) low word first
    raw = struct.pack(">i", -1234)
    lo, hi = struct.unpack(">HH", raw)[1], struct.unpack(">HH", raw)[0]
    assert decode_raw([lo, hi], "int32", "CDAB") == -1234


def test_int64_wh_to_kwh_iem3255():
    reg = Register("active_energy_import_kwh", 3203, "holding", "int64", scale=0.001)
    words = list(struct.unpack(">4H", struct.pack(">q", 123_456_789)))
    assert decode_block([compile_field(reg, 0)], words).values["active_energy_import_kwh"] == pytest.approx(123456.789)


def test_ratio_multiplies_after_scale_and_range_applies_before():
    reg = Register("current_l1_a", 0, "holding", "float32", scale=0.001, ratio="ct", min=0, max=120)
    words = list(struct.unpack(">2H", struct.pack(">f", 5000.0)))  # 5 A secondary
    dec = decode_block([compile_field(reg, 0, pt=1.0, ct=40.0)], words)
    assert dec.values["current_l1_a"] == pytest.approx(200.0)
    assert dec.implausible == ()


def test_implausible_and_nan_are_flagged_not_returned():
    f = compile_field(Register("frequency_hz", 0, "holding", "float32", min=45, max=65), 0)
    g = compile_field(Register("voltage_l1_v", 2, "holding", "float32", min=0, max=500), 2)
    nan = list(struct.unpack(">2H", struct.pack(">f", math.nan)))
    dec = decode_block([f, g], [*struct.unpack(">2H", struct.pack(">f", 99.0)), *nan])
    assert dec.values == {} and dec.implausible == ("frequency_hz", "voltage_l1_v")


def test_short_response_is_a_payload_error():
    f = compile_field(Register("x", 0, "holding", "float32"), 0)
    with pytest.raises(PayloadError):
        decode_block([f], [1])


@given(st.sampled_from(sorted(TYPES)), st.sampled_from(WORD_ORDERS), st.lists(st.integers(-70000, 70000), max_size=6))
def test_any_words_give_a_value_or_payload_error(type_, order, words):
    try:
        v = decode_raw(words, type_, order)
    except PayloadError:
        return
    assert isinstance(v, (int, float))


@given(st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64"]), st.sampled_from(WORD_ORDERS),
       st.data())
def test_integer_round_trip_against_independent_encoding(type_, order, data):
    n, code = TYPES[type_]
    bits = 16 * n
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
    value = data.draw(st.integers(lo, hi))
    b = struct.pack(">" + code, value)
    words = [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    assert decode_raw(words, type_, order) == value


def test_words_to_bytes_rejects_out_of_range_words():
    with pytest.raises(PayloadError):
        words_to_bytes([70000], "ABCD")


@given(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=6), st.sampled_from(WORD_ORDERS),
       st.lists(st.integers(-5, 70000), max_size=30))
def test_block_decoder_any_words_give_values_or_payload_error(types, order, words):
    fields, pos = [], 0
    for i, t in enumerate(types):
        fields.append(compile_field(Register(f"f{i}", pos, "holding", t, order, min=-1e6, max=1e6), pos))
        pos += TYPES[t][0] + i % 2
    try:
        dec = decode_block(fields, words)
    except PayloadError:
        return
    assert set(dec.values) | set(dec.implausible) == {f.name for f in fields}
    assert all(math.isfinite(v) and -1e6 <= v <= 1e6 for v in dec.values.values())


# -- a whole poll decoded at once must equal its reads decoded one by one ---------------------------

def _poll_blocks(profile_id: str, pt: float, ct: float):
    from collector.modbus.planner import plan
    from collector.modbus.profiles import load_profiles
    from collector.modbus.registers import BlockDecoder
    prof = load_profiles()[profile_id]
    reqs = plan(prof.registers, max_gap=prof.max_gap, max_registers=prof.max_registers)
    return [(r.count, BlockDecoder([compile_field(reg, reg.address - r.address, pt, ct) for reg in r.registers]))
            for r in reqs]


@pytest.mark.parametrize("profile_id", ["chint-dtsu666", "acrel-adl400", "eastron-sdm630", "schneider-iem3255"])
@given(data=st.data(), pt=st.sampled_from([1.0, 10.0, 0.1]), ct=st.sampled_from([1.0, 40.0, 3]))
def test_poll_decoder_equals_the_block_decoders_read_by_read(profile_id, data, pt, ct):
    from collector.modbus.registers import PollDecoder
    blocks = _poll_blocks(profile_id, pt, ct)
    poll = PollDecoder(blocks)
    assert poll.usable  # these profiles are high-word-first throughout
    words = [data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)) for n, _ in blocks]
    values, bad = poll.decode(words)
    want_values, want_bad = {}, []
    for (_, d), w in zip(blocks, words):
        dec = d.decode(w)
        want_values.update(dec.values)
        want_bad.extend(dec.implausible)
    assert list(values) == list(want_values) and bad == want_bad
    assert all(struct.pack(">d", values[k]) == struct.pack(">d", want_values[k]) for k in values)  # bit for bit


def test_poll_decoder_refuses_a_short_response_and_a_word_over_16_bits():
    from collector.modbus.registers import PollDecoder
    blocks = _poll_blocks("chint-dtsu666", 1.0, 1.0)
    poll = PollDecoder(blocks)
    full = [[0] * n for n, _ in blocks]
    with pytest.raises(PayloadError):
        poll.decode([full[0][:-1], *full[1:]])
    with pytest.raises(PayloadError):
        poll.decode([[0x10000] + full[0][1:], *full[1:]])
    with pytest.raises(PayloadError):
        poll.decode(full[:-1])

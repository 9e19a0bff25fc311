import pytest
from hypothesis import given, settings, strategies as st

from collector.modbus.planner import plan
from collector.modbus.profiles import TYPES, Register, load_profiles


@st.composite
def register_sets(draw):
    n = draw(st.integers(0, 30))
    regs, used = [], {"holding": [], "input": []}
    for i in range(n):
        func = draw(st.sampled_from(["holding", "input"]))
        typ = draw(st.sampled_from(sorted(TYPES)))
        addr = draw(st.integers(0, 400))
        size = TYPES[typ][0]
        if any(addr < e and s < addr + size for s, e in used[func]):
            continue
        used[func].append((addr, addr + size))
        regs.append(Register(f"r{i}", addr, func, typ))
    return regs


def _min_reads_dp(regs, max_gap, limit):
    """Independent check: fewest runs of consecutive (sorted) registers satisfying the constraints."""
    total = 0
    for func in ("holding", "input"):
        rs = sorted((r for r in regs if r.function == func), key=lambda r: r.address)
        n = len(rs)
        best = [0] + [10**9] * n
        for j in range(1, n + 1):
            for i in range(j, 0, -1):  # run rs[i-1 .. j-1]
                run = rs[i - 1:j]
                if run[-1].end - run[0].address > limit:
                    break
                if any(b.address - a.end > max_gap for a, b in zip(run, run[1:])):
                    break
                best[j] = min(best[j], best[i - 1] + 1)
        total += best[n]
    return total


@settings(max_examples=200, deadline=None)
@given(register_sets(), st.integers(0, 20), st.integers(4, 125))
def test_plan_covers_every_register_within_limits_and_is_minimal(regs, max_gap, limit):
    reqs = plan(regs, max_gap=max_gap, max_registers=limit)
    covered = [r for q in reqs for r in q.registers]
    assert sorted(r.name for r in covered) == sorted(r.name for r in regs)
    for q in reqs:
        assert 1 <= q.count <= min(limit, 125)
        for r in q.registers:
            assert r.function == q.function and q.address <= r.address and r.end <= q.end
    assert len(reqs) == _min_reads_dp(regs, max_gap, limit)


def test_protocol_limit_caps_a_device_limit_above_125():
    regs = [Register(f"r{i}", i * 2, "holding", "float32") for i in range(100)]
    assert all(q.count <= 125 for q in plan(regs, max_registers=500))


def test_gap_zero_splits_on_any_hole():
    regs = [Register("a", 0, "holding", "uint16"), Register("b", 2, "holding", "uint16")]
    assert len(plan(regs, max_gap=0)) == 2
    assert len(plan(regs, max_gap=1)) == 1


@pytest.mark.parametrize("profile, expected", [
    ("chint-dtsu666", 5), ("eastron-sdm630", 4), ("schneider-iem3255", 6), ("carlo-gavazzi-em340", 3),
])
def test_shipped_profiles_need_few_requests(profile, expected):
    p = load_profiles()[profile]
    assert len(plan(p.registers, p.max_gap, p.max_registers)) == expected

"""Reconciliation rules: polls from served reads, matching, explained and unexplained loss."""

import numpy as np

from simulators.testbench.accounting import (Poll, energy_changed, group_polls, reconcile, reconcile_meters,
                                              reconcile_positions)

S = 1_000_000_000


def test_a_poll_spread_by_lock_waits_is_still_one_poll():
    # three requests of one poll, 9 s apart (timeouts of other meters on the gateway), interval 15 s
    reads = [(100 * S, 3, 6), (109 * S, 3, 4126), (118 * S, 3, 8192), (130 * S, 3, 6), (130 * S + 5, 3, 4126)]
    assert group_polls(reads, 15) == [Poll(100 * S, 118 * S, 3), Poll(130 * S, 130 * S + 5, 2)]


def test_a_poll_stretched_over_two_intervals_is_one_poll():
    # county regression: 5 timed-out meters on one gateway held the lock for 30 s
    reads = [(255 * S, 3, 6), (270 * S + 110, 3, 4126), (285 * S + 150, 3, 8192)]
    assert group_polls(reads, 15) == [Poll(255 * S, 285 * S + 150, 3)]


def test_a_timed_out_first_request_does_not_merge_polls():
    reads = [(100 * S, 3, 4126), (100 * S + 9, 3, 8192), (115 * S, 3, 6), (115 * S + 3, 3, 4126)]
    assert len(group_polls(reads, 15)) == 2


def test_stored_reading_matches_its_poll_and_missing_one_is_lost():
    polls = {"m-1": [Poll(100 * S + 10, 100 * S + 90), Poll(115 * S + 10, 115 * S + 90)]}
    acc = reconcile_meters(polls, {"m-1": [100 * S]}, {"m-1": [100 * S]})
    assert (acc.sent, acc.stored, acc.lost, acc.unexplained, acc.late) == (2, 1, 1, 1, 0)


def test_a_poll_running_at_kill_is_explained():
    polls = {"m-1": [Poll(100 * S, 104 * S)]}
    acc = reconcile_meters(polls, {}, {}, kills_ns=[103 * S])
    assert acc.lost == 1 and acc.unexplained == 0 and acc.explained["in_flight_at_kill"] == 1


def test_an_unfinished_poll_waiting_for_the_lock_at_kill_is_explained_an_old_finished_one_is_not():
    # m-1: a full poll (3 reads) stored, then a poll with 1 read at 130 s still waiting for the lock at the kill (156 s)
    # m-2: a full poll at 100 s never stored and a full poll at 115 s stored: a real loss, whatever the kill
    polls = {"m-1": [Poll(100 * S, 101 * S, 3), Poll(130 * S, 130 * S, 1)],
             "m-2": [Poll(100 * S, 101 * S, 3), Poll(115 * S, 116 * S, 3)]}
    acc = reconcile_meters(polls, {"m-1": [100 * S], "m-2": [115 * S]}, {}, kills_ns=[156 * S], interval_s=15)
    assert acc.explained["in_flight_at_kill"] == 1 and acc.unexplained == 1


def test_duplicates_late_and_phantoms_are_counted():
    polls = {"m-1": [Poll(100 * S, 100 * S + 50)]}
    acc = reconcile_meters(polls, {"m-1": [100 * S - 5, 100 * S - 5, 300 * S]}, {"m-1": []})
    assert acc.duplicated == 1 and acc.unexpected == 1 and acc.late == 2


def test_positions_rejected_by_validation_are_explained_the_rest_is_not():
    sent = {"v-1": {1 * S, 2 * S, 3 * S}, "v-2": {1 * S}}
    stored = {"v-1": [1 * S], "v-2": [1 * S]}
    acc = reconcile_positions(sent, stored, stored, rejected=[("v-1", 2 * S)])
    assert acc.lost == 2 and acc.explained["rejected_by_validation"] == 1 and acc.unexplained == 1
    assert reconcile(reconcile_meters({}, {}, {}), acc, outbox_dropped=5).unexplained == 1  # a count explains nothing


def test_a_lost_reading_is_explained_only_by_a_recorded_drop_of_the_same_identity():
    """The outbox records what it thinned or dropped: the reading of that meter and time is explained;
    another meter's loss at the same moment is not, however many points the outbox dropped."""
    polls = {"m-1": [Poll(100 * S, 100 * S + 50), Poll(115 * S, 115 * S + 50), Poll(130 * S, 130 * S + 50)],
             "m-2": [Poll(100 * S, 100 * S + 50)]}
    stored = {"m-1": [100 * S]}
    dropped = {"m-1": [(115 * S - 3, "thinned"), (130 * S - 2, "dropped")], "m-9": [(100 * S, "dropped")]}
    acc = reconcile_meters(polls, stored, stored, dropped=dropped)
    assert acc.lost == 3 and acc.unexplained == 1 and acc.examples == [f"lost m-2 poll at {100 * S}"]
    assert acc.explained["thinned_by_outbox"] == 1 and acc.explained["dropped_by_outbox"] == 1


def test_a_dropped_position_is_explained_by_its_identity_and_counted():
    sent = {"v-1": {1 * S, 2 * S}}
    acc = reconcile_positions(sent, {"v-1": [1 * S]}, {}, dropped=[("v-1", 2 * S)])
    assert acc.unexplained == 0 and acc.explained["dropped_by_outbox"] == 1
    assert reconcile(reconcile_meters({}, {}, {}), acc, 1, positions_dropped=1).positions_dropped == 1


def test_energy_changed_finds_a_day_whose_consumption_the_thinned_readings_change():
    day = 86_400 * S
    t0 = 1_772_380_800 * S  # a local midnight (Asia/Shanghai)
    steps = np.cumsum([1.0 + (k * 37) % 11 for k in range(3 * 96)])  # a load that varies, 3 days of quarters
    every = {t0 - 600 * S + k * 900 * S: 100.0 + float(steps[k]) for k in range(3 * 96)}
    ts = sorted(every)
    kept_ok = {t: v for i, (t, v) in enumerate(sorted(every.items())) if i % 4 == 0 or i in (0, len(ts) - 1)}
    for t in ts:  # each local day's first and last reading kept
        d = (t - t0) // day
        same = [u for u in ts if (u - t0) // day == d]
        kept_ok[same[0]], kept_ok[same[-1]] = every[same[0]], every[same[-1]]
    thinned_ok = {t: v for t, v in every.items() if t not in kept_ok}
    assert energy_changed({("m", "kwh"): kept_ok}, {("m", "kwh"): thinned_ok}, t0, 3) == []
    last_of_day_1 = max(t for t in ts if (t - t0) // day == 0)
    kept_bad = {t: v for t, v in kept_ok.items() if t != last_of_day_1}
    changed = energy_changed({("m", "kwh"): kept_bad}, {("m", "kwh"): {**thinned_ok, last_of_day_1: every[last_of_day_1]}},
                             t0, 3)
    assert [(m, f, d) for m, f, d, _, _ in changed] == [("m", "kwh", 0), ("m", "kwh", 1)]

"""Reconciliation rules: polls from served reads, matching, explained and unexplained loss."""

from simulators.bench.accounting import Poll, group_polls, reconcile, reconcile_meters, reconcile_positions

S = 1_000_000_000


def test_a_poll_spread_by_lock_waits_is_still_one_poll():
    # three requests of one poll, 9 s apart (timeouts of other meters on the gateway), interval 15 s
    reads = [(100 * S, 3, 6), (109 * S, 3, 4126), (118 * S, 3, 8192), (130 * S, 3, 6), (130 * S + 5, 3, 4126)]
    assert group_polls(reads, 15) == [Poll(100 * S, 118 * S), Poll(130 * S, 130 * S + 5)]


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


def test_duplicates_late_and_phantoms_are_counted():
    polls = {"m-1": [Poll(100 * S, 100 * S + 50)]}
    acc = reconcile_meters(polls, {"m-1": [100 * S - 5, 100 * S - 5, 300 * S]}, {"m-1": []})
    assert acc.duplicated == 1 and acc.unexpected == 1 and acc.late == 2


def test_positions_rejected_by_validation_are_explained_and_drops_cover_the_rest():
    sent = {"v-1": {1 * S, 2 * S, 3 * S}, "v-2": {1 * S}}
    stored = {"v-1": [1 * S], "v-2": [1 * S]}
    acc = reconcile_positions(sent, stored, stored, rejected=[("v-1", 2 * S)])
    assert acc.lost == 2 and acc.explained["rejected_by_validation"] == 1 and acc.unexplained == 1
    m = reconcile_meters({}, {}, {})
    assert reconcile(m, acc, outbox_dropped=0).unexplained == 1
    assert reconcile(m, acc, outbox_dropped=5).unexplained == 0

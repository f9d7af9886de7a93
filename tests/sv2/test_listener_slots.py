"""The slot book of the SV2 servers (``sv2.listener_slots``), sans-I/O: pending and set-up
slots apart, per-address limits with eviction of the address's own oldest pending connection,
the busiest address making room when every pending slot is taken, the connect-rate bucket."""

from __future__ import annotations

import pytest

from sv2.listener_slots import PRUNE_BUCKETS_AT, ConnectionSlots, Eviction, source_address


def book(**kw: int | float | None) -> ConnectionSlots:
    args: dict[str, int | float | None] = {
        "max_connections": 3,
        "max_pending": 4,
        "max_connections_per_address": None,
        "max_pending_per_address": None,
    }
    args.update(kw)
    return ConnectionSlots(**args)  # type: ignore[arg-type]


def test_source_address_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    assert source_address(("203.0.113.7", 4000)) == "203.0.113.7"
    assert source_address(("2001:db8:1:2:aaaa::1", 4000, 0, 0)) == "2001:db8:1:2::/64"
    assert source_address(("2001:db8:1:2:ffff::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert source_address(("2001:db8:1:3::1", 1, 0, 0)) == "2001:db8:1:3::/64"
    assert source_address(("::ffff:198.51.100.4", 1, 0, 0)) == "198.51.100.4"
    assert source_address(("fe80::1%eth0", 1, 0, 2)) == "fe80::/64"
    assert source_address("/run/sv2.sock") == "/run/sv2.sock"


def test_set_up_slots_are_apart_from_pending_ones() -> None:
    s = book()
    for i in range(3):
        assert s.admit(i, f"10.0.0.{i}").refused is None
        assert s.promote(i)
    assert (s.established, s.pending) == (3, 0)
    # Set-up slots full: refused at once, before any handshake.
    assert s.admit(9, "10.0.0.9").refused == "refused-max-connections"
    s.release(0)
    # A pending flood fills only the pending slots; the set-up ones stay.
    for i in range(10, 20):
        assert s.admit(i, "10.9.9.9").refused is None
    assert (s.established, s.pending) == (2, 4)
    # Two pending ones complete their SetupConnection for the last set-up slot: the second
    # finds no room (it keeps its pending slot; the server closes it).
    assert s.promote(19) and s.established == 3
    assert not s.promote(18) and s.is_pending(18)


def test_full_pending_slots_evict_the_busiest_address_oldest_first() -> None:
    s = book(max_pending=4)
    assert s.admit(1, "attacker").evict == ()
    assert s.admit(2, "attacker").evict == ()
    assert s.admit(3, "attacker").evict == ()
    assert s.admit(4, "honest-a").evict == ()
    # Full: the honest newcomer takes the attacker's oldest slot, not honest-a's.
    ad = s.admit(5, "honest-b")
    assert ad.refused is None
    assert ad.evict == (Eviction(1, "evicted-handshake-slots", "evicted: handshake slots limit"),)
    assert not s.is_pending(1) and s.is_pending(4) and s.is_pending(5)
    assert s.pending == 4 and s.pending_of("attacker") == 2
    s.release(1)  # the evicted connection's own clean-up later: no double count
    assert s.pending == 4 and s.connections_of("attacker") == 2


def test_per_address_limits_evict_that_address_own_oldest() -> None:
    s = book(max_connections=10, max_pending=100)
    s.max_pending_per_address, s.max_per_address = 2, 3
    s.admit(1, "a")
    s.admit(2, "a")
    ad = s.admit(3, "a")
    assert [e.conn_id for e in ad.evict] == [1] and ad.evict[0].counter == (
        "evicted-address-handshakes"
    )
    assert s.pending_of("a") == 2
    # Set up two of them: three in all from "a" means the third pending one makes room.
    assert s.promote(2) and s.promote(3)
    s.admit(4, "a")
    assert s.connections_of("a") == 3
    ad = s.admit(5, "a")
    assert [(e.conn_id, e.counter) for e in ad.evict] == [(4, "evicted-address-connections")]
    assert s.promote(5)
    # All three set up: nothing of "a" to evict, refused. Others are not affected.
    assert s.admit(6, "a").refused == "refused-address-connections"
    assert s.admit(7, "b").refused is None


def test_connect_rate_bucket_per_address() -> None:
    s = book(max_pending=1_000, max_connections=1_000, connects_per_address_per_sec=10.0)
    now = 100.0
    results = [s.admit(i, "a", now).refused for i in range(25)]
    assert results.count(None) == 20  # a bucket of two seconds' worth
    assert set(results[20:]) == {"refused-address-rate"}
    assert s.admit(100, "b", now).refused is None  # another address has its own bucket
    assert s.admit(101, "a", now + 0.05).refused == "refused-address-rate"  # half a token
    assert s.admit(102, "a", now + 0.15).refused is None  # a token refilled
    assert s.admit(103, "a", now + 100).refused is None  # capped at the bucket's depth


def test_rate_buckets_of_idle_addresses_are_forgotten() -> None:
    s = book(max_pending=10**6, max_connections=10**6, connects_per_address_per_sec=1.0)
    for i in range(PRUNE_BUCKETS_AT):
        s.admit(i, f"addr-{i}", 0.0)
    assert len(s._buckets) == PRUNE_BUCKETS_AT
    s.admit(10**6, "late", 10.0)  # every earlier bucket has refilled by now
    assert set(s._buckets) == {"late"}


def test_release_is_idempotent_and_bad_limits_are_refused() -> None:
    s = book()
    s.admit(1, "a")
    s.release(1)
    s.release(1)
    assert (s.pending, s.established, s.connections_of("a")) == (0, 0, 0)
    assert not s.promote(1)
    with pytest.raises(ValueError, match="pending slot"):
        book(max_pending=0)
    with pytest.raises(ValueError, match="pending slot"):
        book(max_pending_per_address=0)
    with pytest.raises(ValueError, match="positive"):
        book(connects_per_address_per_sec=0)

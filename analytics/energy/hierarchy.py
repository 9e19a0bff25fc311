"""Meter hierarchies: which meters a scope's total is made of, and how it splits into items.

A building is metered as a tree: a main incomer (or a campus incomer feeding several buildings,
attached to an org without a building) and sub-meters behind it (``parent``). Virtual meters
(``terms``: signed meter ids) stand for what is not metered directly; they sit behind a parent and
are made of it and meters behind it (``edge.config`` checks it).

Counted once. A scope is a building, an org at any level of the tree, or the site; its members
are the meters in it (a meter is in its building and in its org and every org above). A member's
*scope parent* is its nearest ancestor that is also a member. The scope's consumption per carrier
is the sum of its *top* members (no scope parent): never a meter together with one behind it.

Itemised. Each member's own part is ``own(m) = m − Σ members whose scope parent is m``; the own
parts of all members add up to the total exactly (each non-top member is added once as itself and
taken once from its scope parent). An own part goes to the member's item, or to the item of the
nearest itemised member above it; with none, a member with meters behind it gives "unmetered and
losses" (``unmetered``: its remainder), one without gives ``unassigned`` (metered, no item).
So the items of a scope, with those two buckets, add up to its total by construction.

Everything here is structure (which meter adds or subtracts in which row); the numbers are the
matrix products in ``analytics.energy.jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from analytics.energy.items import UNASSIGNED, UNMETERED, at_level
from analytics.energy.indicators import Rollup, org_prefixes


@dataclass(frozen=True)
class Scope:
    kind: str        # building | org
    id: str          # building id or org path
    org: str         # the org the rows are tagged with (a building's org; the org path itself)


class Hierarchy:
    """The meters of a computation as a forest. ``meters``: objects with ``id``, ``org``, ``carrier``,
    ``building``, ``parent``, ``item``, ``terms`` (``analytics.energy.jobs.MeterInfo``). A parent
    that is not among them is treated as absent (the meter is a root)."""

    def __init__(self, meters: Sequence) -> None:
        self.meters = list(meters)
        self.ids = [m.id for m in self.meters]
        self.index = {m.id: i for i, m in enumerate(self.meters)}
        n = len(self.meters)
        self.parent = np.full(n, -1, dtype=np.int64)
        for i, m in enumerate(self.meters):
            p = getattr(m, "parent", None)
            if p is not None and p in self.index and p != m.id:
                self.parent[i] = self.index[p]
        self._ancestors = [self._walk(i) for i in range(n)]
        self._members: dict[Scope, list[int]] = {}
        self._scopes: list[Scope] | None = None
        self._item_matrices: dict[tuple[int, ...], ItemMatrix] = {}
        self._children = {}
        for i in range(n):
            if self.parent[i] >= 0:
                self._children.setdefault(int(self.parent[i]), []).append(i)

    def _walk(self, i: int) -> tuple[int, ...]:
        out = []
        p = int(self.parent[i])
        while p >= 0 and p != i and p not in out and len(out) <= len(self.meters):
            out.append(p)
            p = int(self.parent[p])
        return tuple(out)

    def ancestors(self, i: int) -> tuple[int, ...]:
        """Nearest first."""
        return self._ancestors[i]

    def root(self, i: int) -> int:
        a = self._ancestors[i]
        return a[-1] if a else i

    def virtual(self, i: int) -> bool:
        return bool(getattr(self.meters[i], "terms", ()))

    def children(self, i: int) -> list[int]:
        return self._children.get(i, [])

    # -- scopes ---------------------------------------------------------------------------------
    def scopes(self) -> list[Scope]:
        """Every building with meters, and every org at or above a meter's org."""
        if self._scopes is not None:
            return self._scopes
        out: dict[tuple[str, str], Scope] = {}
        building_org: dict[str, str] = {}
        for m in self.meters:
            if m.building is not None:
                building_org.setdefault(m.building, m.org)
        for m in self.meters:
            if m.building is not None:
                out.setdefault(("building", m.building), Scope("building", m.building, building_org[m.building]))
        members: dict[Scope, list[int]] = {}
        for i, m in enumerate(self.meters):
            if m.building is not None:
                members.setdefault(out[("building", m.building)], []).append(i)
            for p in org_prefixes(m.org):
                sc = out.setdefault(("org", p), Scope("org", p, p))
                members.setdefault(sc, []).append(i)
        self._members = members
        self._scopes = list(out.values())
        return self._scopes

    def in_scope(self, i: int, scope: Scope) -> bool:
        m = self.meters[i]
        if scope.kind == "building":
            return m.building == scope.id
        s = scope.id.split("/")
        return m.org.split("/")[: len(s)] == s

    def members(self, scope: Scope) -> list[int]:
        self.scopes()
        if scope in self._members:
            return self._members[scope]
        return [i for i in range(len(self.meters)) if self.in_scope(i, scope)]

    def scope_parent(self, i: int, member: set[int]) -> int:
        """The nearest ancestor of ``i`` among ``member`` (−1: none, ``i`` is a top member)."""
        for a in self._ancestors[i]:
            if a in member:
                return a
        return -1

    def top(self, scope: Scope) -> list[int]:
        mem = self.members(scope)
        ms = set(mem)
        return [i for i in mem if self.scope_parent(i, ms) < 0]

    # -- roll-ups over all rows -----------------------------------------------------------------
    def rollups(self) -> tuple[Rollup, Rollup]:
        """(building, org) ``Rollup``s over the meters (in order): each group per (scope, carrier)
        sums the scope's top meters of that carrier."""
        carriers = [m.carrier for m in self.meters]
        out = []
        for kind in ("building", "org"):
            keys: dict[tuple[str, str], int] = {}
            orgs: list[str] = []
            pairs = []
            for sc in self.scopes():
                if sc.kind != kind:
                    continue
                for i in self.top(sc):
                    k = keys.get((sc.id, carriers[i]))
                    if k is None:
                        k = keys[(sc.id, carriers[i])] = len(keys)
                        orgs.append(sc.org)
                    pairs.append((k, i))
            mat = np.zeros((len(keys), len(self.meters)))
            for k, i in pairs:
                mat[k, i] = 1.0
            ks = list(keys)
            out.append(Rollup(kind, [k[0] for k in ks], orgs, [k[1] for k in ks], mat))
        return out[0], out[1]

    # -- itemised breakdown ---------------------------------------------------------------------
    def item_matrix(self, levels: Sequence[int] = (2, 3)) -> "ItemMatrix":
        """Rows: (scope, carrier, level, item code) and one total row per (scope, carrier); columns:
        meters. Row · consumption per meter = the item's consumption in that scope."""
        key = tuple(levels)
        cached = self._item_matrices.get(key)
        if cached is None:
            cached = self._item_matrices[key] = self._build_item_matrix(key)
        return cached

    def _build_item_matrix(self, levels: tuple[int, ...]) -> "ItemMatrix":
        rows: dict[tuple, int] = {}
        entries: dict[tuple[int, int], float] = {}
        totals: dict[tuple[str, str, str], int] = {}

        def add(key: tuple, col: int, w: float) -> int:
            r = rows.setdefault(key, len(rows))
            entries[(r, col)] = entries.get((r, col), 0.0) + w
            return r

        for sc in self.scopes():
            mem = self.members(sc)
            ms = set(mem)
            sp = {i: self.scope_parent(i, ms) for i in mem}
            kids: dict[int, list[int]] = {i: [] for i in mem}
            for i, p in sp.items():
                if p >= 0:
                    kids[p].append(i)
            # the item a member's part goes to: its own, or that of the nearest itemised member above
            eff: dict[int, str | None] = {}
            for i in sorted(mem, key=lambda j: len(self._ancestors[j])):     # members above come first
                it = self.meters[i].item
                eff[i] = it if it is not None else (eff[sp[i]] if sp[i] >= 0 else None)
            for i in mem:
                c = self.meters[i].carrier
                tk = (sc.kind, sc.id, c)
                if sp[i] < 0:
                    totals.setdefault(tk, 0)
                    add(("total",) + tk, i, 1.0)
                code = eff[i]
                if code is None:
                    code = UNMETERED if kids[i] else UNASSIGNED
                for lvl in levels:
                    key = (sc.kind, sc.id, c, lvl, at_level(code, lvl))
                    add(key, i, 1.0)
                    for k in kids[i]:
                        add(key, k, -1.0)
        scope_org = {(s.kind, s.id): s.org for s in self.scopes()}
        keys = list(rows)
        r_idx = np.array([r for r, _ in entries], dtype=np.int64)
        c_idx = np.array([c for _, c in entries], dtype=np.int64)
        w = np.array(list(entries.values()))
        keep = w != 0
        return ItemMatrix(keys, [scope_org[(k[1], k[2])] if k[0] == "total" else scope_org[(k[0], k[1])]
                                 for k in keys], r_idx[keep], c_idx[keep], w[keep], len(self.meters))

    # -- chunks of whole trees ------------------------------------------------------------------
    def tree_chunks(self, max_rows: int) -> list[list[int]]:
        """Meter indexes in chunks of whole trees (a parent, everything behind it and the virtual
        meters made of them are always in one chunk), trees in order of their first meter, at most
        ``max_rows`` per chunk unless one tree is larger."""
        trees: dict[int, list[int]] = {}
        for i in range(len(self.meters)):
            trees.setdefault(self.root(i), []).append(i)
        chunks: list[list[int]] = []
        cur: list[int] = []
        for members in trees.values():
            if cur and len(cur) + len(members) > max_rows:
                chunks.append(cur)
                cur = []
            cur.extend(members)
        if cur:
            chunks.append(cur)
        return chunks


@dataclass
class ItemMatrix:
    """Sparse rows of signed meter weights. ``keys[r]``: ``(kind, scope id, carrier, level, code)``
    or ``("total", kind, scope id, carrier)``; ``orgs[r]``: the org of the row's scope."""

    keys: list[tuple]
    orgs: list[str]
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    n_meters: int
    _csr: object = field(default=None, repr=False)
    _abs: object = field(default=None, repr=False)

    def csr(self):
        from scipy import sparse

        if self._csr is None:
            self._csr = sparse.csr_matrix((self.weights, (self.rows, self.cols)), shape=(len(self.keys), self.n_meters))
        return self._csr

    def apply(self, per_meter: np.ndarray) -> np.ndarray:
        """(meters, periods) consumption → (rows, periods): unknown values count 0; a row is NaN
        where none of its meters is known."""
        from scipy import sparse

        v = np.asarray(per_meter, dtype=np.float64)
        nan = np.isnan(v)
        out = np.asarray(self.csr() @ np.where(nan, 0.0, v))
        if self._abs is None:
            self._abs = sparse.csr_matrix((np.abs(self.weights), (self.rows, self.cols)), shape=self.csr().shape)
        known = np.asarray(self._abs @ (~nan).astype(np.float64)) > 0
        return np.where(known, out, np.nan)

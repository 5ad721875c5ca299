"""Directed corner tests of the cell array: both array kinds (serial with several cells per
PE, and count-parallel) in Amaranth's simulator against the golden model, on states loaded to
sit exactly on the edge of each comparison the hardware makes, and on configs at the legal
extremes of their fields; and the cycle counts the array reports, checked exactly.

Random runs from trained states rarely put a value exactly on a threshold, so each state here
is built to do so, and each test first checks in the golden model that the corner is really
reached (a boost difference exactly on a table step, the top and bottom table entries, an
overlap duty exactly at the weak limit, a neighbourhood that never overlapped, boosted
overlaps tied between neighbours, permanences at 0, at the connected threshold, one increment
below the top, at the top, a decrement below zero).
"""

import functools

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, Value
from amaranth.sim import Simulator

from cellsp.boards.fit import cycles_per_input
from cellsp.hdl.array import CellArray
from cellsp.host.array_run import Operation, decode_row, input_beats
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.compare import compare_run
from cellsp.sim.config import MIN_DUTY_FRAC_BITS
from cellsp.sim.geometry import ArrayGeometry
from cellsp.sim.layout import layout
from .configs import TINY_BOOSTED
from .hdl_checks import amaranth_sim

#: the two array kinds, each with several cells per processing element
KINDS = ("serial", "parallel", "rows")


def hardware(cfg: SPConfig, kind: str) -> dict:
    """ArrayGeometry options of `kind` (serial, count-parallel, or row-wide serial) for
    `cfg`: one input row a beat, 3 (else 2) cells a PE."""
    columns = cfg.cell_shape[1]
    per_pe = next(p for p in (3, 2, 1) if columns % p == 0)
    return dict(input_width=cfg.input_shape[1], cells_per_pe=per_pe,
                parallel_count=kind == "parallel", row_scan=kind == "rows")


# ---------------------------------------------------------------------------- the comparisons

@functools.lru_cache(maxsize=None)
def neighbourhood_matrix(cfg: SPConfig) -> np.ndarray:
    """(cells, cells) bool: row c marks cell c's 3x3 neighbourhood (itself and its present
    neighbours)."""
    lay = layout(cfg)
    n = cfg.num_cells
    hood = np.eye(n, dtype=bool)
    for c in range(n):
        hood[c, [int(v) for v in lay.neighbour_index[:, c] if v < n]] = True
    return hood


def boost_edges(cfg: SPConfig, active_duty: np.ndarray):
    """SPEC 8 for (cells,) active duties: (table index of each cell, whether it sits exactly on
    a step of the table: one unit less of neighbourhood duty and it would take the entry
    below)."""
    q, d = cfg.boost_index_bits, cfg.duty_bits
    hood = neighbourhood_matrix(cfg)
    duty = np.asarray(active_duty, np.int64).reshape(-1)
    m = hood.sum(1)
    numerator = ((hood @ duty - m * duty) << (q + 1)) + (m << d)
    denominator = m << (d + 1)
    raw = numerator // denominator
    index = np.clip(raw, -(1 << q), 1 << q)
    edge = (numerator % denominator == 0) & (raw > -(1 << q)) & (raw <= 1 << q)
    return index, edge


def weak_edges(cfg: SPConfig, overlap_duty: np.ndarray):
    """SPEC 9 for (cells,) overlap duties: (weak, exactly at the limit (not weak, one unit
    less would be), the neighbourhood never overlapped (its largest duty is 0))."""
    hood = neighbourhood_matrix(cfg)
    duty = np.asarray(overlap_duty, np.int64).reshape(-1)
    largest = np.where(hood, duty[None, :], -1).max(1)
    own = duty << MIN_DUTY_FRAC_BITS
    limit = largest * cfg.min_overlap_duty_q
    return own < limit, (largest > 0) & (own == limit), largest == 0


def next_duty(cfg: SPConfig, duty: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """SPEC 7: duties after a learning step with `hit`."""
    p = cfg.duty_period_log2
    duty = np.asarray(duty, np.int64)
    return duty - (duty >> p) + hit.astype(np.int64) * (1 << (cfg.duty_bits - p))


def place_duties(cfg: SPConfig, state, x, rng, peak: bool, tries: int = 150):
    """`state` with its duty cycles chosen so that after a learning step on `x` as many cells as
    a search finds sit exactly on a boost table step (the active duties) and exactly at the weak
    limit (the overlap duties). Activity does not depend on the duties, so the step's hits are
    those of `state`; each cell's duty after the step is searched among the values it can
    reach, one cell at a time, keeping any change that does not lose an edge."""
    probe = GoldenModel(cfg)
    probe.set_state(state)
    probe.step(x, learn=True)
    n = cfg.num_cells
    hits = {"active": probe.last["active"].reshape(-1),
            "overlap": probe.last["overlap"].reshape(-1) > 0}
    values = np.arange(cfg.duty_one + 1)
    reach = {}          # (field, hit) -> {duty after the step: a duty before it}
    for name, hit in hits.items():
        for h in (False, True):
            after = next_duty(cfg, values, np.full(values.shape, h))
            reach[name, h] = {int(a): int(b) for b, a in zip(values, after)}

    def score(name, duty):
        if name == "active":
            index, edge = boost_edges(cfg, duty)
            top = 1 << cfg.boost_index_bits
            return 4 * edge.sum() + 20 * (edge & (np.abs(index) == top)).sum() + len(set(index))
        _, edge, never = weak_edges(cfg, duty)
        return 4 * edge.sum() + (never.any() and not never.all())

    placed = state.copy()
    for name in ("active", "overlap"):
        choices = [sorted(reach[name, bool(h)]) for h in hits[name]]
        if peak:
            low = int(rng.integers(n))
            after = np.array([c[0] if i == low else c[-1] for i, c in enumerate(choices)])
            if name == "active":
                lower_to_top_entry(cfg, after, low, choices)
        else:
            after = np.array([rng.choice(c) for c in choices])
        best = score(name, after)
        for _ in range(tries):
            c = int(rng.integers(n))
            options = choices[c] if len(choices[c]) <= 40 else rng.choice(choices[c], 40)
            for v in rng.permutation(options):
                trial = after.copy()
                trial[c] = v
                s = score(name, trial)
                if s >= best:
                    after, best = trial, s
        before = [reach[name, bool(h)][int(v)] for h, v in zip(hits[name], after)]
        getattr(placed, f"{name}_duty")[...] = np.array(before).reshape(cfg.cell_shape)
    return placed


def lower_to_top_entry(cfg: SPConfig, after: np.ndarray, low: int, choices) -> None:
    """Lower the active duties `after` of cell `low`'s neighbours, each within its `choices`,
    until `low` sits exactly on the step to the boost table's top entry (when they can)."""
    q, d = cfg.boost_index_bits, cfg.duty_bits
    if d <= q:
        return
    hood = neighbourhood_matrix(cfg)[low]
    m = int(hood.sum())
    need = m * int(after[low]) + m * (1 << (d - q - 1)) * ((1 << (q + 1)) - 1)
    for c in np.flatnonzero(hood):
        excess = int(after[hood].sum()) - need
        if c == low or excess <= 0:
            continue
        after[c] = min(v for v in choices[c] if v >= after[c] - excess)


def overlap_state(cfg: SPConfig, base, x, overlaps, boosts=None):
    """`base` with permanences set so that cell c has exactly overlaps[c] connected pool slots
    on 1-inputs of `x` (the others on 1-inputs just below the threshold), and every other pool
    slot connected (on 0-inputs: they learn down) or not in turn; `boosts` as given."""
    model = GoldenModel(cfg)
    state = base.copy()
    thr = cfg.connected_threshold
    flat_x = np.asarray(x).reshape(-1)
    perm = np.zeros((cfg.num_cells, cfg.window_size), np.uint16)
    for c, ov in enumerate(np.ravel(overlaps)):
        pool = np.flatnonzero(model.layout.potential[c])
        ones = [p for p in pool if flat_x[model.layout.input_index[c, p]]]
        zeros = [p for p in pool if not flat_x[model.layout.input_index[c, p]]]
        assert ov <= len(ones), f"cell {c}: overlap {ov} asked, {len(ones)} inputs on"
        perm[c, ones] = thr - 1
        perm[c, ones[:ov]] = thr
        for k, p in enumerate(zeros):
            perm[c, p] = thr if k % 2 == 0 else thr - 1
    state.permanences = perm.reshape(state.permanences.shape)
    if boosts is not None:
        state.boost = np.asarray(boosts, np.uint16).reshape(cfg.cell_shape)
    return state


def corner_permanences(cfg: SPConfig) -> list[int]:
    """Permanences where learning, bumping and the connected test change behaviour: 0, a
    decrement (and one less and more), the threshold and one below it, one increment or bump
    below the top (and one more), the top."""
    top, thr = cfg.perm_max, cfg.connected_threshold
    inc, dec, bump = cfg.perm_inc, cfg.perm_dec, cfg.perm_bump
    values = {0, 1, dec - 1, dec, dec + 1, thr - 1, thr, thr + 1, thr - inc, thr + dec - 1,
              thr + dec, top - inc - 1, top - inc, top - inc + 1, top - bump, top - bump + 1,
              top - 1, top}
    return sorted(v for v in values if 0 <= v <= top)


def permanence_state(cfg: SPConfig, base, shift: int = 0):
    """`base` with each cell's pool slots cycling through `corner_permanences` (each cell
    starting `shift` further on, so every value meets inputs of both levels)."""
    model = GoldenModel(cfg)
    values = corner_permanences(cfg)
    perm = np.zeros((cfg.num_cells, cfg.window_size), np.uint16)
    for c in range(cfg.num_cells):
        for k, p in enumerate(np.flatnonzero(model.layout.potential[c])):
            perm[c, p] = values[(k + c * shift) % len(values)]
    state = base.copy()
    state.permanences = perm.reshape(state.permanences.shape)
    return state


# ---------------------------------------------------------------------------- the run

def run_episodes(cfg: SPConfig, kind: str, episodes) -> None:
    """Run `episodes` [(name, state to load or None, [(x, learn), ...])] one after the other
    on the `kind` array (each: a load, its steps, a read-back) and fail, naming the episode,
    step, cell and field, unless every active bit and every read-back state equal the golden
    model's."""
    ops, golden = [], GoldenModel(cfg)
    expected = []            # (name, active maps, state after)
    for name, state, steps in episodes:
        if state is not None:
            ops.append(Operation("load", state=state))
            golden.set_state(state)
        ops += [Operation("step", x=x, learn=learn) for x, learn in steps] + [Operation("read")]
        maps = [golden.step(x, learn=learn) for x, learn in steps]
        expected.append((name, np.array(maps), golden.state()))
    result = amaranth_sim(cfg, **hardware(cfg, kind)).run(ops)
    assert result.failure is None, result.failure
    got = result.active_maps()
    first = 0
    problems = []
    for (name, maps, state), read in zip(expected, result.states):
        report = compare_run(maps, got[first:first + len(maps)], state, read, first_step=first)
        if report:
            problems.append(f"{name}: {report}")
        first += len(maps)
    assert not problems, "\n".join(problems)


def random_inputs(cfg: SPConfig, rng, count: int, density: float = 0.5) -> np.ndarray:
    """`count` random inputs for `cfg`, each bit on with probability `density`."""
    return rng.random((count,) + tuple(cfg.input_shape)) < density


def tied_boosts(cfg: SPConfig, rng, overlaps_max: int):
    """(overlaps, boosts) per cell giving boosted overlaps mostly equal to one value v (some
    v - 1 and v + 1), each reached from a different (overlap, boost) pair where possible: the
    floor of the product lands exactly on the neighbour's value."""
    f, top = cfg.boost_frac_bits, (1 << cfg.boost_bits) - 1
    pairs = {}
    for ov in range(max(1, cfg.stimulus_threshold), overlaps_max + 1):
        for b in range(1, top + 1):
            pairs.setdefault((ov * b) >> f, []).append((ov, b))
    value = max((v for v in pairs if v > 0), key=lambda v: (len(pairs[v]), v))
    near = [v for v in (value - 1, value + 1) if v > 0 and v in pairs]
    targets = rng.choice([value] * 6 + near, cfg.num_cells)
    chosen = [pairs[int(t)][int(rng.integers(len(pairs[int(t)])))] for t in targets]
    return [ov for ov, _ in chosen], [b for _, b in chosen]


def most_ones(cfg: SPConfig, x) -> int:
    """The fewest 1-inputs any cell's pool sees in `x`."""
    model = GoldenModel(cfg)
    flat = np.asarray(x).reshape(-1)
    return min(int(flat[model.layout.input_index[c, model.layout.potential[c]]].sum())
               for c in range(cfg.num_cells))


@functools.lru_cache(maxsize=None)
def corner_episodes(cfg: SPConfig, seed: int):
    """The episodes every corner config runs, and what they reach in the golden model:
    from the initial state with empty and one-bit inputs; boosted overlaps tied between
    neighbours; duties placed on boost steps and weak limits; permanences at their corners."""
    rng = np.random.default_rng(seed)
    base = GoldenModel(cfg).state()
    empty = np.zeros(cfg.input_shape, bool)
    one_bit = empty.copy()
    one_bit.flat[int(rng.integers(cfg.num_inputs))] = True
    episodes = [("initial state, empty and one-bit inputs", None,
                 [(empty, True), (one_bit, True), (one_bit, False)])]
    reached = {"ties": 0, "boost edges": 0, "top entry": 0, "weak edges": 0, "never": 0,
               "perm corners": 0}
    # inputs on the left third only: under 'clip' the cells far right and their neighbourhoods
    # never overlap, while the others do
    left = empty.copy()
    left[:, :max(1, cfg.input_shape[1] // 3)] = True
    model = GoldenModel(cfg)
    model.step(left, learn=True)
    _, _, never = weak_edges(cfg, model.overlap_duty)
    reached["never"] = int(never.sum()) if not never.all() else 0
    episodes.append(("inputs on the left third", base, [(left, True), (left, True), (left, False)]))
    # ties of boosted overlaps (3 steps: one inferring, two learning, the second counting
    # with the first one's updates)
    x = random_inputs(cfg, rng, 1, 0.85)[0]
    if most_ones(cfg, x) < max(1, cfg.stimulus_threshold):
        x = np.ones(cfg.input_shape, bool)
    overlaps, boosts = tied_boosts(cfg, rng, max(1, most_ones(cfg, x)))
    tied = overlap_state(cfg, base, x, overlaps, boosts)
    model = GoldenModel(cfg)
    model.set_state(tied)
    model.step(x, learn=False)
    bo = model.last["boosted"].reshape(-1)
    hood = neighbourhood_matrix(cfg) & ~np.eye(cfg.num_cells, dtype=bool)
    reached["ties"] = int((hood & (bo[:, None] == bo[None, :]) & (bo[:, None] > 0)).sum()) // 2
    episodes.append(("boosted overlaps tied", tied, [(x, False), (x, True), (x, True)]))
    # duties on boost steps and on weak limits, two placements (one when a duty can only be
    # 0 or 1 after a step: then no placement moves an edge)
    for k in range(2 if cfg.duty_period_log2 else 1):
        x = random_inputs(cfg, rng, 1)[0]
        start = permanence_state(cfg, base, shift=k + 1)
        placed = place_duties(cfg, start, x, rng, peak=k == 1)
        model = GoldenModel(cfg)
        model.set_state(placed)
        model.step(x, learn=True)
        index, edge = boost_edges(cfg, model.active_duty)
        reached["boost edges"] += int(edge.sum())
        reached["top entry"] += int((edge & (np.abs(index) == 1 << cfg.boost_index_bits)).sum())
        _, wedge, never = weak_edges(cfg, model.overlap_duty)
        reached["weak edges"] += int(wedge.sum())
        reached["never"] += int(never.sum())
        steps = [(x, True)] + [(y, t == 0) for t, y in enumerate(random_inputs(cfg, rng, 2))]
        episodes.append((f"duties on edges {k}", placed, steps))
    # permanences at their corners, a few learning steps
    start = permanence_state(cfg, base, shift=3)
    X = random_inputs(cfg, rng, 3)
    model = GoldenModel(cfg)
    model.set_state(start)
    before = model.permanences.copy()
    model.step(X[0], learn=True)
    moved = model.permanences != before
    reached["perm corners"] = int((moved & np.isin(before, [0, cfg.perm_max])).sum()
                                  + (model.permanences == cfg.perm_max)[moved].sum())
    episodes.append(("permanences at their corners", start,
                     [(X[0], True), (X[1], True), (X[2], False)]))
    return episodes, reached


#: configs at the legal extremes of their fields, each with what its episodes must reach
CORNER_CONFIGS = {
    # stimulus threshold 0, one winner, the smallest boost table, a fast duty period
    "wrap-k1-stimulus0-q0": (
        SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, potential_pct=1.0,
                 winners=1, stimulus_threshold=0, boost_index_bits=0, boost_strength=2.0,
                 duty_bits=4, duty_period_log2=2, min_overlap_duty_pct=1.0, perm_bits=5,
                 connected_threshold=16, init_spread=8, perm_inc=5, perm_dec=3, perm_bump=2),
        {"ties": 1, "boost edges": 1, "top entry": 1, "weak edges": 1}),
    # every positive cell wins, boost table of 5 entries, the slowest duty period
    "wrap-k9-q1-period-max": (
        SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, potential_pct=1.0,
                 winners=9, stimulus_threshold=1, boost_index_bits=1, boost_strength=1.5,
                 duty_bits=5, duty_period_log2=5, min_overlap_duty_pct=0.5, perm_bits=4,
                 connected_threshold=8, init_spread=4, perm_inc=3, perm_dec=2, perm_bump=5),
        {"ties": 1, "boost edges": 3, "top entry": 1, "weak edges": 1, "perm corners": 1}),
    # clipped 4x4, 9 boost entries, k = 2, the fastest duty period (a duty is 0 or 1), a
    # neighbourhood that never overlapped
    "clip-4x4-k2-q2": (
        SPConfig(input_shape=(8, 8), cell_shape=(4, 4), potential_radius=1, potential_pct=1.0,
                 edge="clip", winners=2, stimulus_threshold=2, boost_index_bits=2,
                 boost_strength=2.0, duty_bits=6, duty_period_log2=0, min_overlap_duty_pct=0.25,
                 perm_bits=6, connected_threshold=32, init_spread=16, perm_inc=7, perm_dec=5,
                 perm_bump=9),
        {"ties": 1, "never": 1, "perm corners": 1}),
    # clipped 3x5 (neighbourhoods of 4 and 6), 9 boost entries, the slowest duty period
    "clip-3x5-k3-q2": (
        SPConfig(input_shape=(6, 10), cell_shape=(3, 5), potential_radius=1, potential_pct=1.0,
                 edge="clip", winners=3, stimulus_threshold=1, boost_index_bits=2,
                 boost_strength=2.0, duty_bits=6, duty_period_log2=6, min_overlap_duty_pct=0.5,
                 perm_bits=6, connected_threshold=32, init_spread=16, perm_inc=7, perm_dec=5,
                 perm_bump=9),
        {"ties": 1, "boost edges": 2, "weak edges": 1, "perm corners": 1}),
    # the narrowest fields: 1-slot windows, 2-bit permanences stepping the whole range,
    # 2-bit boosts, 1-bit duties
    "narrowest-fields": (
        SPConfig(input_shape=(3, 3), cell_shape=(3, 3), potential_radius=0, potential_pct=1.0,
                 winners=1, stimulus_threshold=1, boost_bits=2, boost_frac_bits=1,
                 boost_index_bits=1, boost_strength=1.0, duty_bits=1, duty_period_log2=1,
                 min_overlap_duty_pct=1.0, perm_bits=2, connected_threshold=2, init_spread=2,
                 perm_inc=3, perm_dec=3, perm_bump=1),
        {"ties": 1, "weak edges": 1}),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(CORNER_CONFIGS))
def test_array_on_the_edges_of_its_comparisons(name, kind):
    """Each corner config's episodes (initial state with empty and one-bit inputs, tied
    boosted overlaps, duties on boost steps and weak limits, permanences at their corners)
    through the `kind` array, bit for bit with the golden model."""
    cfg, needs = CORNER_CONFIGS[name]
    episodes, reached = corner_episodes(cfg, seed=len(name))
    for what, least in needs.items():
        assert reached[what] >= least, f"{what}: {reached[what]} reached, {least} needed"
    run_episodes(cfg, kind, episodes)


# ---------------------------------------------------------------------------- cycle counts

def isolated_latency(geometry: ArrayGeometry, previous_learned: bool) -> int:
    """The cycles a step reports when it arrives at an idle array (from its first input beat
    taken to the cycle before its first row is offered), from the sequencers' structure:

    serial: the input's beats, 1 to take it, P slots of L = max(N + 3, B + 1) cycles (at least
    the boost table's try cycles + 1 when the step before learned: its boosts are tried during
    the slots, 2^(q+1) + 1 of them a try a cycle, or `boost_tries_per_cycle` a cycle in the
    row-wide array, whose N is the window's rows), B for the last cell's product, P to
    inhibit, 1 to publish;
    count-parallel: the beats, 1 to take it, max(N, P - 1) + 1 to scan, 1 for the products, P
    to inhibit, 1 to publish.
    """
    cfg = geometry.config
    p, n, b = geometry.cells_per_pe, geometry.scan_steps, cfg.boost_bits
    if geometry.parallel_count:
        return geometry.beats_per_input + 1 + max(n, p - 1) + 1 + 1 + p + 1
    slot = max(n + 3, b + 1, geometry.boost_try_cycles + 1 if previous_learned else 0)
    return geometry.beats_per_input + 1 + p * slot + b + p + 1


def run_isolated(geometry: ArrayGeometry, steps):
    """Each (x, learn) of `steps` fed to an idle array, its rows taken at once; returns per
    step (the cycles the array reports, the cycles a counter in the bench saw from the first
    input beat taken to the first row offered, the active map)."""
    dut = CellArray(geometry)
    top = Module()
    top.submodules.array = dut
    now = Signal(32)
    top.d.sync += now.eq(now + 1)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    out = []
    h = geometry.config.cell_shape[0]

    async def bench(ctx):
        for x, learn in steps:
            first = None
            ctx.set(dut.inputs.valid, 1)
            for beat in input_beats(geometry, x):
                ctx.set(Value.cast(dut.inputs.payload), beat | int(learn) << geometry.input_width)
                taken = False
                while not taken:
                    _, _, taken, cycle = await ctx.tick().sample(dut.inputs.ready, now)
                first = cycle if first is None else first
            ctx.set(dut.inputs.valid, 0)
            ctx.set(dut.outputs.ready, 1)
            rows, offered = [], None
            for _ in range(100 * geometry.state_words):
                _, _, valid, payload, cycle = await ctx.tick().sample(
                    dut.outputs.valid, Value.cast(dut.outputs.payload), now)
                if valid:
                    offered = cycle if offered is None else offered
                    rows.append(decode_row(geometry, payload))
                    if len(rows) == h:
                        break
            assert len(rows) == h, "the array sent no rows"
            ctx.set(dut.outputs.ready, 0)
            await ctx.tick().repeat(3)
            out.append((rows[0][1], offered - first, np.array([r for r, _ in rows], bool)))

    sim.add_testbench(bench)
    sim.run()
    return out


CYCLE_CONFIGS = {
    # the boost table (33 entries) sets the slot after a learning step, the window (N = 9)
    # otherwise
    "tiny-boosted": TINY_BOOSTED,
    # one-slot windows: the boost multiply (B = 8) sets the serial slot, the PE's cells (P = 3
    # > N + 1) the count-parallel scan
    "radius0": SPConfig(input_shape=(3, 3), cell_shape=(3, 3), potential_radius=0,
                        potential_pct=1.0, stimulus_threshold=1, boost_index_bits=1,
                        boost_strength=1.0, duty_bits=4, duty_period_log2=1),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(CYCLE_CONFIGS))
def test_reported_cycles_are_exact(name, kind):
    """The cycles each step reports equal those a counter in the bench sees and the
    sequencer's formula (`isolated_latency`) for every order of learning and inferring steps;
    streamed back to back, the steps come out exactly `boards.fit.cycles_per_input` apart,
    learning and inferring, measured as the HDL bench measures it (from the cycle stamps of
    the steps' last rows); and every active bit is the golden model's."""
    cfg = CYCLE_CONFIGS[name]
    geometry = ArrayGeometry.for_config(cfg, **hardware(cfg, kind))
    rng = np.random.default_rng(1)
    flags = [False, False, True, True, False]        # every order of the two kinds
    X = random_inputs(cfg, rng, len(flags), 0.4)
    golden = GoldenModel(cfg)
    previous = False
    for t, (reported, seen, active) in enumerate(run_isolated(geometry, list(zip(X, flags)))):
        want = isolated_latency(geometry, previous)
        assert (reported, seen) == (want, want), f"step {t}: reported {reported}, bench " \
                                                 f"counter {seen}, formula {want}"
        assert (active == golden.step(X[t], learn=flags[t])).all(), f"step {t}"
        previous = flags[t]
    steps = 4
    X = random_inputs(cfg, rng, 2 * steps, 0.4)
    ops = [Operation("step", x=x, learn=t < steps) for t, x in enumerate(X)]
    result = amaranth_sim(cfg, **hardware(cfg, kind)).run(ops)
    assert (result.active_maps() == GoldenModel(cfg).run(X, learn=np.arange(2 * steps) < steps)
            ).all()
    stamps = np.array(result.cycle_stamps)
    learning = (stamps[steps - 1] - stamps[0]) / (steps - 1)
    inferring = (stamps[-1] - stamps[steps]) / (steps - 1)
    assert list(np.diff(stamps[:steps])) == [cycles_per_input(geometry, learn=True)] * (steps - 1)
    assert list(np.diff(stamps[steps:])) == [cycles_per_input(geometry, learn=False)] * (steps - 1)
    assert (learning, inferring) == (cycles_per_input(geometry, True),
                                     cycles_per_input(geometry, False))
    assert result.steps[0].cycles == isolated_latency(geometry, False)


#: the widest fields: 16-bit permanences stepped the whole range by every update, 16-bit
#: boosts with 15 fraction bits at the strongest boosting, 24-bit duties over the slowest
#: period, the largest stimulus threshold (the whole window) and 9 winners
WIDEST = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1, potential_pct=1.0,
                  winners=9, stimulus_threshold=9, boost_bits=16, boost_frac_bits=15,
                  boost_index_bits=3, boost_strength=32.0, duty_bits=24, duty_period_log2=24,
                  min_overlap_duty_pct=1.0, perm_bits=16, connected_threshold=32768,
                  init_spread=32768, perm_inc=65535, perm_dec=65535, perm_bump=65535)


@pytest.mark.parametrize("kind", KINDS)
def test_array_at_the_widest_fields(kind):
    """The widest config (stimulus threshold the whole window, and 0) from the initial state
    with all inputs on, then from random duties, boosts and corner permanences, through the
    `kind` array, bit for bit with the golden model."""
    rng = np.random.default_rng(3)
    X = random_inputs(WIDEST, rng, 3)
    state = permanence_state(WIDEST, GoldenModel(WIDEST).state(), shift=1)
    state.active_duty[...] = rng.integers(0, WIDEST.duty_one + 1, WIDEST.cell_shape)
    state.overlap_duty[...] = rng.integers(0, WIDEST.duty_one + 1, WIDEST.cell_shape)
    state.boost[...] = rng.integers(1, 1 << WIDEST.boost_bits, WIDEST.cell_shape)
    for cfg in (WIDEST, WIDEST.replace(stimulus_threshold=0)):
        run_episodes(cfg, kind, [
            ("initial state, all inputs on", None,
             [(np.ones(cfg.input_shape, bool), True), (X[0], False)]),
            ("random duties and boosts", state, [(X[1], True), (X[2], True), (X[0], False)])])

"""`cellsp verify`: the simulated HDL against the golden model, bit for bit; exits 0 when every
output matches, 1 on a mismatch, 2 on an error."""

from __future__ import annotations

from tqdm import tqdm


from .options import add_command, add_hardware, add_seed, add_steps, float_in, hardware, positive

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    """Declare `cellsp verify`."""
    p = add_command(sub, "verify", run, help="simulated HDL against the golden model, bit for bit",
                    description="Exits 0 when every output matches, 1 on a mismatch, 2 on an "
                                "error.")
    p.add_argument("--sim", choices=["amaranth", "verilator"], default="verilator")
    add_hardware(p, default_cells_per_pe=1, transport_default=None,
                 transport_help="verify through the protocol engine and host driver instead: "
                                "verilator, amaranth (or serial:PORT with a board)")
    add_steps(p, 100, "random inputs to run (default 100)")
    p.add_argument("--learn", action="store_true", help="learn on every input")
    add_seed(p, "seed of the random inputs")
    p.add_argument("--input-width", type=positive, help="input bits per beat (default: Win)")
    p.add_argument("--lanes", type=positive, default=4,
                   help="processing elements per memory word (default 4)")
    p.add_argument("--idle", type=float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of idle input cycles (0 to 1, excluded)")
    p.add_argument("--stall", type=float_in(0, 1, hi_open=True), default=0.0,
                   help="probability of output back-pressure (0 to 1, excluded)")


def run(args) -> int:
    """Simulated HDL against the golden model. Always ends with the line
    `verify: N steps, M mismatches` on stdout; exits 1 on a mismatch, 2 on any error (one
    line on stderr)."""
    # the simulators import Amaranth and cocotb: loaded when a verification runs
    from cellsp.host import verify as verification

    report = verification.VerifyReport()
    try:
        cfg, p, transport = hardware(args)
        hw = {"lanes": args.lanes, "idle": args.idle, "stall": args.stall, "cells_per_pe": p}
        if transport:
            hw = {"cells_per_pe": p, "transport": transport}
        if args.parallel:
            hw["parallel_count"] = True
        if args.input_width:
            hw["input_width"] = args.input_width
        how = f"{transport} through the protocol" if transport else args.sim
        print(f"cellsp verify: {how}, {cfg.cell_shape[0]}x{cfg.cell_shape[1]} cells "
              f"({p} per processing element{', counted in parallel' if args.parallel else ''}), "
              f"config {cfg.hash}, {args.steps} random inputs, "
              f"learning {'on' if args.learn else 'off'}")
        with tqdm(total=args.steps, unit="step", leave=False, dynamic_ncols=True,
                  disable=None) as bar:
            report = verification.verify(cfg, sim=args.sim, steps=args.steps, learn=args.learn,
                                         seed=args.seed, progress=bar.update, log=bar.write, **hw)
    except BaseException:   # main() says what failed, in one line on stderr
        print(report.line())
        raise
    for message in report.messages[:20]:
        print(f"  {message}")
    print(report.line())
    return 1 if report.mismatches else 0

"""`cellsp demo` and `cellsp compare`: the main job (the hardware SP and the software SP on the
digits data, checked bit for bit against the golden model, with a report folder). Both names
take the same options; `compare` is the name for a config (and board) of one's own."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from cellsp.host.files import output_dir
from cellsp.sim.geometry import ArrayGeometry

from .options import add_command, add_hardware, hardware, int_at_least, positive

__all__ = ["add_parser"]

_REPORT_HELP = ("report folder (default: ./cellsp-report); created if missing, its report "
                "files are replaced")


def add_parser(sub) -> None:
    """Declare `cellsp demo` and `cellsp compare`."""
    for name, help in [("demo", "the main job: run the SP on the digits data and report"),
                       ("compare", "the demo's comparison on a given config (and data)")]:
        p = add_command(sub, name, run, help=help)
        add_hardware(p, default_cells_per_pe=16, aliases=("--target",))
        p.add_argument("--passes", type=positive, default=3,
                       help="learning passes over the training digits (default 3)")
        p.add_argument("--limit", type=int_at_least(10), metavar="N",
                       help="use only the first N digits (at least 10: the readout trains on "
                            "two thirds and tests on the rest)")
        p.add_argument("--out", default="cellsp-report", metavar="DIR", help=_REPORT_HELP)


@contextmanager
def _input_bar(total: int, desc: str):
    with tqdm(total=total, desc=desc, unit="input", leave=False, dynamic_ncols=True) as bar:
        yield bar.update


def run(args) -> int:
    """Run the demo; 0 when the hardware matched the golden model bit for bit, 1 otherwise."""
    # scikit-learn and matplotlib take a second to load: only the demo needs them
    from cellsp.host.demo import load_demo_data, run_demo

    cfg, p, transport = hardware(args)
    geometry = ArrayGeometry.for_config(cfg, cells_per_pe=p, parallel_count=args.parallel)
    out_dir = output_dir(Path(args.out), "--out")
    data = load_demo_data(cfg, passes=args.passes, limit=args.limit)
    print(f"cellsp {args.command}: {data.describe(cfg)}; {cfg.cell_shape[0]}x"
          f"{cfg.cell_shape[1]} cells, {p} per processing element"
          f"{' (counted in parallel)' if args.parallel else ''}, config {cfg.hash}; "
          f"target {transport}")
    result = run_demo(data, geometry, out_dir=out_dir, target=transport, log=print,
                      bar=_input_bar)
    print()
    print("\n".join(result.table))
    print(f"\n{result.check_line()}")
    print(f"wrote {out_dir}/report.md, {len(result.plots)} plots and summary.json")
    if not result.bit_exact:
        print(f"cellsp {args.command}: FAILED: the hardware differs from the golden model "
              f"(see above)")
        return 1
    return 0

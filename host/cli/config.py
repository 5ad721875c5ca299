"""`cellsp config`: print the default config, or validate a config file, with its derived
values."""

from __future__ import annotations

from .options import add_command, load_config

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    """Declare `cellsp config`."""
    p = add_command(sub, "config", run,
                    help="print the default config, or validate a config file")
    p.add_argument("config", nargs="?", metavar="FILE", help="SPConfig JSON to validate and show")
    p.add_argument("--derived", action="store_true", help="also print derived values")


def run(args) -> int:
    """Print a config (the default, or a file's, validated) with its derived values."""
    cfg = load_config(args.config)
    print(cfg.to_json(), end="")
    if args.derived:
        derived = {
            "config_hash": cfg.hash, "window_size": cfg.window_size,
            "potential_synapses_min": cfg.potential_counts_min, "overlap_bits": cfg.overlap_bits,
            "boosted_bits": cfg.boosted_bits, "duty_reg_bits": cfg.duty_reg_bits,
            "boost_table": list(cfg.boost_table),
        }
        for key, value in derived.items():
            print(f"# {key}: {value}")
    return 0

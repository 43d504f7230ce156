"""What every command line shares: config loading with overrides, the run
directory, and starting or joining Ray."""

from __future__ import annotations

import argparse
import sys

from conlst_ray.config import ConfigError, config_help, load_config


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (key=default [range]):\n" + "\n".join(config_help()))
    parser.add_argument("--config", help="YAML config file (defaults < file < overrides)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. conl.gamma=0.8")
    return parser


def load_or_report(args):
    """The resolved config, or None after printing a one-line error (the
    command then exits with status 2)."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def parse(parser: argparse.ArgumentParser, argv=None):
    """(args, resolved config); the config is None after a reported error."""
    # intermixed: overrides may come before and after flags (a=1 --resume b=2)
    args = parser.parse_intermixed_args(argv)
    return args, load_or_report(args)


def add_ray_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join ('auto' inside a cluster); default: start a local Ray")


def init_ray(address=None, num_cpus=None):
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, log_to_driver=False)
    return ray

"""``python -m conlst_ray.tune``: the command lives in conlst_ray/commands/tune.py."""

from conlst_ray.commands.tune import main

if __name__ == "__main__":
    raise SystemExit(main())

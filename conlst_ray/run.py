"""``python -m conlst_ray.run``: the command lives in conlst_ray/commands/run.py."""

from conlst_ray.commands.run import main

if __name__ == "__main__":
    raise SystemExit(main())

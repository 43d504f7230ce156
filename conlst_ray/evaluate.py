"""``python -m conlst_ray.evaluate``: the command lives in conlst_ray/commands/evaluate.py."""

from conlst_ray.commands.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())

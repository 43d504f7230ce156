"""``python -m conlst_ray.translate``: the command lives in conlst_ray/commands/translate.py."""

from conlst_ray.commands.translate import main

if __name__ == "__main__":
    raise SystemExit(main())

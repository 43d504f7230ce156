"""``python -m conlst_ray.report``: the command lives in conlst_ray/commands/report.py."""

from conlst_ray.commands.report import main

if __name__ == "__main__":
    raise SystemExit(main())

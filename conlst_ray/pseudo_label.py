"""``python -m conlst_ray.pseudo_label``: the command lives in conlst_ray/commands/pseudo_label.py."""

from conlst_ray.commands.pseudo_label import main

if __name__ == "__main__":
    raise SystemExit(main())

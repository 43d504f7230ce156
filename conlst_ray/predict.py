"""``python -m conlst_ray.predict``: the command lives in conlst_ray/commands/predict.py."""

from conlst_ray.commands.predict import main

if __name__ == "__main__":
    raise SystemExit(main())

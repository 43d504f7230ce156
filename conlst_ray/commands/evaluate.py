"""``python -m conlst_ray.evaluate MODEL_DIR [MODEL_DIR ...] --corpus SPEC --langs ...``:
per-language accuracy of saved models on any labelled corpus.

Any model directory conlst_ray saved (a stage's ``model/``), or any Hugging
Face encoder directory, is scored on the labelled rows of ``SPEC`` read for
each language (``{lang}`` in the spec), in the driver -- no Ray needed. The
table (languages as columns, the paper's Tables 1-2 layout, ``avg`` over the
languages other than ``--source-lang``) is printed and, with ``--out STEM``,
written as ``STEM.md`` and ``STEM.csv``.

    python -m conlst_ray.evaluate runs/x/source/model runs/x/ssl/model \\
        --corpus 'xnli_tsv:../shared/data/xnli/dev-{lang}.tsv' --langs en fr zh ur --out runs/x/xnli_dev
    python -m conlst_ray.evaluate runs/x/ssl/model \\
        --corpus 'csv:test.csv?text=sentence1&text_pair=sentence2&label=gold' --langs de

The corpus is read as the task the models were trained for (``data.task``,
recorded in their ``config.json``: single texts or pairs, the label names);
a model without that record is taken to be an NLI model. Row names are the
directories' parents (``source``, ``ssl``, ...) unless given as ``NAME=DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conlst_ray.commands.common import add_debug, entry_point, printable
from conlst_ray.data.readers import check_language_template, read_languages
from conlst_ray.data.schema import CorpusError
from conlst_ray.data.task import Task
from conlst_ray.pipeline.preflight import UserError, check_model, writable_dir_problem
from conlst_ray.reporting.tables import language_rows, to_markdown, write_table
from conlst_ray.storage.lock import in_progress


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conlst_ray.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="[NAME=]MODEL_DIR", help="saved model directories")
    parser.add_argument("--corpus", required=True, help="labelled corpus spec, {lang} replaced per language "
                        "(formats: see conlst_ray/data/readers.py)")
    parser.add_argument("--langs", nargs="+", required=True, help="language codes to score")
    parser.add_argument("--source-lang", default="en", help="left out of the 'avg' column (default en)")
    parser.add_argument("--max-rows", type=int, default=None, help="first N rows per language")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (pair)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--on-malformed", choices=("raise", "skip"), default="raise")
    parser.add_argument("--out", default=None, help="write STEM.md and STEM.csv")
    add_debug(parser)
    return parser


def _named(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists():
        return name, Path(path)
    path = Path(spec)
    return (path.parent.name if path.name == "model" else path.name), path


def task_of(model_dirs: list[Path]):
    """The task the models were trained for (saved with them; NLI when
    none says): it decides how the corpus is read. Models of different tasks
    cannot be scored on one corpus."""
    from conlst_ray.models.encoder import read_meta

    tasks = {}
    for path in model_dirs:
        saved = read_meta(path).get("task")
        tasks[str(path)] = Task(saved["kind"], tuple(saved["labels"])) if saved else Task()
    first = next(iter(tasks.values()))
    if any(task != first for task in tasks.values()):
        raise CorpusError("the models classify different tasks: " + "; ".join(
            f"{path}: {task.describe()}" for path, task in tasks.items()))
    return first


def score(model_dir: Path, table, max_length: int, batch_size: int) -> dict:
    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.models.tokenizers import open_tokenizer
    from conlst_ray.training.inference import accuracy_on, default_device

    if not model_dir.is_dir():
        raise CorpusError(f"{model_dir}: no such model directory")
    return accuracy_on(ConlstEncoder.load(model_dir), open_tokenizer(str(model_dir)), table,
                       max_length, batch_size, default_device())


def check_arguments(args, named: list) -> None:
    """Every argument checked before a model is loaded or a row scored."""
    from conlst_ray.models.encoder import max_text_length, read_meta

    for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length),
                        ("--max-rows", args.max_rows)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    for name, path in named:
        problems = check_model(f"model {name}", str(path), need_weights=True)
        if problems or not path.is_dir():
            raise UserError(problems[0] if problems else f"model {name}: {path} is not a model folder")
        read_meta(path)  # a corrupt config.json is one line, not a traceback
        limit = max_text_length(str(path))
        if limit is not None and args.max_length > limit:
            raise UserError(f"--max-length {args.max_length}: {path} has {limit} positions")
    check_language_template(args.corpus, args.langs, "--corpus")
    if args.out:
        problem = writable_dir_problem("--out", Path(args.out).absolute().parent)
        if problem:
            raise UserError(problem)


@entry_point
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    named = [_named(spec) for spec in args.models]
    check_arguments(args, named)
    for _, path in named:
        if busy := in_progress(path):
            print(f"[evaluate] {busy}", file=sys.stderr)
    try:
        table, reports = read_languages(args.corpus, args.langs, on_malformed=args.on_malformed,
                                        max_rows=args.max_rows, task=task_of([path for _, path in named]))
        labelled = sum(1 for label in table.column("label").to_pylist() if label >= 0)
        if labelled == 0:
            raise CorpusError(f"{args.corpus}: no labelled rows to score")
        for report in reports:
            if report.skipped:
                print(f"[evaluate] {report.summary()}", file=sys.stderr)
        results = {}
        for name, path in named:
            results[name] = score(path, table, args.max_length, args.batch_size)
    except CorpusError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    header, rows = language_rows(results, list(args.langs), args.source_lang)
    md = write_table(args.out, header, rows) if args.out else to_markdown(header, rows)
    print(f"Accuracy (%) on {args.corpus} ({labelled} labelled rows):\n\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m conlst_ray.predict MODEL_DIR --corpus SPEC --out FILE``:
label unlabelled rows with a trained model.

MODEL_DIR is any stage model conlst_ray saved (``RUN/ssl/model``) or the
model a run handed back (``RUN/model``). The corpus is read as the task the
model was trained for (its saved ``data.task``: single texts or pairs) for
each of ``--langs`` (``{lang}`` in the spec; without ``--langs`` the spec is
read once, language ``xx``). FILE gets one row per input row: ``id``,
``lang``, the text(s), ``label`` (the name), ``label_id``, ``confidence``
and ``p_<label>`` for every label -- as CSV, JSON lines or Parquet by its
suffix. Gold labels in the corpus, if any, are kept as ``gold``. A
prior-corrected model (a run's ``prior`` candidates) applies its correction
of each row's language (``--langs``).

    python -m conlst_ray.predict runs/x/model --corpus 'xnli_tsv:../shared/data/xnli/dev-{lang}.tsv' \\
        --langs fr sw --out fr_sw.csv
    python -m conlst_ray.predict runs/x/model --corpus 'jsonl:reviews.jsonl?text=body' --out labels.parquet

Inference runs in this process (on the GPU when there is one). For many
millions of rows use the Ray Data job: ``python -m conlst_ray.pseudo_label``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from conlst_ray.commands.common import add_debug, entry_point
from conlst_ray.data.readers import check_language_template, read_languages
from conlst_ray.pipeline.preflight import UserError, check_model, writable_dir_problem
from conlst_ray.storage import mirror as storage
from conlst_ray.storage.lock import in_progress

FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conlst_ray.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL_DIR", help="a saved stage model, or a run's model link")
    parser.add_argument("--corpus", required=True, help="corpus spec ({lang} replaced per language; formats: "
                        "see conlst_ray/data/readers.py); labels are not needed")
    parser.add_argument("--out", required=True, help="FILE.csv, FILE.jsonl or FILE.parquet")
    parser.add_argument("--langs", nargs="+", default=["xx"], help="language codes to read (default: one, xx)")
    parser.add_argument("--max-rows", type=int, default=None, help="first N rows per language")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (pair)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--on-malformed", choices=("raise", "skip"), default="raise")
    add_debug(parser)
    return parser


def check_arguments(args) -> str:
    """Everything checked before the model is loaded; returns the output format."""
    from conlst_ray.models.encoder import max_text_length, read_meta

    for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length),
                        ("--max-rows", args.max_rows)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if storage.is_uri(args.model):  # object storage: this node's copy, as load_model reads it
        args.model = str(storage.fetch(storage.mirror(args.model)))
    problems = check_model("MODEL_DIR", args.model, need_weights=True)
    if problems or not Path(args.model).is_dir():
        raise UserError(problems[0] if problems else f"MODEL_DIR: {args.model} is not a model folder")
    if not read_meta(args.model):
        raise UserError(f"MODEL_DIR: {args.model} is not a model conlst_ray trained (no classification head "
                        f"and labels saved with it)")
    limit = max_text_length(args.model)
    if limit is not None and args.max_length > limit:
        raise UserError(f"--max-length {args.max_length}: {args.model} has {limit} positions")
    fmt = FORMATS.get(Path(args.out).suffix.lower())
    if fmt is None:
        raise UserError(f"--out {args.out}: name a .csv, .jsonl or .parquet file")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; name a .csv, .jsonl or .parquet file in it")
    read = [f for f in corpus_files(args.corpus, args.langs) if f == Path(args.out).resolve()]
    if read:
        raise UserError(f"--out {args.out}: is the corpus being labelled ({read[0]}); write elsewhere")
    problem = writable_dir_problem("--out", Path(args.out).absolute().parent)
    if problem:
        raise UserError(problem)
    check_language_template(args.corpus, args.langs, "--corpus")
    return fmt


def corpus_files(spec: str, langs: list) -> list[Path]:
    """The local files a corpus spec reads for ``langs`` (none for the
    embedded benchmark or a hub data set)."""
    from conlst_ray.config.provenance import spec_files

    return [Path(p).resolve() for p in spec_files(spec, langs)]


def predictions_table(classifier, table, batch_size: int):
    """The input rows with their predicted label, confidence and probabilities."""
    import pyarrow as pa

    q = classifier.proba_of(table, batch_size)
    keep = [c for c in ("id", "lang", "text", "text_pair") if c in table.column_names]
    out = table.select(keep)
    gold = table.column("label").to_pylist()
    if any(g >= 0 for g in gold):
        out = out.append_column("gold", pa.array([classifier.labels[g] if g >= 0 else None for g in gold]))
    out = out.append_column("label", pa.array([classifier.labels[i] for i in q.argmax(-1)]))
    out = out.append_column("label_id", pa.array(q.argmax(-1).astype("int64")))
    out = out.append_column("confidence", pa.array(q.max(-1)))
    for j, name in enumerate(classifier.labels):
        out = out.append_column(f"p_{name}", pa.array(q[:, j]))
    return out


CHUNK_ROWS = 4096  # rows tokenised, labelled and written at a time: memory stays flat in the corpus size


class StreamedOutput:
    """The output file written chunk by chunk, under a temporary name that
    is renamed when the last chunk is in: a failed or interrupted predict
    leaves nothing half-written."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = Path(path), fmt
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.writer, self.fh = None, None

    def write(self, table) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if self.fmt == "json":
            if self.fh is None:
                self.fh = open(self.tmp, "w", encoding="utf-8")
            self.fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())
            return
        if self.writer is None:
            self.writer = (pq.ParquetWriter(str(self.tmp), table.schema) if self.fmt == "parquet"
                           else pcsv.CSVWriter(str(self.tmp), table.schema))
        self.writer.write_table(table)

    def close(self) -> None:
        for handle in (self.writer, self.fh):
            if handle is not None:
                handle.close()
        self.tmp.replace(self.path)

    def discard(self) -> None:
        for handle in (self.writer, self.fh):
            try:
                handle is not None and handle.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)


def label_corpus(classifier, table, out: StreamedOutput, batch_size: int) -> dict:
    """Label ``table`` chunk by chunk into ``out``; the label counts."""
    counts = {name: 0 for name in classifier.labels}
    for start in range(0, max(table.num_rows, 1), CHUNK_ROWS):
        part = predictions_table(classifier, table.slice(start, CHUNK_ROWS), batch_size)
        out.write(part)
        for name in part.column("label").to_pylist():
            counts[name] += 1
    return counts


@entry_point
def main(argv=None) -> int:
    from conlst_ray.data.task import Task
    from conlst_ray.training.classifier import Classifier

    args = build_parser().parse_args(argv)
    fmt = check_arguments(args)
    if busy := in_progress(args.model):
        print(f"[predict] {busy}", file=sys.stderr)
    classifier = Classifier(args.model, max_length=args.max_length)
    table, reports = read_languages(args.corpus, args.langs, on_malformed=args.on_malformed, max_rows=args.max_rows,
                                    task=Task(classifier.kind, tuple(classifier.labels)))
    for report in reports:
        if report.skipped:
            print(f"[predict] {report.summary()}", file=sys.stderr)
    corrected = [lang for lang in args.langs if lang in classifier.language_bias]
    if classifier.language_bias:
        print(f"[predict] class-prior correction applied for: {', '.join(corrected) or 'none of --langs'} "
              f"(the model has one for {', '.join(classifier.language_bias)})", file=sys.stderr)
    out = StreamedOutput(Path(args.out), fmt)
    try:
        counts = label_corpus(classifier, table, out, args.batch_size)
        out.close()
    except BaseException:
        out.discard()
        raise
    print(f"[predict] {table.num_rows} rows -> {args.out} (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())

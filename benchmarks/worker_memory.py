"""Training-worker memory: 100k vs 1M target rows, token lists vs mapped
token files, side by side in one run.

    python -m benchmarks.worker_memory                 # 100k and 1M rows (~6 min on 2 cores)
    python -m benchmarks.worker_memory --rows 20000 200000

Rows: real XNLI dev pairs (15 languages) repeated, the real mBERT
vocabulary, max_length 128. For each corpus size a fresh process does what a training worker does with
its data for one epoch: it loads the target rows, computes their lengths,
holds a pseudo-label distribution q per row, reads every row once (one
epoch's batches touch each row) and collates 500 random batches of 32.

  (a) before: ``encode_table`` -- the worker tokenises the corpus into Python
      lists, as every worker of every stage did.
  (b) now: ``open_token_rows`` -- the rows tokenised once (Arrow IPC, one file
      per shard) and memory-mapped.

Each is measured with and without what a training worker also holds: an
mBERT-shaped model (178M parameters), its gradients and AdamW state after
one step. Printed per size: peak RSS (VmHWM), the private part of the resident memory
at the end (RssAnon: what the worker alone holds; the mapped token pages are
file-backed, shared by every worker of the node and reclaimable), and the
token files' size. Target: peak RSS of a training worker, 1M <= 1.3 x 100k.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


SHARED = REPO.parent / "shared" / "data"
XNLI = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]


def write_corpus(root: Path, rows: int, shard_rows: int = 50_000) -> Path:
    """Real XNLI dev pairs of 15 languages (37,350), repeated under new ids
    up to ``rows``, as corpus-cache shards: lang=xx/shard-NNNNN.parquet."""
    import numpy as np
    import pyarrow as pa

    from conlst_ray.data.readers import read_languages
    from conlst_ray.ray_jobs.corpus_cache import write_parquet_atomic

    text, _ = read_languages(f"xnli_tsv:{SHARED}/xnli/dev-{{lang}}.tsv", XNLI)
    for i, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        take = pa.array(np.arange(start, start + n) % text.num_rows)
        part = text.select(["text", "text_pair", "label"]).take(take)
        part = part.append_column("id", pa.array([f"x-{start + j}" for j in range(n)]))
        part = part.append_column("lang", pa.array(["xx"] * n)).append_column("pos", pa.array(range(start, start + n)))
        write_parquet_atomic(part, root / "lang=xx" / f"shard-{i:05d}.parquet")
    return root


def tokenizer_dir(root: Path) -> str:
    """The real mBERT vocabulary (cased WordPiece)."""
    from conlst_ray.models.encoder import wordpiece_tokenizer

    wordpiece_tokenizer(SHARED / "vocab" / "bert-base-multilingual-cased-vocab.txt").save_pretrained(root)
    return str(root)


def tokenize_once(corpus: Path, tok_dir: str) -> Path:
    """What ray_jobs/tokens.py does per shard, here without Ray."""
    import pyarrow.parquet as pq

    from conlst_ray.data.token_files import TOKENIZER_FILE, tokenize_pairs, write_token_file
    from conlst_ray.models.tokenizers import open_tokenizer, special_ids
    from conlst_ray.ray_jobs.tokens import tokens_root

    out = tokens_root(corpus, tok_dir, 128)
    tok = open_tokenizer(tok_dir)
    for shard in sorted((corpus / "lang=xx").glob("shard-*.parquet")):
        write_token_file(tokenize_pairs(tok, pq.read_table(shard), 128), out / "lang=xx" / f"{shard.stem}.arrow")
    (out / TOKENIZER_FILE).write_text(json.dumps({"stamp": out.name[7:], **special_ids(tok)}))
    return out


WORKER = r"""
import json, resource, sys, time
import numpy as np
from conlst_ray.training.batches import batch_of
mode, corpus, tokens, tok_dir, with_model = {args!r}
t0 = time.time()
if with_model:  # what a training worker holds besides its data: mBERT-shaped weights, gradients, AdamW state
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=119547))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model(input_ids=torch.randint(0, 1000, (8, 64))).last_hidden_state.mean().backward()
    optimizer.step()
if mode == "lists":
    import pyarrow as pa, pyarrow.parquet as pq
    from conlst_ray.data.token_files import open_tokenizer
    from conlst_ray.training.batches import encode_table
    from pathlib import Path
    table = pa.concat_tables([pq.read_table(f) for f in sorted(Path(corpus, "lang=xx").glob("shard-*.parquet"))])
    data = encode_table(open_tokenizer(tok_dir), table, 128)
    del table
else:
    from conlst_ray.data.token_files import open_token_rows
    data = open_token_rows(tokens, ["xx"])
lengths = data.lengths()
q = np.random.default_rng(0).dirichlet([1, 1, 1], len(data)).astype(np.float32)
total = 0
for i in range(len(data)):          # one epoch reads every row
    total += int(data.input_ids[i][0])
rng = np.random.default_rng(1)
for _ in range(500):
    batch_of(data, rng.integers(0, len(data), 32), 0)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
kib = lambda k: int(status[k].split()[0])
print(json.dumps({{"peak_rss_mib": kib("VmHWM") / 1024, "rss_anon_mib": kib("RssAnon") / 1024,
                  "rss_file_mib": kib("RssFile") / 1024, "seconds": time.time() - t0, "rows": len(data)}}))
"""


def measure(mode: str, corpus: Path, tokens: Path, tok_dir: str, with_model: bool) -> dict:
    code = WORKER.format(args=(mode, str(corpus), str(tokens), tok_dir, with_model))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


MODES = {"lists+model": "(a) token lists, training worker (before)",
         "mapped+model": "(b) mapped token files, training worker (now)",
         "lists": "(a) token lists, data only", "mapped": "(b) mapped token files, data only"}


def affordable(small: dict | None, factor: float) -> float | None:
    """None when a run ``factor`` times the measured one fits in half the
    free memory, else the MiB it would need."""
    if small is None:
        return None
    free = int(next(line for line in open("/proc/meminfo") if line.startswith("MemAvailable")).split()[1]) / 1024
    need = small["peak_rss_mib"] * factor
    return need if need > free / 2 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs=2, default=[100_000, 1_000_000], metavar=("SMALL", "LARGE"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = tokenizer_dir(Path(tmp) / "tok")
        for rows in args.rows:
            corpus = write_corpus(Path(tmp) / f"c{rows}", rows)
            t0 = time.time()
            tokens = tokenize_once(corpus, tok_dir)
            size = sum(f.stat().st_size for f in tokens.rglob("*.arrow")) / 2**20
            print(f"{rows} rows: tokenised once in {time.time() - t0:.1f}s, token files {size:.0f} MiB", flush=True)
            for mode in MODES:
                need = (affordable(results.get((mode, args.rows[0])), rows / args.rows[0])
                        if mode.startswith("lists") else None)  # token lists grow with the rows
                if need is not None:
                    print(f"  {mode:13s} skipped: would need about {need / 1024:.1f} GiB "
                          f"(linear in rows from the {args.rows[0]}-row measurement), over half of what is free")
                    continue
                results[mode, rows] = measure(mode.split("+")[0], corpus, tokens, tok_dir, "+model" in mode)
                print(f"  {mode:13s} {results[mode, rows]}", flush=True)
    small, large = args.rows
    print(f"\n| worker data | peak RSS {small} (MiB) | peak RSS {large} (MiB) | ratio | RssAnon {large} (MiB) |")
    print("|---|---|---|---|---|")
    for mode, name in MODES.items():
        a, b = results[mode, small], results.get((mode, large))
        if b is None:
            print(f"| {name} | {a['peak_rss_mib']:.0f} | not run (see above) | - | - |")
            continue
        print(f"| {name} | {a['peak_rss_mib']:.0f} | {b['peak_rss_mib']:.0f} | "
              f"{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x | {b['rss_anon_mib']:.0f} |")
    for mode in ("mapped+model", "mapped"):
        ratio = results[mode, large]["peak_rss_mib"] / results[mode, small]["peak_rss_mib"]
        print(f"target ({MODES[mode]}): peak RSS {large} <= 1.3 x {small}: "
              f"{'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x)")
    private = results["mapped", large]["rss_anon_mib"] / results["mapped", small]["rss_anon_mib"]
    print(f"private memory (RssAnon) of (b), {large} vs {small}: {private:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

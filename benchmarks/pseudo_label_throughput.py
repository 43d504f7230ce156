"""Pseudo-labelling throughput and memory, measured side by side in one run.

    python -m benchmarks.pseudo_label_throughput            # everything (~15 min on 2 cores)
    python -m benchmarks.pseudo_label_throughput --skip-memory

Throughput on the real XNLI dev text of all 15 languages (37,350 pairs), the
real mBERT tokenizer and a BERT with random weights and mBERT's vocabulary:

  (a) the Ray Data pipeline (tokenize tasks -> inference actor -> Parquet)
  (b) the limit: a bare loop of forward passes over pre-tokenized,
      length-sorted tensors, same threads, same micro-batch
  (c) the common baseline: a DataLoader over pairs padded to 128 tokens, as
      run_xnli-style scripts do (tokenization not timed)

Targets: (a) >= 0.9 x (b), (a) >= 2 x (c).

Memory: peak resident memory of all processes of the Ray session (driver,
raylet, workers, actors) while pseudo-labelling 100k vs 1M synthetic pairs
with a tiny model. Target: 1M <= 1.2 x 100k.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

from conlst_ray.commands.common import init_ray
from conlst_ray.config import load_config
from conlst_ray.data.readers import read_languages
from conlst_ray.models.encoder import ConlstEncoder, wordpiece_tokenizer
from conlst_ray.pipeline.rundir import RunDir
from conlst_ray.training.batches import collate, encode_table, length_sorted_batches

REPO = Path(__file__).resolve().parents[1]


XNLI = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]


def build_model(vocab_size: int, layers: int, hidden: int, path: Path, tokenizer) -> ConlstEncoder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    model = ConlstEncoder(BertModel(cfg)).eval()
    model.save(path, tokenizer)
    return model


def bare_loop(model, data, pad_id, micro_batch) -> float:
    """(b): pre-tokenized, length-sorted, dynamically padded tensors; forward only."""
    batches = [collate([data.input_ids[i] for i in idx], [data.token_type_ids[i] for i in idx], pad_id)
               for idx in length_sorted_batches(data.lengths(), micro_batch)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(**batch).softmax(-1)
    return len(data) / (time.perf_counter() - t0)


def padded_dataloader(model, tokenizer, table, batch_size) -> float:
    """(c): every pair padded to 128 tokens, a plain DataLoader, as run_xnli does."""
    from torch.utils.data import DataLoader, TensorDataset

    enc = tokenizer(table.column("text").to_pylist(), table.column("text_pair").to_pylist(),
                    truncation=True, max_length=128, padding="max_length", return_tensors="pt")
    loader = DataLoader(TensorDataset(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
                        batch_size=batch_size, shuffle=False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids, mask, types in loader:
            model(input_ids=ids, attention_mask=mask, token_type_ids=types).softmax(-1)
    return table.num_rows / (time.perf_counter() - t0)


def ray_pipeline(cfg, model_dir, root, langs) -> tuple[float, float, int]:
    """(a): ingest, then pseudo-label; returns (pairs/s of labelling, pairs/s incl. ingest, rows)."""
    from conlst_ray.ray_jobs.corpus_cache import ingest_corpora
    from conlst_ray.ray_jobs.pseudo_label import CachedCorpus, pseudo_label

    t0 = time.perf_counter()
    corpus = RunDir(root).corpus_dir
    manifests = ingest_corpora(cfg.data.target_train, langs, corpus, cfg.data)
    t1 = time.perf_counter()
    report = pseudo_label(str(model_dir), CachedCorpus(corpus, manifests), root / "out", cfg)
    t2 = time.perf_counter()
    return report.rows / (t2 - t1), report.rows / (t2 - t0), report.rows


class PeakMemory:
    """Samples the summed RSS of every process of this Ray session."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self.psutil, self.interval, self.peak, self._stop = psutil, interval, 0, threading.Event()

    def _rss(self) -> int:
        me = self.psutil.Process()
        procs = {me.pid: me}
        for p in self.psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray" in cmd and p.pid != me.pid:
                procs[p.pid] = p
        total = 0
        for p in procs.values():
            try:
                total += p.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def memory_run(rows_per_lang: int, tmp: Path) -> tuple[int, int]:
    """Peak RSS (bytes) of pseudo-labelling 4 x rows_per_lang synthetic pairs."""
    import ray

    from conlst_ray.models.encoder import build_model as build_tiny
    from conlst_ray.models.encoder import build_tokenizer

    cfg = load_config(None, [f"data.synthetic.n_unlabelled={rows_per_lang}", "data.shard_rows=10000",
                             "resources.torch_threads=2", "resources.cpus_per_actor=1"])
    tok = build_tokenizer(cfg.model, cfg.data)
    build_tiny(cfg.model, tok).save(tmp / "tiny", tok)
    init_ray(num_cpus=2)
    try:
        with PeakMemory() as mem:
            _, _, rows = ray_pipeline(cfg, tmp / "tiny", tmp, cfg.data.target_langs)
        return mem.peak, rows
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=64)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-rows", default="25000,250000", help="rows per language (x4 languages)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    spec = f"xnli_tsv:{data}/xnli/dev-{{lang}}.tsv"

    if not args.skip_throughput:
        import ray

        tok = wordpiece_tokenizer(data / "vocab" / "bert-base-multilingual-cased-vocab.txt")
        table, _ = read_languages(spec, XNLI)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model_dir = RunDir(tmp).model("source")  # laid out as a run: the model that labels
            model = build_model(len(tok), args.layers, args.hidden, model_dir, tok)
            print(f"model: BERT {args.layers} layers, hidden {args.hidden}, heads {max(1, args.hidden // 64)}, "
                  f"FFN {4 * args.hidden}, vocab {len(tok)} (mBERT), random weights; "
                  f"{table.num_rows} XNLI dev pairs in {len(XNLI)} languages; torch threads {args.threads}")
            encoded = encode_table(tok, table, 128)
            print(f"tokens per pair: mean {encoded.lengths().mean():.1f}, max {encoded.lengths().max()}")
            b = bare_loop(model, encoded, tok.pad_token_id, args.micro_batch)
            print(f"(b) bare loop, length-sorted, dynamic padding : {b:8.1f} pairs/s")
            c = padded_dataloader(model, tok, table, args.micro_batch)
            print(f"(c) DataLoader, padded to 128                 : {c:8.1f} pairs/s")
            cfg = load_config(None, [f"data.target_train={spec}", "data.shard_rows=2490",
                                     f"resources.torch_threads={args.threads}", "resources.cpus_per_actor=1",
                                     "resources.tokenize_tasks=1",
                                     f"resources.inference_batch_size={args.micro_batch}"])
            init_ray(num_cpus=2)
            try:
                a, a_e2e, rows = ray_pipeline(cfg, model_dir, tmp, XNLI)
            finally:
                ray.shutdown()
            assert rows == table.num_rows
            print(f"(a) Ray Data pipeline (tokenize+infer+write)  : {a:8.1f} pairs/s")
            print(f"    same, including the ingest of the 15 TSVs : {a_e2e:8.1f} pairs/s")
            print(f"ratio (a)/(b) = {a / b:.2f}  (target >= 0.9)")
            print(f"ratio (a)/(c) = {a / c:.2f}  (target >= 2)")
            print(f"ratio (a incl. ingest)/(b) = {a_e2e / b:.2f}, /(c) = {a_e2e / c:.2f}")

    if not args.skip_memory:
        small, large = (int(x) for x in args.memory_rows.split(","))
        with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
            m_small, r_small = memory_run(small, Path(t1))
            m_large, r_large = memory_run(large, Path(t2))
        print(f"peak RSS of the Ray session, {r_small:>8} pairs: {m_small / 2**20:8.0f} MiB")
        print(f"peak RSS of the Ray session, {r_large:>8} pairs: {m_large / 2**20:8.0f} MiB")
        print(f"ratio {r_large // r_small}x pairs -> {m_large / m_small:.2f}x memory  (target <= 1.2)")


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()

"""How well is a target language's class prior estimated without labels, and
what does correcting a model to it give? -> docs/PRIOR.md

One model's posteriors on real XNLI, computed once (cached in --out):
the unlabelled rows (XNLI dev, the first --unlabelled rows per language),
the scored rows (xnli_test_a, never trained on), and skewed corpora drawn
from both (labels read only to subsample and to score). Per language and
corpus: the true class shares, the EM estimate (Saerens et al. 2002), the
model's mean posterior, and the accuracy of the model as it is, corrected
by EM, and matched to the source prior.

    python -m experiments.prior_study --model RUN/source/model --out runs/prior_study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from conlst_ray.algorithm.prior import bbse_prior, confusion, em_bias, em_prior, matching_bias
from conlst_ray.models.language_bias import corrected

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LANGS = ["ar", "de", "fr", "sw", "ur", "zh"]
SKEWS = {"balanced": (1 / 3, 1 / 3, 1 / 3), "60/30/10": (0.6, 0.3, 0.1), "10/30/60": (0.1, 0.3, 0.6),
         "30/60/10": (0.3, 0.6, 0.1)}


def posteriors(model_dir: str, spec: str, langs: list, rows: int, precision: str = "bf16",
               freeze: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, gold labels and languages of the first ``rows`` rows per language."""
    from conlst_ray.data.readers import read_languages
    from conlst_ray.models.encoder import ConlstEncoder
    from conlst_ray.models.tokenizers import open_tokenizer
    from conlst_ray.training.batches import encode_table
    from conlst_ray.training.frozen_cache import FrozenRun, compute_states
    from conlst_ray.training.inference import predict_proba

    table, _ = read_languages(spec, langs, max_rows=rows)
    tokenizer = open_tokenizer(model_dir)
    data = encode_table(tokenizer, table, 128)
    model = ConlstEncoder.load(model_dir)
    data.frozen = compute_states(model, data, FrozenRun(freeze, "cpu", precision, 128))
    model.frozen_layers = freeze
    q = predict_proba(model, data, tokenizer.pad_token_id, 128, "cpu", precision)
    return q, np.asarray(data.labels), np.asarray(data.langs)


def skewed(labels: np.ndarray, shares, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows with the given class shares (labels read only here)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), int(round(n * s)), replace=False) for c, s in enumerate(shares)]
    return np.sort(np.concatenate(picks))


def study(cache: dict, source_prior: np.ndarray, n_unl: int, n_test: int) -> list[dict]:
    """Per corpus (class shares) and language: the estimates and the
    accuracy of each correction on the scored rows of the same shares."""
    en_pool = np.r_[0:500, 1000:1245]       # English rows of the corpus (rows 500-999 are the source dev set)
    dev_q, dev_y = cache["en_q"][500:1000], cache["en_y"][500:1000]
    conf = confusion(dev_q.argmax(1), dev_y, 3)
    rows = []
    for skew, shares in SKEWS.items():
        pick = np.arange(n_unl) if skew == "balanced" else skewed(cache["en_y"][en_pool], shares, 400, 0)
        bbse = bbse_prior(cache["en_q"][en_pool][pick].argmax(1), conf)
        for lang in LANGS:
            u, t = cache["dev_langs"] == lang, cache["test_langs"] == lang
            qu, yu, qt, yt = cache["dev_q"][u], cache["dev_y"][u], cache["test_q"][t], cache["test_y"][t]
            if skew == "balanced":
                iu, it = np.arange(min(n_unl, len(qu))), np.arange(len(qt))
            else:
                iu, it = skewed(yu, shares, n_unl, 0), skewed(yt, shares, n_test, 1)
            qu, qt, yt = qu[iu], qt[it], yt[it]
            em = em_prior(qu, source_prior)
            rows.append({"corpus": skew, "lang": lang, "true": list(np.bincount(yu[iu], minlength=3) / len(iu)),
                         "em": list(em), "bbse": list(bbse), "mean_q": list(qu.mean(0)),
                         "predicted": list(np.bincount(qu.argmax(1), minlength=3) / len(qu)),
                         "acc": _acc(qt, yt), "acc_em": _acc(corrected(qt, em_bias(em, source_prior)), yt),
                         "acc_source_prior": _acc(corrected(qt, matching_bias(qu, source_prior)), yt),
                         "acc_bbse": _acc(corrected(qt, matching_bias(qu, bbse)), yt),
                         "acc_true_prior": _acc(corrected(qt, matching_bias(qu, np.array(shares))), yt)})
    return rows


def _acc(q: np.ndarray, y: np.ndarray) -> float:
    return float((q.argmax(1) == y).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="runs/prior_study")
    ap.add_argument("--unlabelled", type=int, default=500)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_file = out / "posteriors.npz"
    if not cache_file.is_file():
        dev = posteriors(args.model, f"xnli_tsv:{DATA}/xnli/dev-{{lang}}.tsv", LANGS, 1245)
        test = posteriors(args.model, f"xnli_tsv:{DATA}/xnli_test_a/test-{{lang}}.tsv", LANGS, 1002)
        np.savez(cache_file, dev_q=dev[0], dev_y=dev[1], dev_langs=dev[2], test_q=test[0], test_y=test[1],
                 test_langs=test[2])
    en_file = out / "en_dev.npz"
    if not en_file.is_file():
        q, y, _ = posteriors(args.model, f"xnli_tsv:{DATA}/xnli/dev-{{lang}}.tsv", ["en"], 1245)
        np.savez(en_file, q=q, y=y)
    cache = dict(np.load(cache_file))
    en = np.load(en_file)
    cache["en_q"], cache["en_y"] = en["q"], en["y"]
    rows = study(cache, np.full(3, 1 / 3), args.unlabelled, 500)
    (out / "prior_study.json").write_text(json.dumps(rows, indent=1, default=float))
    print("| target corpus (class shares) | zero-shot | + prior: EM | + prior: source | + prior: BBSE | "
          "+ prior: true shares | EM estimate, largest error (points) | BBSE estimate | its largest error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for skew in SKEWS:
        sel = [r for r in rows if r["corpus"] == skew]
        accs = [100 * np.mean([r[k] for r in sel]) for k in ("acc", "acc_em", "acc_source_prior", "acc_bbse",
                                                             "acc_true_prior")]
        em_err = 100 * np.mean([np.abs(np.array(r["em"]) - np.array(r["true"])).max() for r in sel])
        bbse = np.array(sel[0]["bbse"])
        bbse_err = 100 * np.abs(bbse - np.array(sel[0]["true"])).max()
        print(f"| {skew} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {em_err:.1f} | "
              + "/".join(f"{100 * x:.0f}" for x in bbse) + f" | {bbse_err:.1f} |")


if __name__ == "__main__":
    main()

"""Language-code tables of seq2seq translation models and a translator that
works with any Hugging Face seq2seq model (no Ray here; the Ray Data actor in
``ray_jobs/translate.py`` wraps it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from conlst_ray.data.synthetic import _concepts, _lexicons

log = logging.getLogger(__name__)

# XNLI's 15 languages in each model family's codes.
# mBART-50 many-to-many covers 13 of them: no Bulgarian, no Greek.
MBART50_CODES = {
    "ar": "ar_AR", "de": "de_DE", "en": "en_XX", "es": "es_XX", "fr": "fr_XX", "hi": "hi_IN", "ru": "ru_RU",
    "sw": "sw_KE", "th": "th_TH", "tr": "tr_TR", "ur": "ur_PK", "vi": "vi_VN", "zh": "zh_CN",
}
# NLLB-200 (FLORES-200 codes) covers all 15.
NLLB_CODES = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn",
    "fr": "fra_Latn", "hi": "hin_Deva", "ru": "rus_Cyrl", "sw": "swh_Latn", "th": "tha_Thai", "tr": "tur_Latn",
    "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}
# M2M100 writes its language tokens as __xx__ (ISO 639-1); covers all 15.
M2M100_CODES = {lang: f"__{lang}__" for lang in NLLB_CODES}
CODE_TABLES = {"mbart50": MBART50_CODES, "nllb": NLLB_CODES, "m2m100": M2M100_CODES}
# translation.model = "synthetic": the embedded benchmark's own stand-in MT system.
SYNTHETIC_MODEL = "synthetic"
CODE_TABLES["synthetic"] = {lang: lang for lang in ("src", "near", "mid", "far", "distant")}


class TranslationConfigError(ValueError):
    """A language the translation model does not cover, or an unknown family."""


def detect_family(model_config, tokenizer=None) -> str:
    """mbart50 / nllb / m2m100 from a model config (and tokenizer vocabulary)."""
    model_type = getattr(model_config, "model_type", "")
    if model_type == "mbart":
        return "mbart50"
    if model_type == "m2m_100":
        vocab = tokenizer.get_vocab() if tokenizer is not None else {}
        return "nllb" if "eng_Latn" in vocab or "nllb" in str(getattr(model_config, "_name_or_path", "")).lower() \
            else "m2m100"
    raise TranslationConfigError(f"translation.family: cannot tell the language codes of model type "
                                 f"{model_type!r}; set translation.family to mbart50, nllb or m2m100")


def check_coverage(family: str, langs: Sequence[str], on_uncovered: str) -> tuple[list, list]:
    """Split ``langs`` into (covered, fallback). An uncovered language is an
    error, or with on_uncovered='mask_only' falls back to masking-only
    augmentation with a warning."""
    table = CODE_TABLES[family]
    uncovered = [lang for lang in langs if lang not in table]
    if uncovered and on_uncovered == "error":
        raise TranslationConfigError(
            f"translation: language(s) {uncovered} not covered by {family} (covers {sorted(table)}); "
            f"use another model (NLLB-200 covers all XNLI languages) or set translation.on_uncovered=mask_only")
    for lang in uncovered:
        log.warning(f"[translate] WARNING: {lang!r} is not covered by {family}: it falls back to masking-only "
                    "augmentation")
    return [lang for lang in langs if lang in table], uncovered


class Translator:
    """Translates lists of sentences between languages with one seq2seq model."""

    def __init__(self, model: str, family: str = "auto", max_new_tokens: int = 128, num_beams: int = 1,
                 batch_size: int = 32, use_gpu: bool = False):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.torch = torch
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model).eval().to(self.device)
        self.family = detect_family(self.model.config, self.tokenizer) if family == "auto" else family
        self.codes = CODE_TABLES[self.family]
        self.max_new_tokens, self.num_beams, self.batch_size = max_new_tokens, num_beams, batch_size

    def _encode(self, texts: list[str], src_code: str):
        if hasattr(self.tokenizer, "src_lang"):  # real mBART-50 / NLLB / M2M100 tokenizers
            self.tokenizer.src_lang = src_code
            return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        # a plain tokenizer with the language codes as special tokens: prefix by hand
        return self.tokenizer([f"{src_code} {t}" for t in texts], return_tensors="pt", padding=True,
                              truncation=True)

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        """Translate ``texts`` from language ``src`` to ``tgt`` (ISO codes).
        An empty output (it happens) is replaced by the input sentence."""
        torch = self.torch
        forced = self.tokenizer.convert_tokens_to_ids(self.codes[tgt])
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            enc = {k: v.to(self.device) for k, v in self._encode(chunk, self.codes[src]).items()}
            with torch.inference_mode():
                gen = self.model.generate(**enc, forced_bos_token_id=forced, max_new_tokens=self.max_new_tokens,
                                          num_beams=self.num_beams, do_sample=False)
            decoded = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
            out += [d.strip() or orig for d, orig in zip(decoded, chunk)]
        return out

    def back_translate(self, texts: Sequence[str], lang: str, pivot: str) -> list[str]:
        """lang -> pivot -> lang: a paraphrase, the strong view of Eq. 14."""
        return self.translate(self.translate(texts, lang, pivot), pivot, lang)


class SyntheticTranslator:
    """A stand-in MT system for the embedded benchmark, so that back-translation
    (and its ablation) means something there.

    It translates word by word through the concept each surface form names,
    so -- like a real MT model -- it knows every form of every language,
    including those the classifier never saw. Like real MT output, the
    result is a paraphrase, not a copy: the word order is drawn anew and
    each function word is replaced by another with probability
    ``swap_function``. Deterministic for a given sentence and direction."""

    def __init__(self, benchmark_seed: int = 13, swap_function: float = 0.5, num_classes: int = 3):

        concepts = _concepts(num_classes)
        self.lexicons = _lexicons(benchmark_seed, concepts)
        # within one language every form names one concept (false friends included)
        self.concept_of = {lang: {form: c for c, form in enumerate(forms)} for lang, forms in self.lexicons.items()}
        self.function = list(concepts["function"])
        self.swap_function = swap_function

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        import zlib

        import numpy as np

        out = []
        for text in texts:
            rng = np.random.default_rng(zlib.crc32(f"{src}>{tgt}:{text}".encode()))
            concepts = [self.concept_of[src].get(word) for word in text.split()]
            words = []
            for c in concepts:
                if c is None:
                    continue  # an unknown word is dropped, as MT drops what it cannot read
                if c in self.function and rng.random() < self.swap_function:
                    c = int(rng.choice(self.function))
                words.append(self.lexicons[tgt][c])
            rng.shuffle(words)
            out.append(" ".join(words) or text)
        return out

    def back_translate(self, texts: Sequence[str], lang: str, pivot: str) -> list[str]:
        return self.translate(self.translate(texts, lang, pivot), pivot, lang)


@dataclass(frozen=True)
class TranslatorSpec:
    """What a translator is built from: the model, its code table and its
    generation settings."""
    model: str
    family: str = "auto"
    max_new_tokens: int = 128
    num_beams: int = 1
    batch_size: int = 32
    use_gpu: bool = False
    # the embedded benchmark's seed and class count: the stand-in translator's lexicons depend on them
    synthetic: tuple = (13, 3)


def make_translator(spec: TranslatorSpec):
    """A Hugging Face seq2seq translator, or the embedded benchmark's stand-in."""
    if spec.model == SYNTHETIC_MODEL:
        return SyntheticTranslator(spec.synthetic[0], num_classes=spec.synthetic[1])
    return Translator(spec.model, spec.family, spec.max_new_tokens, spec.num_beams, spec.batch_size, spec.use_gpu)

#!/usr/bin/env python3
"""faster-whisper's reference transcripts for surge's multilingual Whisper tests.

Speaks each text of testdata/speech/multilingual/ (de.txt, fr.txt, es.txt, en.txt: a few
sentences each, spoken as one clip) with espeak-ng in its language's voice, converts it
to 16 kHz mono wav with `sox -D`, and runs faster-whisper on the same CTranslate2 weights
surge serves (whisper-base by default) three ways: language detected (as a request
without `language`), language given, and task "translate". Writes the record the tests
read (testdata/speech/multilingual/faster_whisper.json):

    PY="$(scripts/peers/faster-whisper.sh)"
    "$PY" loadtest/peers/faster_whisper_multilingual.py \\
        --out testdata/speech/multilingual/faster_whisper.json

Decoding as in faster_whisper_peer.py (whose model-directory and loading code this
reuses): cpu, int8, greedy (beam_size=1), default temperature fallback,
condition_on_previous_text on, no VAD.

WER here normalises for any Latin-script language (the English corpus's [a-z0-9']
rule would split "schön"): lowercase; every character that is not a letter or digit
(str.isalnum) becomes a space; split on whitespace. The Rust tests use the same rule
(char::is_alphanumeric).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faster_whisper_peer as peer  # noqa: E402

LANGUAGES = ("de", "fr", "es", "en")


def normalize(text):
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def word_errors(ref, hyp):
    r, h = normalize(ref), normalize(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[len(h)], len(r)


def spoken_text(corpus, lang):
    """The file's lines joined by spaces: the text espeak-ng speaks and the reference."""
    with open(os.path.join(corpus, lang + ".txt"), encoding="utf-8") as fh:
        return " ".join(line.strip() for line in fh if line.strip())


def speak(text, lang, out_dir):
    """espeak-ng -v LANG -w raw.wav TEXT; sox -D raw.wav -r 16000 -c 1 LANG.wav"""
    raw = os.path.join(out_dir, lang + ".raw.wav")
    wav = os.path.join(out_dir, lang + ".wav")
    subprocess.run(["espeak-ng", "-v", lang, "-w", raw, text], check=True)
    subprocess.run(["sox", "-D", raw, "-r", "16000", "-c", "1", wav], check=True)
    return wav


def run(model, path, **kw):
    segments, info = model.transcribe(path, beam_size=1, vad_filter=False, **kw)
    text = "".join(s.text for s in segments).strip()
    return text, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="directory with the CT2 files (default: surge's cache)")
    ap.add_argument("--surge", help="surge binary, to ask `surge models path` where files are")
    ap.add_argument("--model-name", default="whisper-base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", default="testdata/speech/multilingual")
    ap.add_argument("--out", help="write the record here (else stdout)")
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    args = ap.parse_args()

    model = peer.load(args, peer.model_dir(args))
    tmp = tempfile.mkdtemp(prefix="fw-multilingual-")
    clips = {}
    try:
        for lang in LANGUAGES:
            ref = spoken_text(args.corpus, lang)
            wav = speak(ref, lang, tmp)
            text, info = run(model, wav)
            e, n = word_errors(ref, text)
            forced, _ = run(model, wav, language=lang)
            fe, _ = word_errors(ref, forced)
            translation, _ = run(model, wav, task="translate")
            clips[lang] = {
                "voice": lang,
                "reference": ref,
                "audio_s": round(info.duration, 3),
                "detected": info.language,
                "detected_probability": round(info.language_probability, 4),
                "text": text, "edits": e, "ref_words": n, "wer": round(e / n, 4),
                "forced": {"text": forced, "edits": fe, "wer": round(fe / n, 4)},
                "translation": translation,
            }
            print(f"{lang}: detected {info.language} ({info.language_probability:.2f}), "
                  f"WER {e}/{n}, forced {fe}/{n}; {translation!r}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import ctranslate2
    import faster_whisper
    record = {
        "what": "faster-whisper's transcripts, detected languages and translations of the "
                "espeak-ng clips of testdata/speech/multilingual/; surge's tests allow its "
                "WER plus 0.03",
        "date": args.date,
        "command": "PY=\"$(scripts/peers/faster-whisper.sh)\"; \"$PY\" "
                   "loadtest/peers/faster_whisper_multilingual.py "
                   "--out testdata/speech/multilingual/faster_whisper.json",
        "model": args.model_name,
        "settings": {"device": "cpu", "compute_type": "int8", "cpu_threads": args.threads,
                     "beam_size": 1, "temperature": "default fallback (0.0 … 1.0)",
                     "condition_on_previous_text": True, "vad_filter": False},
        "versions": {"faster_whisper": faster_whisper.__version__,
                     "ctranslate2": ctranslate2.__version__,
                     "espeak_ng": peer.tool_version(["espeak-ng", "--version"]),
                     "sox": peer.tool_version(["sox", "--version"])},
        "audio": "espeak-ng -v LANG -w raw.wav \"$(lines of LANG.txt joined by spaces)\"; "
                 "sox -D raw.wav -r 16000 -c 1 LANG.wav",
        "normalization": "lowercase; every char that is not a letter or digit becomes a "
                         "space; split on whitespace; WER = word-level Levenshtein "
                         "distance / reference words",
        "clips": clips,
    }
    out = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(out)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(out)


if __name__ == "__main__":
    main()

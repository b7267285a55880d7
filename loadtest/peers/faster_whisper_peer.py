#!/usr/bin/env python3
"""faster-whisper as the peer surge's Whisper worker is measured against.

Run it with the venv python that scripts/peers/faster-whisper.sh prints:

    PY="$(scripts/peers/faster-whisper.sh)"
    "$PY" loadtest/peers/faster_whisper_peer.py --surge target/release/surge wer clip.wav --ref "the text"
    "$PY" loadtest/peers/faster_whisper_peer.py wer --corpus testdata/speech --out testdata/speech/faster_whisper_wer.json
    "$PY" loadtest/peers/faster_whisper_peer.py bench --passage passage.wav --clips s1.wav s2.wav ...

Weights: the same CTranslate2 files surge serves (whisper-tiny.en by default), taken from
surge's model cache. faster-whisper wants one directory holding model.bin, config.json,
tokenizer.json and vocabulary.txt, while the cache stores content-addressed blobs, so the
script builds a temporary directory of symlinks to the blobs. Where each file is comes from
`surge models path NAME FILE` when --surge is given, else from the cache's manifest
($SURGE_HOME, default ~/.cache/surge). --model DIR uses a ready directory instead.

Decoding is the same everywhere: device cpu, compute_type int8, greedy (beam_size=1), the
default temperature fallback, condition_on_previous_text default (True), vad_filter False,
language "en", without_timestamps default (False, so long audio is seeked by timestamps).

Concurrency: faster-whisper serves concurrent requests the way its docs describe --
WhisperModel(num_workers=C) creates C CTranslate2 model replicas (sharing the weights) and
C Python threads each call transcribe(); CTranslate2 runs each on its own replica in
parallel (the GIL is released during inference). Each replica gets max(1, threads // C)
intra-op threads so the whole process uses --threads cores, like surge's worker.

Output is JSON on stdout (one object per clip for `wer`, one object for `bench`);
progress goes to stderr.
"""

import argparse
import atexit
import datetime
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
FORMATS = ("wav", "mp3", "flac", "ogg")


# ---- WER (same normalisation as surge_loadtest::wer) ----------------------------------------

def normalize(text):
    """lowercase; every char not in [a-z0-9'] becomes a space; split on whitespace"""
    return re.sub(r"[^a-z0-9']", " ", text.lower()).split()


def word_errors(ref, hyp):
    """(word-level Levenshtein distance, number of reference words)"""
    r, h = normalize(ref), normalize(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[len(h)], len(r)


# ---- model directory ------------------------------------------------------------------------

def model_dir(args):
    """A directory faster-whisper can load: --model, else symlinks to surge's cached blobs."""
    if args.model:
        return args.model
    paths = {}
    if args.surge:
        for f in MODEL_FILES:
            out = subprocess.run([args.surge, "models", "path", args.model_name, f],
                                 check=True, capture_output=True, text=True).stdout.strip()
            paths[f] = out
    else:
        home = os.environ.get("SURGE_HOME") or os.path.expanduser("~/.cache/surge")
        manifest = os.path.join(home, "manifests", args.model_name + ".json")
        try:
            with open(manifest) as fh:
                m = json.load(fh)
        except FileNotFoundError:
            sys.exit(f"{manifest} not found: run `surge models pull {args.model_name}` first")
        for entry in m["files"]:
            paths[entry["name"]] = os.path.join(home, "blobs", "sha256", entry["sha256"])
    d = tempfile.mkdtemp(prefix="fw-model-")
    atexit.register(shutil.rmtree, d, True)
    for f in MODEL_FILES:
        if f not in paths or not os.path.exists(paths[f]):
            sys.exit(f"{args.model_name}: {f} missing from surge's cache")
        os.symlink(os.path.abspath(paths[f]), os.path.join(d, f))
    return d


def load(args, mdir, num_workers=1, cpu_threads=None):
    from faster_whisper import WhisperModel
    return WhisperModel(mdir, device="cpu", compute_type="int8",
                        cpu_threads=cpu_threads or args.threads, num_workers=num_workers)


def transcribe(model, path):
    segments, info = model.transcribe(path, beam_size=1, language="en", vad_filter=False)
    segs = [{"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text} for s in segments]
    return "".join(s["text"] for s in segs).strip(), segs, info.duration


# ---- clips ----------------------------------------------------------------------------------

def synthesize(text, out_dir, stem, formats=FORMATS):
    """espeak-ng -w raw.wav TEXT; sox -D raw.wav -r 16000 -c 1 STEM.EXT (see testdata/speech)"""
    raw = os.path.join(out_dir, stem + ".raw.wav")
    subprocess.run(["espeak-ng", "-w", raw, text], check=True)
    out = {}
    for ext in formats:
        p = os.path.join(out_dir, f"{stem}.{ext}")
        subprocess.run(["sox", "-D", raw, "-r", "16000", "-c", "1", p], check=True)
        out[ext] = p
    os.remove(raw)
    return out


def corpus(dir_):
    with open(os.path.join(dir_, "sentences.txt")) as fh:
        sentences = [l.strip() for l in fh if l.strip()]
    with open(os.path.join(dir_, "passage.txt")) as fh:
        passage = " ".join(fh.read().split())
    return sentences, passage


def wav_seconds(path):
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


# ---- wer ------------------------------------------------------------------------------------

def cmd_wer(args):
    mdir = model_dir(args)
    model = load(args, mdir)
    if args.corpus:
        return wer_corpus(args, model)
    if not args.clips:
        sys.exit("wer: give clips (with --ref) or --corpus DIR")
    for clip in args.clips:
        text, segs, dur = transcribe(model, clip)
        row = {"clip": clip, "audio_s": round(dur, 3), "text": text, "segments": segs}
        if args.ref is not None:
            e, n = word_errors(args.ref, text)
            row.update(ref=args.ref, edits=e, ref_words=n, wer=round(e / max(n, 1), 4))
        print(json.dumps(row), flush=True)


def wer_corpus(args, model):
    sentences, passage = corpus(args.corpus)
    tmp = tempfile.mkdtemp(prefix="fw-clips-")
    items = [(f"sentence{i + 1}", s) for i, s in enumerate(sentences)] + [("passage", passage)]
    per_format = {ext: {"clips": [], "sentences": [0, 0], "passage": [0, 0]} for ext in FORMATS}
    try:
        for stem, ref in items:
            clips = synthesize(ref, tmp, stem)
            for ext in FORMATS:
                text, segs, dur = transcribe(model, clips[ext])
                e, n = word_errors(ref, text)
                row = {"clip": stem, "format": ext, "audio_s": round(dur, 3), "edits": e,
                       "ref_words": n, "wer": round(e / n, 4), "text": text}
                if stem == "passage":
                    row["segments"] = segs
                print(json.dumps(row), flush=True)
                per_format[ext]["clips"].append(row)
                acc = per_format[ext]["passage" if stem == "passage" else "sentences"]
                acc[0] += e
                acc[1] += n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import ctranslate2
    import faster_whisper
    record = {
        "what": "faster-whisper's greedy WER on the espeak-ng clips of testdata/speech "
                "(see README.md there); surge's tests allow this plus 0.02",
        "date": args.date,
        "command": "PY=\"$(scripts/peers/faster-whisper.sh)\"; \"$PY\" "
                   "loadtest/peers/faster_whisper_peer.py wer --corpus testdata/speech "
                   "--out testdata/speech/faster_whisper_wer.json",
        "model": args.model_name,
        "settings": {"device": "cpu", "compute_type": "int8", "cpu_threads": args.threads,
                     "beam_size": 1, "temperature": "default fallback (0.0 … 1.0)",
                     "condition_on_previous_text": True, "vad_filter": False,
                     "language": "en"},
        "versions": {"faster_whisper": faster_whisper.__version__,
                     "ctranslate2": ctranslate2.__version__,
                     "python": sys.version.split()[0],
                     "espeak_ng": tool_version(["espeak-ng", "--version"]),
                     "sox": tool_version(["sox", "--version"])},
        "normalization": "lowercase; every char not in [a-z0-9'] becomes a space; split on "
                         "whitespace; WER = word-level Levenshtein distance / reference words; "
                         "corpus WER = sum of edits / sum of reference words",
        "formats": {},
    }
    for ext, f in per_format.items():
        s, p = f["sentences"], f["passage"]
        record["formats"][ext] = {
            "sentences_corpus": {"edits": s[0], "ref_words": s[1], "wer": round(s[0] / s[1], 4)},
            "passage": {"edits": p[0], "ref_words": p[1], "wer": round(p[0] / p[1], 4)},
            "clips": f["clips"],
        }
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(record, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        print(f"wrote {args.out}", file=sys.stderr)


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        return " ".join(out.split("Data at")[0].split())
    except OSError:
        return None


# ---- bench ----------------------------------------------------------------------------------

def cmd_bench(args):
    import ctranslate2
    import faster_whisper
    mdir = model_dir(args)
    conc = [int(c) for c in args.concurrency.split(",") if c.strip()]
    out = {"server": "faster-whisper", "faster_whisper": faster_whisper.__version__,
           "ctranslate2": ctranslate2.__version__, "threads": args.threads}

    t0 = time.perf_counter()
    model = load(args, mdir)
    out["load_s"] = time.perf_counter() - t0
    if args.spawned_at:
        # Process spawn (by whisper-bench) -> model loaded: interpreter start, imports, load;
        # the counterpart of surge's spawn -> /health 200.
        out["ready_after_spawn_s"] = time.time() - args.spawned_at

    # RTF on the long clip: one warm-up, then best of --rtf-runs.
    passage_s = wav_seconds(args.passage)
    text, _, _ = transcribe(model, args.passage)
    runs = []
    for _ in range(args.rtf_runs):
        t = time.perf_counter()
        text, segs, _ = transcribe(model, args.passage)
        runs.append(time.perf_counter() - t)
    out["passage_audio_s"] = passage_s
    out["rtf"] = min(runs) / passage_s
    out["rtf_runs_s"] = runs
    out["passage_text"] = text
    out["passage_segments"] = len(segs)
    if args.passage_ref:
        with open(args.passage_ref) as fh:
            e, n = word_errors(fh.read(), text)
        out["passage_wer"] = e / n
    # Peak so far: one model, one request at a time.
    out["peak_rss_single_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del model
    gc.collect()

    clip_s = {c: wav_seconds(c) for c in args.clips}
    out["throughput"] = []
    for c in conc:
        model = load(args, mdir, num_workers=c, cpu_threads=max(1, args.threads // c))
        transcribe(model, args.clips[0])  # warm-up
        nxt = [0]
        lock = threading.Lock()
        errors = []
        audio = [0.0]
        lat = []

        def worker():
            while True:
                with lock:
                    i = nxt[0]
                    if i >= args.requests:
                        return
                    nxt[0] += 1
                clip = args.clips[i % len(args.clips)]
                t = time.perf_counter()
                try:
                    transcribe(model, clip)
                except Exception as e:  # noqa: BLE001 - report, do not hide
                    errors.append(repr(e))
                    return
                with lock:
                    lat.append(time.perf_counter() - t)
                    audio[0] += clip_s[clip]

        wall = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
        if errors:
            sys.exit(f"bench: {errors[0]}")
        lat.sort()
        out["throughput"].append({
            "concurrency": c, "requests": len(lat), "wall_s": wall,
            "audio_s_per_s": audio[0] / wall, "req_per_s": len(lat) / wall,
            "latency_p50_s": lat[(len(lat) - 1) // 2],
            "cpu_threads_per_worker": max(1, args.threads // c)})
        print(f"faster-whisper: {c} concurrent: {len(lat) / wall:.2f} req/s", file=sys.stderr)
        del model
        gc.collect()
    # ru_maxrss is KiB on Linux: the whole process's peak, like the worker's VmHWM.
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="directory with the CT2 files (default: from surge's cache)")
    ap.add_argument("--surge", help="surge binary, to ask `surge models path` where files are")
    ap.add_argument("--model-name", default="whisper-tiny.en")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    sub = ap.add_subparsers(dest="cmd", required=True)

    w = sub.add_parser("wer", help="transcribe clips and score them")
    w.add_argument("clips", nargs="*")
    w.add_argument("--ref", help="reference text for the clips given")
    w.add_argument("--corpus", help="testdata/speech: synthesise its clips in every format")
    w.add_argument("--out", help="with --corpus: write the record file here")
    w.add_argument("--date", default=datetime.date.today().isoformat())

    b = sub.add_parser("bench", help="load time, RTF, throughput, peak RSS")
    b.add_argument("--passage", required=True, help="the ~60 s clip (16 kHz wav)")
    b.add_argument("--passage-ref", help="its reference text file, to report WER")
    b.add_argument("--clips", nargs="+", required=True, help="short clips (16 kHz wav)")
    b.add_argument("--rtf-runs", type=int, default=3)
    b.add_argument("--concurrency", default="1,4,8")
    b.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    b.add_argument("--spawned-at", type=float, help="Unix time the caller spawned this process")

    args = ap.parse_args()
    {"wer": cmd_wer, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()

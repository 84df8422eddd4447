"""Real speech for the audio tests: Korean from espeak-ng, English from flite; sox converts it.

Korean (``speech_corpus()``): two sentences in every wire format, for the codec and pipeline tests.
English (``english_corpus()``): :data:`ENGLISH_SENTENCES`, ordinary call talk and the detection
vocabulary, spoken by four flite voices and passed through an 8 kHz G.711 μ-law phone line, for
the recogniser's accuracy (:func:`wer`) and the English end-to-end tests.

Generated once per test process (``speech_corpus()`` is cached) into a temp directory:
a telephone-band master per sentence (8 kHz PCM16, as a phone line carries it) and,
from it, every supported wire format: pcm16/mulaw/alaw × 8000/16000 Hz × mono/stereo.
Stereo puts the agent sentence on the left channel and the customer sentence on the right.
sox also writes its own decoding of each G.711 file, the reference for our codecs.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AGENT_TEXT = "안녕하세요. 고객센터 상담원입니다. 무엇을 도와드릴까요"
CUSTOMER_TEXT = "요금 청구서에 문제가 있습니다. 환불해 주세요"
ENCODINGS = {"pcm16": ["-e", "signed-integer", "-b", "16"], "mulaw": ["-e", "u-law"], "alaw": ["-e", "a-law"]}
RATES = (8000, 16000)
TRAILING_SILENCE_S = 1.5  # lets Vosk reach an endpoint and emit a final before the call ends


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Variant:
    encoding: str
    rate: int
    channels: int
    path: Path  # headerless raw bytes in the wire format
    wav: Path  # the same audio as a WAV (for the CLI)
    sox_decoded: Path  # sox's own conversion of `path` to s16le (codec reference)

    @property
    def name(self) -> str:
        return f"{self.encoding}-{self.rate}-{'stereo' if self.channels == 2 else 'mono'}"

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.channels * (2 if self.encoding == "pcm16" else 1)


@dataclass
class Corpus:
    root: Path
    agent_master: Path  # 8 kHz PCM16 mono WAV
    customer_master: Path
    variants: dict[str, Variant] = field(default_factory=dict)

    def get(self, encoding: str, rate: int, channels: int = 1) -> Variant:
        return self.variants[f"{encoding}-{rate}-{'stereo' if channels == 2 else 'mono'}"]

    def pcm16(self, rate: int, channels: int = 1) -> np.ndarray:
        return np.frombuffer(self.get("pcm16", rate, channels).data, dtype="<i2")


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def flite_available() -> bool:
    return shutil.which("flite") is not None and shutil.which("sox") is not None


@functools.lru_cache(maxsize=1)
def speech_corpus() -> Corpus:
    root = Path(tempfile.mkdtemp(prefix="streamproc-speech-"))
    atexit.register(shutil.rmtree, root, True)
    masters = {}
    for who, text in (("agent", AGENT_TEXT), ("customer", CUSTOMER_TEXT)):
        raw = root / f"{who}-espeak.wav"
        _run("espeak-ng", "-v", "ko+f2", "-s", "150", text, "-w", str(raw))
        master = root / f"{who}-8k.wav"
        # Telephone band first, then 1.5 s of silence; -D: no dither, so outputs are reproducible.
        _run("sox", "-D", str(raw), "-r", "8000", "-c", "1", "-e", "signed-integer", "-b", "16", str(master),
             "pad", "0.2", str(TRAILING_SILENCE_S))
        masters[who] = master
    # Stereo master: agent left, customer right, padded to the same length.
    stereo_master = root / "stereo-8k.wav"
    _run("sox", "-D", "-M", str(masters["agent"]), str(masters["customer"]), str(stereo_master))
    corpus = Corpus(root=root, agent_master=masters["agent"], customer_master=masters["customer"])
    for channels, source in ((1, masters["agent"]), (2, stereo_master)):
        for rate in RATES:
            # Resample once to PCM16; every encoding at this rate is converted from those same samples.
            pcm_wav = root / f"pcm16-{rate}-{channels}ch-source.wav"
            _run("sox", "-D", str(source), "-r", str(rate), "-e", "signed-integer", "-b", "16", str(pcm_wav))
            for encoding, options in ENCODINGS.items():
                stem = f"{encoding}-{rate}-{'stereo' if channels == 2 else 'mono'}"
                raw = root / f"{stem}.raw"
                wav = root / f"{stem}.wav"
                _run("sox", "-D", str(pcm_wav), *options, "-t", "raw", str(raw))
                _run("sox", "-D", str(pcm_wav), *options, str(wav))
                decoded = root / f"{stem}.s16"
                _run("sox", "-D", "-t", "raw", "-r", str(rate), "-c", str(channels), *options, str(raw),
                     "-t", "raw", "-e", "signed-integer", "-b", "16", str(decoded))
                corpus.variants[stem] = Variant(encoding, rate, channels, raw, wav, decoded)
    return corpus


def frames(variant: Variant, frame_ms: int = 250):
    """(seq, offset_ms, payload) for a variant cut into frames of frame_ms."""
    data = variant.data
    step = variant.bytes_per_second * frame_ms // 1000
    for seq, position in enumerate(range(0, len(data), step)):
        yield seq, seq * frame_ms, data[position:position + step]


# --------------------------------------------------------------------------- English (flite)

#: (speaker, flite voice, sentence): our own sentences, not from any corpus. Ordinary contact-center
#: talk plus the phrases the default rules detect (manager request, churn, legal threat, repeat
#: contact, agent rudeness), numbers and names included, so the WER measures what detection needs.
ENGLISH_SENTENCES: tuple[tuple[str, str, str], ...] = (
    ("agent", "kal16", "Thank you for calling customer support, my name is Sarah."),
    ("customer", "slt", "I was charged twice for the same order last month."),
    ("agent", "awb", "Could you please confirm your date of birth for me?"),
    ("customer", "rms", "I want to speak to a manager right now."),
    ("agent", "slt", "Please hold while I check your account."),
    ("customer", "awb", "This is the third time I have called about this problem."),
    ("agent", "rms", "That is not my problem."),
    ("customer", "kal16", "I am going to cancel my subscription today."),
    ("agent", "kal16", "Your new card will arrive in five to seven days."),
    ("customer", "slt", "If you do not fix this, I will call my lawyer."),
    ("agent", "awb", "Can I put you on hold for a moment?"),
    ("customer", "rms", "My internet keeps dropping every evening."),
    ("agent", "slt", "Is there anything else I can help you with today?"),
    ("customer", "awb", "I have already explained this to three different people."),
    ("customer", "kal16", "I am switching to another provider next week."),
    ("agent", "rms", "Let me transfer you to the billing department."),
    ("customer", "slt", "The delivery was supposed to arrive last Tuesday."),
    ("agent", "awb", "Just calm down and listen to me."),
    ("customer", "rms", "I would like a refund for the broken phone."),
    ("agent", "kal16", "Thanks for your patience, I have fixed the problem."),
    ("customer", "awb", "Can I get your supervisor on the line, please?"),
    ("customer", "slt", "We will take you to court over this."),
    ("agent", "rms", "I need to verify the address on your account."),
    ("agent", "slt", "Have a great day and thank you for calling."),
)
ENGLISH_GAP_S = 1.5  # silence after each sentence: an endpoint for the recogniser


@dataclass
class EnglishUtterance:
    speaker: str
    voice: str
    text: str
    wav: Path  # mono 8 kHz G.711 μ-law, 0.2 s lead-in, ENGLISH_GAP_S trailing silence


@dataclass
class EnglishCorpus:
    root: Path
    utterances: list[EnglishUtterance]
    call_wav: Path  # every sentence in order, mono 8 kHz μ-law, ENGLISH_GAP_S between them

    @property
    def reference(self) -> str:
        return " ".join(u.text for u in self.utterances)


@functools.lru_cache(maxsize=1)
def english_corpus() -> EnglishCorpus:
    """Each sentence spoken by its flite voice, through a phone line: 8 kHz G.711 μ-law WAVs."""
    root = Path(tempfile.mkdtemp(prefix="streamproc-english-"))
    atexit.register(shutil.rmtree, root, True)
    utterances = []
    for number, (speaker, voice, text) in enumerate(ENGLISH_SENTENCES):
        raw = root / f"{number:02d}-flite.wav"
        _run("flite", "-voice", voice, "-t", text, "-o", str(raw))
        wav = root / f"{number:02d}-{voice}.wav"
        # Phone line: 8 kHz, μ-law (-D: no dither, reproducible); -3 dB so nothing clips.
        _run("sox", "-D", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", str(wav),
             "gain", "-3", "pad", "0.2", str(ENGLISH_GAP_S))
        utterances.append(EnglishUtterance(speaker, voice, text, wav))
    call = root / "english-call.wav"
    _run("sox", "-D", *[str(u.wav) for u in utterances], "-e", "u-law", "-b", "8", str(call))
    return EnglishCorpus(root, utterances, call)


# --------------------------------------------------------------------------- word error rate

_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = {"1st": "first", "2nd": "second", "3rd": "third", "4th": "fourth", "5th": "fifth", "6th": "sixth",
             "7th": "seventh", "8th": "eighth", "9th": "ninth", "10th": "tenth"}
_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not", "n't": " not", "'m": " am", "'re": " are",
                 "'ll": " will", "'ve": " have", "'d": " would", "let's": "let us", "it's": "it is", "that's": "that is",
                 "what's": "what is", "there's": "there is", "here's": "here is", "he's": "he is", "she's": "she is"}
_SPELLINGS = {"okay": "ok", "alright": "all right", "mr": "mister", "mrs": "missus", "dr": "doctor"}


def _number_words(value: int) -> str:
    if value < 20:
        return _NUMBERS[value]
    if value < 100:
        return _TENS[value // 10] + ("" if value % 10 == 0 else " " + _NUMBERS[value % 10])
    if value < 1000:
        rest = value % 100
        return _NUMBERS[value // 100] + " hundred" + ("" if rest == 0 else " " + _number_words(rest))
    return " ".join(_NUMBERS[int(d)] for d in str(value))  # long numbers: digit by digit, as read out


def normalize_english(text: str) -> str:
    """Lower-case words for WER, a simple version of Whisper's English normaliser: contractions
    expanded, digits and ordinals spelled out, punctuation and hyphens gone."""
    import re

    text = text.lower().replace("\u2019", "'").replace("-", " ")
    for short, long in sorted(_CONTRACTIONS.items(), key=lambda item: -len(item[0])):
        text = text.replace(short, long)
    text = re.sub(r"\b(\d+(?:st|nd|rd|th))\b", lambda m: _ORDINALS.get(m.group(1), m.group(1)), text)
    text = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text).replace("'", "")
    return " ".join(_SPELLINGS.get(word, word) for word in text.split())


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize_english`
    (lists: corpus WER, total edits / total reference words). jiwer when installed, else
    rapidfuzz's Levenshtein distance on word lists (the same number)."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    assert len(refs) == len(hyps), "one hypothesis per reference"
    refs = [normalize_english(r) for r in refs]
    hyps = [normalize_english(h) for h in hyps]
    words = sum(len(r.split()) for r in refs)
    assert words, "empty reference"
    try:
        import jiwer
    except ImportError:
        from rapidfuzz.distance import Levenshtein

        return sum(Levenshtein.distance(r.split(), h.split()) for r, h in zip(refs, hyps)) / words
    # jiwer refuses empty strings: an empty hypothesis is all deletions.
    pairs = [(r, h) for r, h in zip(refs, hyps) if h]
    missing = sum(len(r.split()) for r, h in zip(refs, hyps) if not h)
    if not pairs:
        return 1.0
    output = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return (output.substitutions + output.deletions + output.insertions + missing) / words

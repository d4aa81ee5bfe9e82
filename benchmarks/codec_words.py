"""Do the codec's tokens keep the words a command needs? A small recognizer, not the policy.

The same GRU classifier (9 command labels) is trained on three views of the same utterances
and tested on held-out phrasings spoken in held-out voices:

* ``codes``: the codec's first ``--n-q`` codebook levels per 75 Hz frame (what an audio policy reads);
* ``mel``: 40 log-mel bands per 75 Hz frame of the same mixed audio (what the codec had to keep);
* ``ipa``: the phrasing's IPA symbols (the transcript; no voice, no noise);
* ``heard``: with a codec that has a phone head (``vla train-codec --content-weight``), the
  phones it transcribes from the audio (``AudioCodec.transcribe``), in training and test alike.

With a phone head the phone error rate of its transcriptions (against the phrasing's IPA) is
reported per test set too (``phone_error_rate``).

Training: the corpus's training phrasings, ``--renditions`` renditions each in training voices
(noise drawn from clean / 20 / 10 / 5 dB). Testing: the held-out phrasings, ``--test-renditions``
each in held-out voices at each of clean and 10 dB. If ``mel`` generalizes and ``codes`` does
not, the codec loses the words; if neither does, the data is too small for word recognition
from scratch. Plain script (JSON on the last line)::

    python -m benchmarks.codec_words --codec runs/audio/codec_v2 --renditions 12
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tokenizers_mm import audio_command as ac
from tokenizers_mm import corpus


def _render(codec, phrasings, renditions: int, voices: str, snrs, seed: int, n_q: int):
    from tokenizers_mm.codec_train import log_mel

    out = []
    for k in range(renditions):
        for j, p in enumerate(phrasings):
            rng = np.random.default_rng([seed, k, j])
            spec = ac.draw_rendition(p, rng, voices, snrs)
            record, pcm = corpus.render_item(spec, codes_fn=codec.encode)
            audio = pcm.astype(np.float32) / 32768.0
            mel = log_mel(audio, corpus.SAMPLE_RATE).T  # (frames, bands)
            codes = np.asarray(record["codes"])[:n_q].T  # (T, n_q)
            heard = codec.transcribe(audio) if codec.phone_head is not None else None
            out.append((codes, mel, corpus._ipa(p.text, p.lang), corpus.LABELS.index(p.label), heard))
    return out


class Recognizer(torch.nn.Module):
    def __init__(self, kind: str, vocab: int, n_in: int, hidden: int = 64) -> None:
        super().__init__()
        self.kind = kind
        self.embed = torch.nn.Embedding(vocab, hidden) if kind != "mel" else None
        self.proj = torch.nn.Linear(n_in, hidden) if kind == "mel" else None
        self.gru = torch.nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, len(corpus.LABELS))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) if self.kind == "mel" else self.embed(x).sum(2)
        packed = torch.nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed)
        return self.out(torch.cat([last[0], last[1]], dim=1))


def _tensors(items, kind: str, symbols: dict, codebook: int):
    seqs = []
    for codes, mel, ipa, _, heard in items:
        if kind == "codes":
            seqs.append(torch.as_tensor(codes + np.arange(codes.shape[1]) * codebook))  # (T, n_q) ids per level
        elif kind == "mel":
            seqs.append(torch.as_tensor(mel, dtype=torch.float32))
        else:  # ipa / heard: symbols; an empty transcription is one unknown symbol
            seq = (ipa if kind == "ipa" else heard) or ("<none>",)
            seqs.append(torch.as_tensor([[symbols.setdefault(s, len(symbols) + 1)] for s in seq]))
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    y = torch.tensor([it[3] for it in items])
    return x, lengths, y


def train_and_test(kind: str, train, tests: dict, epochs: int, seed: int, n_q: int, codebook: int) -> dict:
    torch.manual_seed(seed)
    symbols: dict = {}
    x, lengths, y = _tensors(train, kind, symbols, codebook)
    vocab = n_q * codebook if kind == "codes" else 512
    model = Recognizer(kind, vocab, x.shape[-1] if kind == "mel" else 1)
    if kind == "mel":  # standardize bands on the training set
        mean, std = x[x.abs().sum(-1) > 0].mean(0), x[x.abs().sum(-1) > 0].std(0) + 1e-5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            xb = (x[idx] - mean) / std if kind == "mel" else x[idx]
            loss = torch.nn.functional.cross_entropy(model(xb, lengths[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    result = {}
    with torch.no_grad():
        for name, items in {"train": train, **tests}.items():
            xt, lt, yt = _tensors(items, kind, symbols, codebook)
            xt = (xt - mean) / std if kind == "mel" else xt
            result[name] = float((model(xt, lt).argmax(1) == yt).float().mean())
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", required=True, help="codec checkpoint directory")
    p.add_argument("--renditions", type=int, default=12, help="training renditions per phrasing (default: %(default)s)")
    p.add_argument("--test-renditions", type=int, default=4, help="test renditions per phrasing and noise level")
    p.add_argument("--n-q", type=int, default=2, help="codebook levels read (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from tokenizers_mm.codec import AudioCodec

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    codec = AudioCodec.from_pretrained_dir(args.codec)
    train_ph = [q for q in corpus.PHRASINGS if not q.heldout]
    held_ph = [q for q in corpus.PHRASINGS if q.heldout]
    train = _render(codec, train_ph, args.renditions, "train", ac.TRAIN_SNRS_DB, args.seed, args.n_q)
    tests = {"heldout_clean": _render(codec, held_ph, args.test_renditions, "heldout", (None,), args.seed + 1, args.n_q),
             "heldout_10db": _render(codec, held_ph, args.test_renditions, "heldout", (10.0,), args.seed + 2, args.n_q),
             "trainphrasing_heldoutvoice_10db": _render(codec, train_ph, 1, "heldout", (10.0,), args.seed + 3, args.n_q)}
    print(f"rendered {len(train)} training and {sum(map(len, tests.values()))} test utterances in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    results: dict = {}
    kinds = ("codes", "mel", "ipa") + (("heard",) if codec.phone_head is not None else ())
    if codec.phone_head is not None:
        from tokenizers_mm.codec_train import phone_error_rate

        results["phone_error_rate"] = {name: phone_error_rate([it[2] for it in items], [it[4] for it in items])
                                       for name, items in {"train": train, **tests}.items()}
        print("phone error rate: " + ", ".join(f"{k} {v:.3f}" for k, v in results["phone_error_rate"].items()),
              flush=True)
    for kind in kinds:
        results[kind] = train_and_test(kind, train, tests, args.epochs, args.seed, args.n_q, codec.codebook_size)
        print(f"{kind:>6}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[kind].items()), flush=True)
    print(json.dumps({"renditions": args.renditions, "n_q": args.n_q, "results": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

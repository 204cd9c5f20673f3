#!/usr/bin/env python3
"""Writes the tokenizer fixtures for tests/tokenizer_test.cc and
tests/tokenizer_model_test.cc from independent oracles:

    pip install tokenizers sentencepiece gguf
    python3 tools/gen_tokenizer_fixtures.py [--model PATH] [--out-dir tests/data]

--model defaults to the output of tools/fetch-model.sh.

Files (all text fixtures are lines of TAB-separated fields; text is the hex
of its UTF-8 bytes, "-" when empty; ids are space-separated decimals):

  tokenizer_smollm.tsv   <mode> <text> <ids>
      SmolLM2-135M-Instruct's tokenizer as HF `tokenizers` (Rust) runs it,
      built from the GGUF's own tokens and merges with SmolLM2's pipeline:
      Sequence[Digits(individual_digits), ByteLevel(no prefix space)], the
      control tokens as special AddedTokens. mode "s": special tokens in the
      text are parsed; "p": they are plain text (encode_special_tokens).
  tokenizer_pretok.tsv   <kind> <text> <end offsets>
      Pre-tokenizer splits by HF's Split(Regex) (Oniguruma) with the
      patterns of gpt2, smollm (Digits first), llama3 and qwen2; the byte
      offset where each piece ends, space-separated.
  tokenizer_spm.gguf     a SentencePiece BPE model (vocab 700, byte
      fallback) trained here on generated multilingual text, written as a
      GGUF with tokenizer.ggml.model = "llama" and no tensors.
  tokenizer_spm.tsv      <text> <ids>  sentencepiece's own encoding
      (add_dummy_prefix, identity normalization) of ~100 strings, some with
      characters outside the vocabulary (byte fallback).
"""

import argparse
import os
import random
import subprocess
import tempfile

import gguf
import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import pre_tokenizers as pt

HERE = os.path.dirname(os.path.abspath(__file__))

GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
        r"|\s+(?!\S)|\s+")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def hexs(text):
    b = text.encode("utf-8")
    return b.hex() if b else "-"


def ids_str(ids):
    return " ".join(str(i) for i in ids) if ids else "-"


def corpus():
    """Strings covering what the pre-tokenizers and merges must get right."""
    s = [
        "", " ", "  ", "a", "Hello", "Hello world", "Hello, world!",
        " Hello", "  Hello  ", "hello   world", "trailing spaces   ",
        "tab\there", "\t\tindented", "line1\nline2", "a\n\n\nb", "\n",
        "\r\n", "x \n y", "word\r\nnext", "end\n\n", "  \n  x",
        "I'm you're we've they'll he'd it's don't", "I'M YOU'RE IT'S",
        "'s 't 're 've 'm 'll 'd", "rock'n'roll", "'hello'", "\"quoted\"",
        "12345", "3.14159", "1,000,000", "2024-01-15", "0x1F", "v1.2.3",
        "1234567890123456789012345678901234567890", "a1b2c3", " 42 ", "-7",
        "price: $19.99", "100%", "1e-10", "x=1+2*3", "²³ ½ ⅓ Ⅻ", "٣٤٥ १२३",
        "The quick brown fox jumps over the lazy dog.",
        "def foo(x):\n    return x * 2\n",
        "class A:\n    def __init__(self):\n        self.x = []  # comment\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "#include <vector>\nint main() { return 0; }\n",
        "std::vector<int32_t> ids;  // TODO",
        "if x!=y and x<=z: pass", "a->b.c::d", "    ", "        x",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
        "https://example.com/path?q=1&r=2#frag", "user@example.org",
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "I ❤️ Unicode ✨🎉",
        "日本語のテキスト", "中文文本测试，标点符号。", "한국어 텍스트",
        "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир!", "Ελληνικά",
        "עברית", "ไทย ภาษา", "Ünïcödé àçcéñts", "naïve café résumé",
        "ﬁ ligature", "ß ẞ", "Ǆ ǅ ǆ", "\u00a0nbsp\u00a0", "zero\u200bwidth",
        "\u3000ideographic space", "\u2028line sep", "mixed 日本 text 123",
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>",
        "text<|endoftext|>more", "<|im_end|><|im_end|>",
        "<|im_start|> spaced <|im_end|>", "<|im_start", "<|im_start|",
        "<repo_name>x<file_sep>y", "<<|im_end|>>", "a<|im_end|>b c",
        "!!!", "...", "---", "=====", "***bold***", "~!@#$%^&*()_+",
        "a  b   c    d", " \t \n", "\x0b\x0c", "\x1c\x1d\x1e\x1f",
        "a\r b", "\r\r\rz", "x\t\r  y", "it'S 'Ll 'VE", "ab'sup",
        "e\u0301", "Å Å", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0001F600\U0001F601",
    ]
    # Deterministic mixtures, to reach a few hundred.
    rng = random.Random(20261123)
    atoms = ["the", " cat", "'s", " 12", "3", "  ", "\n", "\t", "日本",
             "é", "😀", "!", "?", " ", "Hello", "x", "<|im_end|>", "'LL",
             "ا", "ж", "١", "\u00a0", ".", "_", "0", "🏽", "\r\n", "ab'",
             "ﬁ", "++", " -", "—", "«", "»"]
    for _ in range(260):
        s.append("".join(rng.choice(atoms) for _ in range(rng.randint(1, 12))))
    # One long prompt, also the speed test's input.
    para = ("In 2024, the model processed 1,234,567 tokens/s on a phone. "
            "Wasn't that fast?  It's   \"quite\" fast!\n\tdef f(x): return "
            "x**2 + 3.5\n日本語も少し。Привет! 😀👍🏽\n")
    s.append((para * 12)[:2000])
    return s


def smollm_tokenizer(model_path):
    r = gguf.GGUFReader(model_path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab,
                     merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pt.Sequence([
        pt.Digits(individual_digits=True),
        pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def write_smollm(model_path, out_dir):
    tok = smollm_tokenizer(model_path)
    lines = []
    for mode in ("s", "p"):
        tok.encode_special_tokens = mode == "p"
        for text in corpus():
            if mode == "p" and "<" not in text:
                continue
            ids = tok.encode(text, add_special_tokens=False).ids
            lines.append(f"{mode}\t{hexs(text)}\t{ids_str(ids)}")
    path = os.path.join(out_dir, "tokenizer_smollm.tsv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} strings")


def write_pretok(out_dir):
    kinds = {
        "gpt2": pt.Split(Regex(GPT2), behavior="isolated"),
        "smollm": pt.Sequence([pt.Digits(individual_digits=True),
                               pt.Split(Regex(GPT2), behavior="isolated")]),
        "llama3": pt.Split(Regex(LLAMA3), behavior="isolated"),
        "qwen2": pt.Split(Regex(QWEN2), behavior="isolated"),
    }
    texts = [t for t in corpus() if "<|" not in t][:220]
    lines = []
    for kind, pre in kinds.items():
        for text in texts:
            ends = []
            for _, (a, b) in pre.pre_tokenize_str(text):
                ends.append(len(text[:b].encode("utf-8")))
            lines.append(f"{kind}\t{hexs(text)}\t{ids_str(ends)}")
    path = os.path.join(out_dir, "tokenizer_pretok.tsv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} splits")


def spm_training_text():
    rng = random.Random(7)
    words = ("the of and to in is that it was for on are with as his they "
             "be at one have this from or had by hot word but what some we "
             "can out other were all there when up use your how said an each "
             "she which do their time if will way about many then them write "
             "would like so these her long make thing see him two has look "
             "more day could go come did number sound no most people my over "
             "know water than call first who may down side been now find "
             "maison chat été très année über Straße größer привет мир дом "
             "hello world tokenizer model text").split()
    lines = []
    for _ in range(400):
        n = rng.randint(4, 14)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line += " " + str(rng.randint(0, 99999))
        if rng.random() < 0.3:
            line = line.capitalize() + "."
        lines.append(line)
    return "\n".join(lines) + "\n"


SPM_TEXTS = [
    "", "hello", "hello world", " hello", "hello ", "  two  spaces  ",
    "The first word was water.", "über die Straße", "привет мир",
    "année très été", "12345", "call 911 now", "tab\there", "new\nline",
    "😀", "日本語", "hello 😀 world", "Ω≈ç√", "emoji 👍🏽 skin",
    "unknown ğ ş ı", "ẞ", "what people know", "WATER", "Water Water water",
    "x", "zzz qqq", "a b c d e f", "the the the the", "make thing see",
    "<s>", "</s>", "<unk>", "<0x41>", "▁", "a▁b", "\u00a0", "...",
    "hello, world!", "She said: \"time\".", "first-day", "one/two",
    "lll", "eeee", "looook", "calll wiill", "seee theee", "aaaaaaa",
    "ttttt", "sss", "  a", "   ", "mmmm nnnn",
]


def write_spm(out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "train.txt")
        with open(text_path, "w") as f:
            f.write(spm_training_text())
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            input=text_path, model_prefix=prefix, model_type="bpe",
            vocab_size=700, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=True,
            split_digits=True, allow_whitespace_only_pieces=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
            minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    path = os.path.join(out_dir, "tokenizer_spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    rng = random.Random(11)
    train_words = spm_training_text().split()
    texts = list(SPM_TEXTS)
    extra = ["ğ", "😀", "日", " ", "  ", "7", ".", "Ж", "é", "ß", "\t"]
    while len(texts) < 110:
        parts = [rng.choice(train_words if rng.random() < 0.7 else extra)
                 for _ in range(rng.randint(1, 8))]
        texts.append(rng.choice([" ", "", "  "]).join(parts))
    lines = []
    for text in texts:
        ids = sp.encode(text)
        lines.append(f"{hexs(text)}\t{ids_str(ids)}")
    tsv = os.path.join(out_dir, "tokenizer_spm.tsv")
    with open(tsv, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {n} tokens; {tsv}: {len(lines)} strings")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out-dir", default=os.path.normpath(
        os.path.join(HERE, "..", "tests", "data")))
    args = parser.parse_args()
    model = args.model or subprocess.check_output(
        [os.path.join(HERE, "fetch-model.sh")], text=True).strip()
    write_smollm(model, args.out_dir)
    write_pretok(args.out_dir)
    write_spm(args.out_dir)


if __name__ == "__main__":
    main()

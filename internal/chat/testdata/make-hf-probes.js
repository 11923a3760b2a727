// Regenerates hf-probes.json: token ids and decodes computed by Hugging Face
// tokenizers 0.23.2 (the version that made the dev fixtures; its Node binding,
// `npm install tokenizers@0.23.2`) on the fixture tokenizer
// goldens/mllama-tiny-dev/base/tokenizer.json.
//
//   NODE_PATH=<dir with node_modules/tokenizers> node make-hf-probes.js ../../../goldens/mllama-tiny-dev/base/tokenizer.json > hf-probes.json
//
// transformers 5.17 adds nothing to these: tokenizer(text) is the backend's
// encode, and decode skips clean_up_tokenization_spaces for BPE models.
const { Tokenizer } = require('tokenizers');

// A small deterministic generator (mulberry32), so the random cases are
// the same on every run.
function rng(seed) {
  return () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const handwritten = [
  // Runs of one character: where Ollama's rank-only merge order departs.
  '='.repeat(18), '-'.repeat(50), 'a'.repeat(27), '!'.repeat(17), '.'.repeat(31), 'a'.repeat(200),
  ' '.repeat(40), '\n'.repeat(9), 'ab'.repeat(30), '0'.repeat(25), '*'.repeat(64), '#'.repeat(12),
  // Runs of non-ASCII whitespace: \s is Unicode in Oniguruma, ASCII in RE2.
  'a\u00a0\u00a0b', 'x\u3000\u3000y', '\v\vx', 'a \u00a0b', 'a\u2009\u2009\u2009b', '\u0085\u0085z', 'p\u2028\u2029q',
  'end\u00a0\u00a0', '\u3000', ' \u00a0 \u00a0 x', '\f\fy', 'tab\t\u00a0\ttab', 'a\u200bb', 'a\ufeffb',
  // Added tokens: partial, adjacent, nested, repeated.
  '<|image|><|image|>', '<|image|', '|><|eot_id|><|', '<|<|eot_id|>|>', 'x<|begin_of_text|>y',
  '<|reserved_special_token_10|><|reserved_special_token_1|>', ' <|eot_id|> ', '<|eot_id|>\n\n<|eot_id|>',
  '<|start_header_id|>assistant<|end_header_id|>\n\n', '<|python_tag|>{"name": "f"}<|eom_id|>',
  // Contractions, case folding, long s.
  "IT'S WE'LL THEY'D I'M", "'s's's", "don\u2019t", "x'S y'T", "\u017f's '\u017f", "O'Neil's",
  // Digits and punctuation.
  '1234567890123', '3.14159e-10', '1,000,000.00', '\u0661\u0662\u0663\u0664', '\u00bd\u2153', '①②③④',
  '!!!???...', '--> <-- ==> <==', 'x+=1; y-=2;', '#!/bin/sh\nexit 0\n',
  // Scripts, marks, emoji.
  'e\u0301te\u0301', 'na\u00efve caf\u00e9', '\u0928\u092e\u0938\u094d\u0924\u0947', '\u05e9\u05dc\u05d5\u05dd',
  '\ud55c\uad6d\uc5b4', '\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67',
  '\ud83c\udff3\ufe0f\u200d\ud83c\udf08', 'ﬁﬂ', 'ＡＢＣ１２３', '\u00ad soft\u00adhyphen',
  // Control characters and NUL.
  '\u0000', 'a\u0000b', '\u0001\u0002\u007f', '\r\r\n\n\r', 'x\r\ny\rz',
  // JSON and code as templates print them.
  '{"name": "get_weather", "parameters": {"city": "Paris"}}', '{\n    "type": "function"\n}',
  'def f(x):\n\treturn x ** 2  # square\n', '<html><body class="x">&amp;</body></html>',
  'https://example.com/path?q=a+b&r=%20#frag', 'user@example.com',
  // Whitespace at the ends.
  ' ', '  ', '\n', ' \n ', 'word ', ' word', 'word  ', '\tword\t',
];

const alphabet = [
  'a', 'b', 'e', 'S', 'T', 'x', 'Z', '0', '7', '9', ' ', ' ', ' ', '\t', '\n', '\r', '\v', '\f',
  '\u00a0', '\u3000', '\u2009', '\u0085', '\u2028', "'", '"', '.', ',', '-', '=', '!', '?', '<', '>', '|',
  '_', '(', ')', '{', '}', '\\', '/', '\u00e9', '\u00fc', '\u00df', '\u0301', '\u4f60', '\u597d', '\u3053',
  '\u041f', '\u0440', '\ud83d\ude00', '\ud83d\udc4d', '\ud83c\udffd', '\u00bd', '\u0661', 's', "'s", "'ll",
  '<|image|>', '<|eot_id|>', '<|begin', '_of_text|>', '\u0000', '\u00ad', '\u017f', 'ſ',
];

const rand = rng(20261127);
const random = [];
for (let i = 0; i < 250; i++) {
  const n = 1 + Math.floor(rand() * 40);
  let s = '';
  for (let k = 0; k < n; k++) s += alphabet[Math.floor(rand() * alphabet.length)];
  random.push(s);
}

(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const encode = [];
  for (const text of handwritten.concat(random)) {
    const plain = await tok.encode(text, null, { addSpecialTokens: false });
    const withBOS = await tok.encode(text, null, { addSpecialTokens: true });
    encode.push({ text, ids: plain.getIds(), ids_with_bos: withBOS.getIds(), decoded: await tok.decode(plain.getIds(), false) });
  }
  // Decoding arbitrary ids: byte tokens that split a character, NUL, ids
  // past the vocabulary (skipped), special tokens.
  const decodeIDs = [[9468], [9468, 239], [9468, 239, 235], [239, 235], [94, 0, 1], [128000, 9906, 128009],
    [128256, 999999, 3923], [1], [188], [199, 199], [], [220, 128006, 220], [100, 101, 102, 103, 104]];
  for (let i = 0; i < 40; i++) {
    const n = 1 + Math.floor(rand() * 8);
    const ids = [];
    for (let k = 0; k < n; k++) ids.push(rand() < 0.5 ? Math.floor(rand() * 256) : Math.floor(rand() * 128300));
    decodeIDs.push(ids);
  }
  const decode = [];
  for (const ids of decodeIDs) decode.push({ ids, decoded: await tok.decode(ids, false) });
  // One case per line keeps the file small and its diffs readable.
  const lines = (xs) => xs.map((x) => '  ' + JSON.stringify(x)).join(',\n');
  process.stdout.write('{"tokenizers": "0.23.2", "tokenizer": "goldens/mllama-tiny-dev/base/tokenizer.json",\n' +
    ' "encode": [\n' + lines(encode) + '\n ],\n "decode": [\n' + lines(decode) + '\n ]}\n');
})();

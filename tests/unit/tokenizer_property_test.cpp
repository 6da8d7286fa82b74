// Property tests of the tokenizer on the four real tokenizer files: random valid UTF-8 from every
// plane, random bytes, random ids, 1 MB inputs without a space and long runs of one character.
// Invariants checked (each against a reference written here, never kiln's own helpers):
//  - valid UTF-8 encodes without error and decodes back to the input (Qwen3: to its NFC form, as
//    its tokenizer.json has an NFC normalizer; the NFC reference is utf8proc's);
//  - invalid UTF-8 is rejected with KILN_ERR_INVALID_ARGUMENT (documented in kiln.h), never a
//  crash;
//  - decode of any in-range ids is valid UTF-8 (invalid bytes become U+FFFD);
//  - the streaming decoder only ever emits valid UTF-8 pieces whose concatenation equals decode.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    const fs::path root = test::fixtures_dir() / "tokenizers" / name;
    slot = Tokenizer::from_files(test::gunzip_fixture(root / "tokenizer.json.gz"),
                                 root / "tokenizer_config.json");
  }
  return *slot;
}

// RFC 3629 section 4 (UTF8-octets grammar), written out independently of kiln's decoder.
bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto in = [](unsigned char b, unsigned lo, unsigned hi) { return b >= lo && b <= hi; };
  while (i < s.size()) {
    const unsigned char b0 = byte(i);
    size_t n;
    unsigned lo1 = 0x80, hi1 = 0xBF;
    if (b0 <= 0x7F)
      n = 1;
    else if (in(b0, 0xC2, 0xDF))
      n = 2;
    else if (b0 == 0xE0)
      n = 3, lo1 = 0xA0;
    else if (in(b0, 0xE1, 0xEC) || in(b0, 0xEE, 0xEF))
      n = 3;
    else if (b0 == 0xED)
      n = 3, hi1 = 0x9F;
    else if (b0 == 0xF0)
      n = 4, lo1 = 0x90;
    else if (in(b0, 0xF1, 0xF3))
      n = 4;
    else if (b0 == 0xF4)
      n = 4, hi1 = 0x8F;
    else
      return false;
    if (i + n > s.size()) return false;
    if (n > 1 && !in(byte(i + 1), lo1, hi1)) return false;
    for (size_t k = 2; k < n; ++k)
      if (!in(byte(i + k), 0x80, 0xBF)) return false;
    i += n;
  }
  return true;
}

void append_code_point(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A random scalar value: mostly ASCII and common scripts, but every plane (0..16) is reachable,
// surrogates excluded (they are not scalar values, so not encodable in UTF-8).
char32_t random_code_point(std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 9);
  switch (kind(rng)) {
    case 0:
    case 1:
    case 2:
      return std::uniform_int_distribution<char32_t>(0x20, 0x7E)(rng);
    case 3:
      return std::uniform_int_distribution<char32_t>(0, 0x1F)(rng);  // controls, \n, \t
    case 4:
      return std::uniform_int_distribution<char32_t>(0x80, 0x7FF)(rng);
    case 5:
      return std::uniform_int_distribution<char32_t>(0x4E00, 0x9FFF)(rng);  // CJK
    case 6:
      return std::uniform_int_distribution<char32_t>(0x1F300, 0x1FAFF)(rng);  // emoji
    default: {
      char32_t cp;
      do {
        cp = std::uniform_int_distribution<char32_t>(0x800, 0x10FFFF)(rng);
      } while (cp >= 0xD800 && cp <= 0xDFFF);
      return cp;
    }
  }
}

std::string random_utf8(std::mt19937& rng, size_t n_chars) {
  std::string s;
  for (size_t i = 0; i < n_chars; ++i) append_code_point(s, random_code_point(rng));
  return s;
}

// utf8proc's NFC (UTF8PROC_STABLE | UTF8PROC_COMPOSE is what utf8proc_NFC uses), given the
// length so that U+0000 inside the text is kept.
std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  EXPECT_GE(n, 0) << utf8proc_errmsg(n);
  std::string r(reinterpret_cast<const char*>(out), n < 0 ? 0 : static_cast<size_t>(n));
  std::free(out);
  return r;
}

// What decode(encode(s)) must give back for each tokenizer: every one is lossless on valid UTF-8
// except for its normalizer (Qwen3: NFC; the others have none or only the reversible "▁" rules).
std::string expected_round_trip(const std::string& name, const std::string& s) {
  return name == "qwen3" ? nfc(s) : s;
}

void expect_stream_matches_decode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                                  const std::string& what) {
  StreamDecoder stream(tok, /*skip_special=*/false);
  std::string joined;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    ASSERT_TRUE(is_valid_utf8(piece)) << what << ": a streamed piece splits a character";
    joined += piece;
  }
  const std::string tail = stream.flush();
  ASSERT_TRUE(is_valid_utf8(tail)) << what;
  joined += tail;
  ASSERT_EQ(joined, tok.decode(ids, false)) << what;
}

class TokenizerProperty : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerProperty, RandomValidUtf8RoundTripsAndStreamsWholeCharacters) {
  const std::string name = GetParam();
  const Tokenizer& tok = tokenizer(name);
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string s = random_utf8(rng, std::uniform_int_distribution<size_t>(0, 60)(rng));
    ASSERT_TRUE(is_valid_utf8(s));
    const std::vector<int32_t> ids = tok.encode(s, false, false);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    ASSERT_EQ(tok.decode(ids, false), expected_round_trip(name, s)) << name << " trial " << trial;
    expect_stream_matches_decode(tok, ids, name + " trial " + std::to_string(trial));
  }
}

TEST_P(TokenizerProperty, RandomBytesAreRejectedExactlyWhenInvalid) {
  const Tokenizer& tok = tokenizer(GetParam());
  std::mt19937 rng(99);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s(std::uniform_int_distribution<size_t>(1, 12)(rng), '\0');
    // Mostly high bytes, so that both valid multi-byte sequences and invalid ones occur.
    for (char& c : s) c = static_cast<char>(std::uniform_int_distribution<int>(0x60, 0xFF)(rng));
    const bool valid = is_valid_utf8(s);
    try {
      const auto ids = tok.encode(s, false, false);
      ASSERT_TRUE(valid) << "invalid UTF-8 accepted at trial " << trial;
      ASSERT_EQ(tok.decode(ids, false), expected_round_trip(GetParam(), s));
    } catch (const Error& e) {
      ASSERT_FALSE(valid) << "valid UTF-8 rejected: " << e.what();
      ASSERT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
      ASSERT_NE(std::string(e.what()).find("UTF-8"), std::string::npos);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);  // the generator did produce invalid input
  EXPECT_LT(rejected, 2000);
}

TEST_P(TokenizerProperty, RandomIdsDecodeToValidUtf8AndStreamConsistently) {
  const Tokenizer& tok = tokenizer(GetParam());
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any_id(0, tok.vocab_size() - 1);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(std::uniform_int_distribution<size_t>(1, 20)(rng));
    for (int32_t& id : ids) id = any_id(rng);
    ASSERT_TRUE(is_valid_utf8(tok.decode(ids, false))) << "trial " << trial;
    ASSERT_TRUE(is_valid_utf8(tok.decode(ids, true))) << "trial " << trial;
    expect_stream_matches_decode(tok, ids, "random ids trial " + std::to_string(trial));
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{tok.vocab_size()}, false), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}, false), Error);
}

TEST_P(TokenizerProperty, OneMegabyteWithoutSpacesAndLongRuns) {
  const std::string name = GetParam();
  const Tokenizer& tok = tokenizer(name);
  std::mt19937 rng(5);
  std::string letters;  // 1 MB of letters, digits and CJK with no whitespace at all
  while (letters.size() < (1u << 20)) {
    const int k = std::uniform_int_distribution<int>(0, 3)(rng);
    if (k == 0)
      append_code_point(letters, std::uniform_int_distribution<char32_t>(0x4E00, 0x9FFF)(rng));
    else if (k == 1)
      letters += static_cast<char>('0' + rng() % 10);
    else
      letters += static_cast<char>('a' + rng() % 26);
  }
  std::vector<std::string> inputs = {letters, std::string(1u << 20, 'a'), std::string(200000, ' '),
                                     std::string(200000, '\n'), std::string(200000, '9')};
  std::string emoji;
  for (int i = 0; i < 50000; ++i) emoji += "\xF0\x9F\x98\x80";  // U+1F600 × 50000
  inputs.push_back(emoji);
  for (const std::string& s : inputs) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok.encode(s, false, false);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_FALSE(ids.empty());
    ASSERT_EQ(tok.decode(ids, false), expected_round_trip(name, s))
        << name << ": input of " << s.size() << " bytes starting '" << s.substr(0, 8) << "'";
    // Linear-ish time: a quadratic merge loop would take minutes on a 1 MB word. The bound leaves
    // room for sanitizer builds and a loaded 2-core CI machine (Release takes well under 1 s).
    EXPECT_LT(seconds, 30.0) << name << ": " << s.size() << " bytes took " << seconds << " s";
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, TokenizerProperty,
                         ::testing::Values("qwen3", "llama3", "mistral", "gptoss"));

}  // namespace
}  // namespace kiln

// Regression tests for the crashes the libFuzzer targets in fuzz/ found (docs/reliability.md):
// each input that once escaped as something other than kiln::Error, or crashed, is replayed here
// and must now end in a kiln::Error or render correctly.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "chat/chat_template.hpp"
#include "core/error.hpp"
#include "test_support.hpp"
#include "train/checkpoint/checkpoint.hpp"

namespace kiln::chat {
namespace {

// The status of the kiln::Error fn throws (KILN_OK when it returns). Any other exception type
// propagates and fails the test: that escape was the bug.
kiln_status status_of(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.status();
  }
  return KILN_OK;
}

std::string render(const std::string& source) {
  return ChatTemplate(source).render(Dict{}, RenderLimits{}, 0);
}

// fuzz_chat_template crash-8af2fed3: "\u" followed by non-hex characters made the lexer's
// std::stoul throw std::invalid_argument out of ChatTemplate's constructor.
TEST(FuzzRegression, StringEscapeWithoutHexDigitsIsASyntaxError) {
  std::string msg;
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\u fualsis" }})"); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("4 hex digits"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\xZZ" }})"); }), KILN_ERR_FORMAT);
  // Accepted by std::stoul (sign, partial digits) but not escapes in Python.
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\u-001" }})"); }), KILN_ERR_FORMAT);
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\u12zz" }})"); }), KILN_ERR_FORMAT);
}

TEST(FuzzRegression, EscapeBeyondUnicodeIsASyntaxError) {
  std::string msg;
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\U00110000" }})"); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("not a Unicode scalar value"), std::string::npos) << msg;
  EXPECT_EQ(status_of([] { ChatTemplate(R"({{ "\uD800" }})"); }), KILN_ERR_FORMAT);
}

TEST(FuzzRegression, ValidEscapesStillDecodeToUtf8) {
  // U+00E9 is C3 A9 in UTF-8, U+20AC is E2 82 AC, U+1F600 is F0 9F 98 80 (RFC 3629 section 3).
  EXPECT_EQ(render(R"({{ "\u00e9|\u20AC|\U0001F600|\x41" }})"),
            "\xC3\xA9|\xE2\x82\xAC|\xF0\x9F\x98\x80|A");
}

// Found reviewing the same class of bug: an all-digit attribute path beyond size_t made
// std::stoul throw std::out_of_range from map(attribute=...). Jinja treats it as a missing item.
TEST(FuzzRegression, HugeNumericAttributePathIsUndefined) {
  EXPECT_EQ(
      render(R"({{ ([[1, 2]] | map(attribute="99999999999999999999999") | first) is undefined }})"),
      "True");
  EXPECT_EQ(render(R"({{ [[1, 2]] | map(attribute="1") | first }})"), "2");
}

// fuzz_checkpoint crash-bf657b19: a manifest whose tensors[5].shape vector ([long]) starts 4 bytes
// off its 8-byte alignment passes flatbuffers 2.0's Verifier (it checks the length prefix's 4-byte
// alignment only), and reading the dims was a misaligned load (UBSan: undefined behaviour). The
// file is now rejected as corrupt, naming the field (before the fix it was rejected too, but only
// later, by another check, after the undefined read: so the message is what is asserted). The
// reproducer is also in the corpus that ctest replays (fuzz_corpus_replay_fuzz_checkpoint, under
// UBSan in the asan job).
TEST(FuzzRegression, CheckpointWithMisalignedShapeVectorIsCorrupt) {
  const auto file = kiln::test::source_dir() / "fuzz" / "corpus" / "fuzz_checkpoint" /
                    "regression-crash-bf657b19-misaligned-shape.kiln";
  std::string msg;
  EXPECT_EQ(status_of([&] { (void)LoadedCheckpoint::open(file); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("tensors[5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape is not 8-byte aligned"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kiln::chat

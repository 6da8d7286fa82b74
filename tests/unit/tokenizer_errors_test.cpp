// Bad input to the tokenizer loader and API: each failure is a kiln::Error with the documented
// status and a message that names what was wrong.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {
namespace {

// The smallest byte-level BPE file: bytes "a", "b" and their merge "ab".
std::string tiny_tokenizer_json(const std::string& model_override = "",
                                const std::string& extra = "") {
  const std::string model = model_override.empty()
                                ? R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                                      "merges": ["a b"]})"
                                : model_override;
  return R"({"version": "1.0", "added_tokens": [], "normalizer": null,
             "pre_tokenizer": null, "post_processor": null, "decoder": null,
             "model": )" +
         model + extra + "}";
}

// Runs fn, expects a kiln::Error with `status` whose message contains `needle`.
template <typename Fn>
void expect_error(Fn&& fn, kiln_status status, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error with status " << status;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" does not mention \"" << needle << "\"";
  }
}

TEST(TokenizerErrors, MissingTokenizerFileIsNotFound) {
  const auto dir = test::temp_dir("tok-missing");
  expect_error([&] { Tokenizer::from_files(dir / "nope.json", dir / "nope_config.json"); },
               KILN_ERR_NOT_FOUND, "nope.json");
}

TEST(TokenizerErrors, MissingConfigFileMeansDefaults) {
  const auto dir = test::temp_dir("tok-noconfig");
  test::write_file(dir / "tokenizer.json", tiny_tokenizer_json());
  const auto tokenizer = Tokenizer::from_files(dir / "tokenizer.json", dir / "absent.json");
  EXPECT_EQ(tokenizer->encode("ab", true, true), std::vector<int32_t>{2});
  EXPECT_FALSE(tokenizer->bos_id().has_value());
  EXPECT_FALSE(tokenizer->eos_id().has_value());
  EXPECT_FALSE(tokenizer->adds_bos());
}

TEST(TokenizerErrors, InvalidJsonIsFormatError) {
  const auto dir = test::temp_dir("tok-badjson");
  test::write_file(dir / "tokenizer.json", R"({"model": {"type": "BPE", "vocab": {)");
  expect_error([&] { Tokenizer::from_files(dir / "tokenizer.json", dir / "none.json"); },
               KILN_ERR_FORMAT, "tokenizer.json");
  expect_error([&] { Tokenizer::from_json(tiny_tokenizer_json(), "{not json"); }, KILN_ERR_FORMAT,
               "tokenizer_config.json");
  expect_error([&] { Tokenizer::from_json("[1, 2]", ""); }, KILN_ERR_FORMAT, "object");
}

TEST(TokenizerErrors, OtherModelTypesAreUnsupported) {
  expect_error(
      [&] {
        Tokenizer::from_json(
            tiny_tokenizer_json(R"({"type": "Unigram", "unk_id": 0, "vocab": [["a", -1.0]]})"), "");
      },
      KILN_ERR_UNSUPPORTED, "Unigram");
  expect_error(
      [&] {
        Tokenizer::from_json(
            tiny_tokenizer_json(R"({"type": "WordPiece", "unk_token": "a", "vocab": {"a": 0}})"),
            "");
      },
      KILN_ERR_UNSUPPORTED, "WordPiece");
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  std::string json = tiny_tokenizer_json();
  const std::string with_precompiled = std::string(json).replace(
      json.find(R"("normalizer": null)"), 18,
      R"("normalizer": {"type": "Precompiled", "precompiled_charsmap": ""})");
  expect_error([&] { Tokenizer::from_json(with_precompiled, ""); }, KILN_ERR_UNSUPPORTED,
               "Precompiled");
  const std::string with_wordpiece_decoder = std::string(json).replace(
      json.find(R"("decoder": null)"), 15, R"("decoder": {"type": "WordPiece", "prefix": "##"})");
  expect_error([&] { Tokenizer::from_json(with_wordpiece_decoder, ""); }, KILN_ERR_UNSUPPORTED,
               "WordPiece");
}

TEST(TokenizerErrors, MalformedModelFieldsAreFormatErrorsNamingTheField) {
  expect_error(
      [&] {
        Tokenizer::from_json(
            tiny_tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"),
            "");
      },
      KILN_ERR_FORMAT, "model.merges[0]");
  expect_error(
      [&] {
        Tokenizer::from_json(
            tiny_tokenizer_json(
                R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]})"),
            "");
      },
      KILN_ERR_FORMAT, "model.merges[0]");
  expect_error(
      [&] {
        Tokenizer::from_json(tiny_tokenizer_json(R"({"type": "BPE", "vocab": {"a": "zero"},
                                                     "merges": []})"),
                             "");
      },
      KILN_ERR_FORMAT, "model.vocab");
  expect_error([&] { Tokenizer::from_json(R"({"normalizer": null})", ""); }, KILN_ERR_FORMAT,
               "model");
  expect_error(
      [&] {
        Tokenizer::from_json(tiny_tokenizer_json(),
                             R"({"bos_token": "<s>", "add_bos_token": true})");
      },
      KILN_ERR_FORMAT, "bos_token");
}

TEST(TokenizerErrors, BadIdsAndTextAreRejected) {
  const auto tokenizer = Tokenizer::from_json(tiny_tokenizer_json(), "");
  ASSERT_EQ(tokenizer->vocab_size(), 3);
  expect_error(
      [&] {
        tokenizer->decode(std::vector<int32_t>{0, 3}, false);
      },
      KILN_ERR_OUT_OF_RANGE, "3");
  expect_error([&] { tokenizer->decode(std::vector<int32_t>{-5}, false); }, KILN_ERR_OUT_OF_RANGE,
               "-5");
  expect_error([&] { tokenizer->token_bytes(3); }, KILN_ERR_OUT_OF_RANGE, "3");
  StreamDecoder stream(*tokenizer, false);
  expect_error([&] { stream.push(7); }, KILN_ERR_OUT_OF_RANGE, "7");
  expect_error(
      [&] {
        tokenizer->encode(
            "a\xFF"
            "b",
            false, false);
      },
      KILN_ERR_INVALID_ARGUMENT, "byte 1");
}

}  // namespace
}  // namespace kiln

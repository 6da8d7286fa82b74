// GgufFile: every metadata value type, nested arrays, tensor infos and alignment on files written
// by the independent test writer (gguf_test_writer.hpp, from the spec), llama.cpp's own files, and
// every malformed case the reader must refuse with a specific status and message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/gguf.hpp"
#include "gguf_test_writer.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

using test::GgufWriter;
namespace fs = std::filesystem;

// GgufFile::parse does not copy: `bytes` must outlive the result (never pass a temporary).
std::unique_ptr<GgufFile> parse(const std::string& bytes) {
  return GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.gguf");
}
std::unique_ptr<GgufFile> parse(std::string&&) = delete;

// Status and message of the error parsing `bytes` throws (fails the test when none is thrown).
std::pair<kiln_status, std::string> parse_error(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  ADD_FAILURE() << "parsing did not fail";
  return {KILN_OK, ""};
}

#define EXPECT_GGUF_ERROR(bytes, status, fragment)                            \
  do {                                                                        \
    const auto [st_, msg_] = parse_error(bytes);                              \
    EXPECT_EQ(st_, status) << msg_;                                           \
    EXPECT_NE(msg_.find(fragment), std::string::npos) << "message: " << msg_; \
  } while (0)

// A small valid file: two metadata pairs and two tensors (f32 [4], q8_0 [32, 2]).
GgufWriter small_file() {
  GgufWriter w;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.block_count", 1);
  w.tensor("a.weight", {4}, 0, std::string(16, '\x01'));
  w.tensor("b.weight", {32, 2}, 8, std::string(68, '\x02'));
  return w;
}

TEST(GgufReader, ReadsEveryValueTypeAndNestedArrays) {
  GgufWriter w;
  w.kv("u8", 0, GgufWriter::pod<uint8_t>(200));
  w.kv("i8", 1, GgufWriter::pod<int8_t>(-100));
  w.kv("u16", 2, GgufWriter::pod<uint16_t>(60000));
  w.kv("i16", 3, GgufWriter::pod<int16_t>(-30000));
  w.kv("u32", 4, GgufWriter::pod<uint32_t>(4000000000u));
  w.kv("i32", 5, GgufWriter::pod<int32_t>(-2000000000));
  w.kv("f32", 6, GgufWriter::pod<float>(0.25f));
  w.kv("bool", 7, GgufWriter::pod<uint8_t>(1));
  w.kv("str", 8, GgufWriter::str("héllo"));
  w.kv("u64", 10, GgufWriter::pod<uint64_t>(1ull << 40));
  w.kv("i64", 11, GgufWriter::pod<int64_t>(-(1ll << 40)));
  w.kv("f64", 12, GgufWriter::pod<double>(-1.5e300));
  // [[1, 2], [], [3]] as an array of arrays of uint16, and an array of strings.
  const std::string inner1 =
      GgufWriter::array(2, {GgufWriter::pod<uint16_t>(1), GgufWriter::pod<uint16_t>(2)});
  const std::string inner2 = GgufWriter::array(2, {});
  const std::string inner3 = GgufWriter::array(2, {GgufWriter::pod<uint16_t>(3)});
  w.kv("nested", 9, GgufWriter::array(9, {inner1, inner2, inner3}));
  w.kv_strings("strings", {"a", "", "c d"});
  const std::string bytes = w.build();
  const auto f = parse(bytes);

  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->metadata().size(), 14u);
  EXPECT_EQ(f->get_integer("u8"), 200);
  EXPECT_EQ(f->get_integer("i8"), -100);
  EXPECT_EQ(f->get_integer("u16"), 60000);
  EXPECT_EQ(f->get_integer("i16"), -30000);
  EXPECT_EQ(f->get_integer("u32"), 4000000000ll);
  EXPECT_EQ(f->get_integer("i32"), -2000000000);
  EXPECT_EQ(f->get_number("f32"), 0.25);
  EXPECT_EQ(f->get_bool("bool"), true);
  EXPECT_EQ(f->get_string("str"), "héllo");
  EXPECT_EQ(f->get_integer("u64"), 1ll << 40);
  EXPECT_EQ(f->get_integer("i64"), -(1ll << 40));
  EXPECT_EQ(f->get_number("f64"), -1.5e300);
  EXPECT_EQ(f->find("u8")->type, GgufValueType::UINT8);
  EXPECT_EQ(f->find("f64")->type, GgufValueType::FLOAT64);

  const GgufArray* nested = f->get_array("nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->element_type, GgufValueType::ARRAY);
  ASSERT_EQ(nested->items.size(), 3u);
  ASSERT_EQ(nested->items[0].as_array()->items.size(), 2u);
  EXPECT_EQ(nested->items[0].as_array()->items[1].as_integer(), 2);
  EXPECT_EQ(nested->items[1].as_array()->items.size(), 0u);
  EXPECT_EQ(nested->items[2].as_array()->items[0].as_integer(), 3);
  const GgufArray* strings = f->get_array("strings");
  ASSERT_EQ(strings->items.size(), 3u);
  EXPECT_EQ(*strings->items[2].as_string(), "c d");

  EXPECT_FALSE(f->get_integer("absent").has_value());
  try {
    f->get_string("u32");
    FAIL() << "a UINT32 read as a string";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("\"u32\" is UINT32, expected STRING"), std::string::npos)
        << e.what();
  }
}

TEST(GgufReader, TensorInfosPointIntoTheAlignedDataSection) {
  const std::string bytes = small_file().build();
  const auto f = parse(bytes);
  ASSERT_EQ(f->tensors().size(), 2u);
  const GgufTensor* b = f->find_tensor("b.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dims, (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(b->type, quant::GgmlType::Q8_0);
  EXPECT_EQ(b->nbytes, 68u);
  EXPECT_EQ(b->offset, 32u);  // 16 bytes of a, padded to the default alignment 32
  const size_t data_start =
      static_cast<size_t>(f->tensors()[0].data - reinterpret_cast<const uint8_t*>(bytes.data()));
  EXPECT_EQ(data_start % 32, 0u);
  EXPECT_EQ(b->data[0], 2);
  EXPECT_EQ(b->data[67], 2);
}

TEST(GgufReader, HonoursGeneralAlignment) {
  GgufWriter w;
  w.alignment = 64;
  w.kv_u32("general.alignment", 64);
  w.tensor("a", {4}, 0, std::string(16, '\x05'));
  w.tensor("b", {4}, 0, std::string(16, '\x06'));
  const std::string bytes = w.build();
  const auto f = parse(bytes);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->find_tensor("b")->offset, 64u);
  EXPECT_EQ(f->find_tensor("b")->data[0], 6);
}

TEST(GgufReader, ReadsLlamaCppFilesWithTheTypesTheManifestLists) {
  const fs::path dir = test::fixtures_dir() / "gguf" / "tiny-qwen2";
  const auto manifest = nlohmann::json::parse(test::read_file(dir / "manifest.json"));
  for (const auto& [file, types] : manifest.at("tensor_types_detail").items()) {
    SCOPED_TRACE(file);
    const auto f = GgufFile::open(dir / file);
    EXPECT_EQ(f->get_string("general.architecture"), "qwen2");
    EXPECT_EQ(f->get_integer("qwen2.block_count"), 2);
    EXPECT_EQ(f->get_array("tokenizer.ggml.tokens")->items.size(), 512u);
    EXPECT_EQ(f->tensors().size(), types.size());
    for (const auto& [name, type] : types.items()) {
      const GgufTensor* t = f->find_tensor(name);
      ASSERT_NE(t, nullptr) << name;
      std::string want = type.get<std::string>();
      EXPECT_EQ(quant::ggml_type_name(static_cast<uint32_t>(t->type)), want) << name;
    }
    const GgufTensor* embd = f->find_tensor("token_embd.weight");
    EXPECT_EQ(embd->dims, (std::vector<int64_t>{256, 512}));
  }
}

TEST(GgufReaderErrors, WrongMagic) {
  std::string bytes = small_file().build();
  bytes[0] = 'X';
  EXPECT_GGUF_ERROR(bytes, KILN_ERR_FORMAT, "not a GGUF file");
  EXPECT_GGUF_ERROR(std::string("GG"), KILN_ERR_FORMAT, "not a GGUF file");
}

TEST(GgufReaderErrors, UnknownVersions) {
  for (uint32_t v : {1u, 4u, 1000u}) {
    GgufWriter w = small_file();
    w.version = v;
    EXPECT_GGUF_ERROR(w.build(), KILN_ERR_UNSUPPORTED, "GGUF version " + std::to_string(v));
  }
  GgufWriter zero = small_file();
  zero.version = 0;
  EXPECT_GGUF_ERROR(zero.build(), KILN_ERR_FORMAT, "GGUF version 0");
  GgufWriter big_endian = small_file();
  big_endian.version = 0x03000000u;
  EXPECT_GGUF_ERROR(big_endian.build(), KILN_ERR_UNSUPPORTED, "big-endian");
  GgufWriter v2 = small_file();
  v2.version = 2;
  const std::string v2_bytes = v2.build();
  EXPECT_EQ(parse(v2_bytes)->version(), 2u);
}

// Every proper prefix of a valid file is refused as malformed: no read past the end, no crash.
TEST(GgufReaderErrors, EveryTruncationIsAFormatError) {
  const std::string bytes = small_file().build();
  for (size_t n = 0; n < bytes.size(); ++n) {
    const auto [status, msg] = parse_error(bytes.substr(0, n));
    ASSERT_EQ(status, KILN_ERR_FORMAT) << "prefix of " << n << " bytes: " << msg;
  }
  EXPECT_GGUF_ERROR(bytes.substr(0, 30), KILN_ERR_FORMAT,
                    "tensor_count is 2, but the 14 bytes left");
  EXPECT_GGUF_ERROR(bytes.substr(0, bytes.size() - 1), KILN_ERR_FORMAT,
                    "tensor b.weight data [32, 100)");
}

TEST(GgufReaderErrors, CountsAndLengthsPastTheEnd) {
  const std::string header = "GGUF" + GgufWriter::pod<uint32_t>(3);
  EXPECT_GGUF_ERROR(header + GgufWriter::pod<uint64_t>(1ull << 60) + GgufWriter::pod<uint64_t>(0),
                    KILN_ERR_FORMAT, "tensor_count is 1152921504606846976");
  EXPECT_GGUF_ERROR(header + GgufWriter::pod<uint64_t>(0) + GgufWriter::pod<uint64_t>(~0ull),
                    KILN_ERR_FORMAT, "metadata_kv_count");

  GgufWriter long_string;
  long_string.kv("k", 8, GgufWriter::pod<uint64_t>(1ull << 40) + "abc");
  EXPECT_GGUF_ERROR(long_string.build(), KILN_ERR_FORMAT, "past the end");

  GgufWriter long_key;
  long_key.kv("k", 4, GgufWriter::pod<uint32_t>(1));
  std::string bytes = long_key.build();
  const uint64_t huge = 1ull << 50;  // the key's length field, right after the 24-byte header
  std::memcpy(bytes.data() + 24, &huge, 8);
  EXPECT_GGUF_ERROR(bytes, KILN_ERR_FORMAT, "metadata key #0 claims");

  GgufWriter long_array;
  long_array.kv("arr", 9, GgufWriter::pod<uint32_t>(10) + GgufWriter::pod<uint64_t>(1ull << 40));
  EXPECT_GGUF_ERROR(long_array.build(), KILN_ERR_FORMAT, "element count");
}

TEST(GgufReaderErrors, NestingDepthIsCapped) {
  std::string value = GgufWriter::array(4, {});
  for (int i = 0; i < 40; ++i) value = GgufWriter::array(9, {value});
  GgufWriter w;
  w.kv("deep", 9, value);
  EXPECT_GGUF_ERROR(w.build(), KILN_ERR_FORMAT, "nests arrays");
}

TEST(GgufReaderErrors, BadValues) {
  GgufWriter type;
  type.kv("k", 13, "");
  EXPECT_GGUF_ERROR(type.build(), KILN_ERR_FORMAT, "unknown value type 13");
  GgufWriter element;
  element.kv("k", 9, GgufWriter::array(99, {}));
  EXPECT_GGUF_ERROR(element.build(), KILN_ERR_FORMAT, "unknown element type 99");
  GgufWriter boolean;
  boolean.kv("k", 7, GgufWriter::pod<uint8_t>(2));
  EXPECT_GGUF_ERROR(boolean.build(), KILN_ERR_FORMAT, "bool stored as 2");
  GgufWriter dup = small_file();
  dup.kv_u32("llama.block_count", 2);
  EXPECT_GGUF_ERROR(dup.build(), KILN_ERR_FORMAT, "\"llama.block_count\" appears twice");
  for (uint32_t a : {0u, 3u, 48u}) {
    GgufWriter align = small_file();
    align.kv_u32("general.alignment", a);
    EXPECT_GGUF_ERROR(align.build(), KILN_ERR_FORMAT, "general.alignment is " + std::to_string(a));
  }
  GgufWriter align_type = small_file();
  align_type.kv_str("general.alignment", "32");
  EXPECT_GGUF_ERROR(align_type.build(), KILN_ERR_FORMAT, "expected UINT32");
}

TEST(GgufReaderErrors, TensorDataOutOfBoundsOrMisaligned) {
  GgufWriter past = small_file();
  past.tensor("c.weight", {4}, 0, "", 4096);
  EXPECT_GGUF_ERROR(past.build(), KILN_ERR_FORMAT, "tensor c.weight data [4096, 4112)");
  GgufWriter huge = small_file();
  huge.tensor("c.weight", {1ull << 40}, 0, "", 0);
  EXPECT_GGUF_ERROR(huge.build(), KILN_ERR_FORMAT, "lies outside");
  GgufWriter misaligned = small_file();
  misaligned.tensor("c.weight", {4}, 0, "", 40);
  EXPECT_GGUF_ERROR(misaligned.build(), KILN_ERR_FORMAT,
                    "offset 40 is not a multiple of the alignment 32");
  GgufWriter overlap = small_file();
  overlap.tensor("c.weight", {4}, 0, "", 32);
  EXPECT_GGUF_ERROR(overlap.build(), KILN_ERR_FORMAT, "overlap");
  GgufWriter overflow = small_file();
  overflow.tensor("c.weight", {1ull << 32, 1ull << 32}, 0, "", 0);
  EXPECT_GGUF_ERROR(overflow.build(), KILN_ERR_FORMAT, "overflows");
}

TEST(GgufReaderErrors, BadTensorInfos) {
  GgufWriter blocks;
  blocks.tensor("q.weight", {48, 2}, 2, std::string(54, '\0'));  // q4_0 blocks are 32 wide
  EXPECT_GGUF_ERROR(blocks.build(), KILN_ERR_FORMAT,
                    "q.weight of type q4_0 has shape [48, 2]: its first dimension is not a "
                    "multiple of the block size 32");
  GgufWriter dup = small_file();
  dup.tensor("a.weight", {4}, 0, std::string(16, '\0'));
  EXPECT_GGUF_ERROR(dup.build(), KILN_ERR_FORMAT, "tensor name a.weight appears twice");
  GgufWriter dims;
  dims.tensor("d", {1, 1, 1, 1, 1}, 0, std::string(4, '\0'));
  EXPECT_GGUF_ERROR(dims.build(), KILN_ERR_FORMAT, "has 5 dimensions");
  GgufWriter zero;
  zero.tensor("z", {0}, 0, "");
  EXPECT_GGUF_ERROR(zero.build(), KILN_ERR_FORMAT, "dimension 0 is 0");
  GgufWriter name;
  name.tensor(std::string(65, 'n'), {4}, 0, std::string(16, '\0'));
  EXPECT_GGUF_ERROR(name.build(), KILN_ERR_FORMAT, "at most 64");
  GgufWriter iq;
  iq.tensor("blk.0.ffn_up.weight", {256}, 16, std::string(66, '\0'));
  EXPECT_GGUF_ERROR(iq.build(), KILN_ERR_UNSUPPORTED,
                    "blk.0.ffn_up.weight has tensor type iq2_xxs (id 16)");
  GgufWriter unknown;
  unknown.tensor("x", {4}, 77, "");
  EXPECT_GGUF_ERROR(unknown.build(), KILN_ERR_UNSUPPORTED, "tensor x has tensor type type 77");
}

TEST(GgufReaderErrors, MissingFileIsNotFound) {
  try {
    GgufFile::open(test::temp_dir("gguf-missing") / "absent.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_NOT_FOUND);
  }
}

}  // namespace
}  // namespace kiln

// Safetensors reading and MappedFile: every file here is written by the test (a valid file built
// from a tensor list, then corrupted one lie at a time).
#include "formats/safetensors.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "test_support.hpp"
#include "util/mapped_file.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Header with contiguous data_offsets in list order.
json header_for(const std::vector<TensorSpec>& specs) {
  json header = json::object();
  size_t offset = 0;
  for (const auto& s : specs) {
    header[s.name] = {{"dtype", s.dtype},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + s.bytes.size()}}};
    offset += s.bytes.size();
  }
  return header;
}

std::string buffer_for(const std::vector<TensorSpec>& specs) {
  std::string buffer;
  for (const auto& s : specs) buffer += s.bytes;
  return buffer;
}

std::string length_prefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

std::string assemble(const std::string& header_text, const std::string& buffer) {
  return length_prefix(header_text.size()) + header_text + buffer;
}

std::string assemble(const json& header, const std::string& buffer) {
  return assemble(header.dump(), buffer);
}

std::string build_safetensors(const std::vector<TensorSpec>& specs) {
  return assemble(header_for(specs), buffer_for(specs));
}

fs::path write_temp(const std::string& bytes, const std::string& name = "model.safetensors") {
  const fs::path path = test::temp_dir("st") / name;
  test::write_file(path, bytes);
  return path;
}

// Runs fn, expects kiln::Error with `status` whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, kiln_status status,
                  const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message lacks \"" << p << "\": " << e.what();
    return;
  }
  ADD_FAILURE() << "no kiln::Error thrown";
}

void expect_open_error(const std::string& bytes, kiln_status status,
                       std::vector<std::string> parts) {
  const fs::path path = write_temp(bytes);
  parts.push_back(path.string());
  expect_error([&] { SafetensorsFile::open(path); }, status, parts);
}

std::vector<TensorSpec> two_tensors() {
  return {{"a", "F32", {2, 2}, bytes_of(std::vector<float>{1, 2, 3, 4})},
          {"b", "F32", {3}, bytes_of(std::vector<float>{5, 6, 7})}};
}

// IEEE 754 binary16 value from its fields, by definition (float64).
double half_value(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
  const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                         : std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  return sign ? -magnitude : magnitude;
}

std::vector<float> read_back(const TensorView& view) {
  std::vector<float> out(static_cast<size_t>(view.numel()));
  convert_to_f32(view.dtype, view.data, out.data(), out.size());
  return out;
}

// ---------------------------------------------------------------------------------------------
// MappedFile / read_text_file

TEST(MappedFile, MapsTheWholeFile) {
  const fs::path path = write_temp("hello\nworld", "text.txt");
  const auto file = MappedFile::open(path);
  ASSERT_EQ(file->size(), 11u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->data()), file->size()), "hello\nworld");
  EXPECT_EQ(read_text_file(path), "hello\nworld");
}

TEST(MappedFile, EmptyFileIsAnEmptyMapping) {
  const fs::path path = write_temp("", "empty.txt");
  EXPECT_EQ(MappedFile::open(path)->size(), 0u);
  EXPECT_EQ(read_text_file(path), "");
}

TEST(MappedFile, MissingFileIsNotFound) {
  const fs::path path = test::temp_dir("st") / "nope.bin";
  expect_error([&] { MappedFile::open(path); }, KILN_ERR_NOT_FOUND, {path.string()});
  expect_error([&] { read_text_file(path); }, KILN_ERR_NOT_FOUND, {path.string()});
}

TEST(MappedFile, DirectoryIsAnIoError) {
  const fs::path dir = test::temp_dir("st-dir");
  expect_error([&] { MappedFile::open(dir); }, KILN_ERR_IO, {dir.string(), "directory"});
  expect_error([&] { read_text_file(dir); }, KILN_ERR_IO, {dir.string()});
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile: happy path

TEST(Safetensors, ReadsF32F16Bf16ValuesBack) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0e-5f, 1024.0f, -0.0f, 7.0f};
  // Binary16 patterns: 1, -2, the smallest subnormal, 1/3 rounded, the largest finite.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x3555, 0x7BFF};
  // bfloat16 is the top half of a binary32: take floats that are exact in 8 mantissa bits.
  const std::vector<float> bf16_values = {1.5f, -0.15625f, 65536.0f, 3.0f};
  std::vector<uint16_t> bf16;
  for (float v : bf16_values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bf16.push_back(static_cast<uint16_t>(bits >> 16));
  }
  const fs::path path = write_temp(build_safetensors({{"w32", "F32", {2, 3}, bytes_of(f32)},
                                                      {"w16", "F16", {5}, bytes_of(f16)},
                                                      {"wbf", "BF16", {2, 2}, bytes_of(bf16)}}));
  const auto st = SafetensorsFile::open(path);
  ASSERT_EQ(st->tensors().size(), 3u);
  EXPECT_TRUE(st->unsupported().empty());

  const TensorView& w32 = st->tensors().at("w32");
  EXPECT_EQ(w32.dtype, DType::F32);
  EXPECT_EQ(w32.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w32.numel(), 6);
  EXPECT_EQ(w32.nbytes, 24u);
  EXPECT_EQ(w32.file, "model.safetensors");
  EXPECT_EQ(w32.name, "w32");
  EXPECT_EQ(read_back(w32), f32);

  const TensorView& w16 = st->tensors().at("w16");
  EXPECT_EQ(w16.dtype, DType::F16);
  const auto got16 = read_back(w16);
  for (size_t i = 0; i < f16.size(); ++i) EXPECT_EQ(got16[i], half_value(f16[i])) << i;

  const TensorView& wbf = st->tensors().at("wbf");
  EXPECT_EQ(wbf.dtype, DType::BF16);
  EXPECT_EQ(read_back(wbf), bf16_values);
}

TEST(Safetensors, SkipsMetadataAndAcceptsScalarsAndEmptyTensors) {
  std::vector<TensorSpec> specs = {{"scalar", "F32", {}, bytes_of(std::vector<float>{42.0f})},
                                   {"empty", "F16", {0, 4}, ""},
                                   {"after", "F32", {1}, bytes_of(std::vector<float>{-1.0f})}};
  json header = header_for(specs);
  header["__metadata__"] = {{"format", "pt"}};
  // The spec allows trailing spaces after the JSON to pad the header (alignment).
  const auto st =
      SafetensorsFile::open(write_temp(assemble(header.dump() + "    ", buffer_for(specs))));
  ASSERT_EQ(st->tensors().size(), 3u);
  EXPECT_EQ(st->tensors().count("__metadata__"), 0u);
  EXPECT_EQ(st->tensors().at("scalar").numel(), 1);
  EXPECT_EQ(read_back(st->tensors().at("scalar"))[0], 42.0f);
  EXPECT_EQ(st->tensors().at("empty").numel(), 0);
  EXPECT_EQ(read_back(st->tensors().at("after"))[0], -1.0f);
}

TEST(Safetensors, HonoursOffsetsRatherThanHeaderOrder) {
  // Buffer holds b then a; header lists them with explicit offsets.
  const std::string a = bytes_of(std::vector<float>{10, 20});
  const std::string b = bytes_of(std::vector<float>{30});
  json header = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}},
                 {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
  const auto st = SafetensorsFile::open(write_temp(assemble(header, b + a)));
  EXPECT_EQ(read_back(st->tensors().at("a")), (std::vector<float>{10, 20}));
  EXPECT_EQ(read_back(st->tensors().at("b")), (std::vector<float>{30}));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile: lies and truncation

TEST(Safetensors, RejectsFileShorterThanLengthPrefix) {
  expect_open_error("", KILN_ERR_FORMAT, {"0 bytes"});
  expect_open_error(std::string("\x05\x00\x00", 3), KILN_ERR_FORMAT, {"3 bytes"});
}

TEST(Safetensors, RejectsHeaderLengthPastEndOfFile) {
  const std::string good = build_safetensors(two_tensors());
  const std::string header = header_for(two_tensors()).dump();
  // The file ends in the middle of the header.
  expect_open_error(good.substr(0, 8 + header.size() / 2), KILN_ERR_FORMAT,
                    {"header length " + std::to_string(header.size()), "truncated"});
}

TEST(Safetensors, RejectsAbsurdHeaderLength) {
  expect_open_error(length_prefix(uint64_t{1} << 40) + "{}", KILN_ERR_FORMAT, {"100 MB"});
}

TEST(Safetensors, RejectsTruncatedDataBuffer) {
  const std::string good = build_safetensors(two_tensors());
  // Drop the last 4 bytes: tensor b now runs past the buffer.
  expect_open_error(good.substr(0, good.size() - 4), KILN_ERR_FORMAT,
                    {"tensor b", "[16, 28)", "24 bytes", "truncated"});
}

TEST(Safetensors, RejectsHeaderThatIsNotJson) {
  expect_open_error(assemble(std::string("{\"a\": [1, 2"), ""), KILN_ERR_FORMAT,
                    {"not valid JSON"});
}

TEST(Safetensors, RejectsHeaderThatIsNotAnObject) {
  expect_open_error(assemble(std::string("[1, 2]"), ""), KILN_ERR_FORMAT, {"array"});
}

TEST(Safetensors, RejectsEntryThatIsNotAnObject) {
  json header = header_for(two_tensors());
  header["a"] = 17;
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor a", "expected an object"});
}

TEST(Safetensors, RejectsMissingOrMistypedFields) {
  const std::string buffer = buffer_for(two_tensors());
  const auto with = [&](const std::function<void(json&)>& edit) {
    json header = header_for(two_tensors());
    edit(header["b"]);
    return assemble(header, buffer);
  };
  expect_open_error(with([](json& b) { b.erase("dtype"); }), KILN_ERR_FORMAT,
                    {"tensor b", "dtype"});
  expect_open_error(with([](json& b) { b["dtype"] = 4; }), KILN_ERR_FORMAT,
                    {"tensor b", "dtype", "string"});
  expect_open_error(with([](json& b) { b.erase("shape"); }), KILN_ERR_FORMAT,
                    {"tensor b", "shape"});
  expect_open_error(with([](json& b) { b["shape"] = "3"; }), KILN_ERR_FORMAT,
                    {"tensor b", "shape", "array"});
  expect_open_error(with([](json& b) { b["shape"] = {-3}; }), KILN_ERR_FORMAT,
                    {"tensor b", "shape[0]", "-3"});
  expect_open_error(with([](json& b) { b["shape"] = {3.0}; }), KILN_ERR_FORMAT,
                    {"tensor b", "shape[0]", "non-negative integer"});
  expect_open_error(with([](json& b) { b.erase("data_offsets"); }), KILN_ERR_FORMAT,
                    {"tensor b", "data_offsets"});
  expect_open_error(with([](json& b) { b["data_offsets"] = {16}; }), KILN_ERR_FORMAT,
                    {"tensor b", "data_offsets", "[begin, end]"});
  expect_open_error(with([](json& b) {
                      b["data_offsets"] = {16, "28"};
                    }),
                    KILN_ERR_FORMAT, {"tensor b", "data_offsets[1]"});
}

TEST(Safetensors, RejectsEndBeforeBegin) {
  json header = header_for(two_tensors());
  header["b"]["data_offsets"] = {28, 16};
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor b", "end before begin"});
}

TEST(Safetensors, RejectsOffsetsPastTheBuffer) {
  json header = header_for(two_tensors());
  header["b"]["data_offsets"] = {16, 40};
  header["b"]["shape"] = {6};
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor b", "[16, 40)", "28 bytes"});
}

TEST(Safetensors, RejectsByteCountThatDisagreesWithShape) {
  json header = header_for(two_tensors());
  header["a"]["shape"] = {2, 3};  // 24 bytes of F32, but offsets hold 16
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor a", "16 bytes", "[2, 3]", "needs 24"});
  header = header_for(two_tensors());
  header["b"]["dtype"] = "F16";  // 3 halfs = 6 bytes, offsets hold 12
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor b", "F16", "needs 6"});
}

TEST(Safetensors, RejectsShapeWhoseByteCountOverflows) {
  json header = header_for(two_tensors());
  header["a"]["shape"] = {uint64_t{1} << 32, uint64_t{1} << 32};  // * 4 bytes overflows 2^64
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor a", "overflows"});
}

TEST(Safetensors, RejectsOverlappingTensors) {
  json header = header_for(two_tensors());
  header["b"]["data_offsets"] = {12, 24};  // shares a's last element
  expect_open_error(assemble(header, buffer_for(two_tensors())), KILN_ERR_FORMAT,
                    {"tensor b", "overlaps tensor a"});
}

TEST(Safetensors, RejectsDuplicateTensorNames) {
  const std::string entry = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  const std::string text = R"({"x":)" + entry + R"(,"y":{"dtype":"F32","shape":[1],)" +
                           R"("data_offsets":[4,8]},"x":)" + entry + "}";
  expect_open_error(assemble(text, std::string(8, '\0')), KILN_ERR_FORMAT, {"tensor x", "twice"});
}

// ---------------------------------------------------------------------------------------------
// Unsupported dtypes: recorded, validated, and refused only when asked for.

TEST(Safetensors, UnsupportedDtypeIsRecordedNotFatal) {
  const fs::path dir = test::temp_dir("st-unsup");
  test::write_file(dir / "model.safetensors",
                   build_safetensors({{"w", "F32", {2}, bytes_of(std::vector<float>{1, 2})},
                                      {"ids", "I64", {3}, std::string(24, '\0')},
                                      {"q", "F8_E4M3", {4}, std::string(4, '\0')}}));
  const auto st = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(st->tensors().size(), 1u);
  EXPECT_EQ(st->unsupported().at("ids"), "I64");
  EXPECT_EQ(st->unsupported().at("q"), "F8_E4M3");

  const auto set = WeightSet::open_dir(dir);
  EXPECT_EQ(read_back(set->get("w")), (std::vector<float>{1, 2}));
  EXPECT_EQ(set->names(), (std::vector<std::string>{"w"}));
  expect_error([&] { set->get("ids"); }, KILN_ERR_UNSUPPORTED,
               {"tensor ids", "I64", "model.safetensors"});
  expect_error([&] { set->find("q"); }, KILN_ERR_UNSUPPORTED, {"tensor q", "F8_E4M3"});
}

TEST(Safetensors, UnsupportedDtypeStillHasItsByteCountChecked) {
  expect_open_error(build_safetensors({{"ids", "I64", {3}, std::string(16, '\0')}}),
                    KILN_ERR_FORMAT, {"tensor ids", "I64", "needs 24"});
}

// ---------------------------------------------------------------------------------------------
// WeightSet::open_dir

TEST(WeightSet, OpensSingleFile) {
  const fs::path dir = test::temp_dir("ws-single");
  test::write_file(dir / "model.safetensors", build_safetensors(two_tensors()));
  const auto set = WeightSet::open_dir(dir);
  EXPECT_EQ(set->names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(set->total_bytes(), 28u);
  EXPECT_EQ(read_back(set->get("b")), (std::vector<float>{5, 6, 7}));
  EXPECT_EQ(set->find("c"), nullptr);
  expect_error([&] { set->get("c"); }, KILN_ERR_FORMAT, {"tensor c", "model.safetensors"});
}

fs::path write_sharded_dir(const json& weight_map) {
  const fs::path dir = test::temp_dir("ws-shard");
  test::write_file(dir / "model-00001-of-00002.safetensors",
                   build_safetensors({{"a", "F32", {2}, bytes_of(std::vector<float>{1, 2})},
                                      {"b", "BF16", {1}, std::string("\x80\x3f", 2)}}));
  test::write_file(dir / "model-00002-of-00002.safetensors",
                   build_safetensors({{"c", "F32", {1}, bytes_of(std::vector<float>{9})}}));
  test::write_file(dir / "model.safetensors.index.json",
                   json{{"metadata", {{"total_size", 14}}}, {"weight_map", weight_map}}.dump());
  return dir;
}

const json kGoodWeightMap = {{"a", "model-00001-of-00002.safetensors"},
                             {"b", "model-00001-of-00002.safetensors"},
                             {"c", "model-00002-of-00002.safetensors"}};

TEST(WeightSet, OpensShardedDirectory) {
  const auto set = WeightSet::open_dir(write_sharded_dir(kGoodWeightMap));
  EXPECT_EQ(set->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(set->total_bytes(), 14u);
  EXPECT_EQ(read_back(set->get("a")), (std::vector<float>{1, 2}));
  EXPECT_EQ(read_back(set->get("b")), (std::vector<float>{1.0f}));  // bf16 0x3F80
  EXPECT_EQ(read_back(set->get("c")), (std::vector<float>{9}));
  EXPECT_EQ(set->get("c").file, "model-00002-of-00002.safetensors");
  expect_error(
      [&] { set->get("zz"); }, KILN_ERR_FORMAT,
      {"tensor zz", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST(WeightSet, MissingShardIsNotFoundNamingIt) {
  json map = kGoodWeightMap;
  map["c"] = "model-00003-of-00002.safetensors";
  const fs::path dir = write_sharded_dir(map);
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_NOT_FOUND,
               {"model-00003-of-00002.safetensors", "model.safetensors.index.json"});
}

TEST(WeightSet, ShardLackingAnAssignedTensorIsAFormatError) {
  json map = kGoodWeightMap;
  map["c"] = "model-00001-of-00002.safetensors";  // c actually lives in shard 2
  const fs::path dir = write_sharded_dir(map);
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT,
               {"tensor c", "model-00001-of-00002.safetensors", "does not hold it"});
}

TEST(WeightSet, TensorInTwoShardsIsAFormatError) {
  const fs::path dir = write_sharded_dir(kGoodWeightMap);
  test::write_file(dir / "model-00002-of-00002.safetensors",
                   build_safetensors({{"c", "F32", {1}, bytes_of(std::vector<float>{9})},
                                      {"a", "F32", {1}, bytes_of(std::vector<float>{3})}}));
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT, {"tensor a", "both"});
}

TEST(WeightSet, BadIndexIsAFormatError) {
  const fs::path dir = write_sharded_dir(kGoodWeightMap);
  const fs::path index = dir / "model.safetensors.index.json";
  test::write_file(index, "{\"weight_map\": ");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT, {index.string(), "JSON"});
  test::write_file(index, R"({"metadata": {}})");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT, {"weight_map"});
  test::write_file(index, R"({"weight_map": {"a": 3}})");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT, {"weight_map[\"a\"]"});
  test::write_file(index, R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT, {"../model-00001"});
}

TEST(WeightSet, CorruptShardNamesTheShard) {
  const fs::path dir = write_sharded_dir(kGoodWeightMap);
  test::write_file(dir / "model-00002-of-00002.safetensors", "\x01\x02");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_FORMAT,
               {"model-00002-of-00002.safetensors", "too short"});
}

TEST(WeightSet, DirectoryWithoutWeightsIsNotFound) {
  const fs::path dir = test::temp_dir("ws-empty");
  expect_error([&] { WeightSet::open_dir(dir); }, KILN_ERR_NOT_FOUND,
               {"no weights found", dir.string()});
  expect_error([&] { WeightSet::open_dir(dir / "missing"); }, KILN_ERR_NOT_FOUND,
               {(dir / "missing").string()});
}

}  // namespace
}  // namespace kiln

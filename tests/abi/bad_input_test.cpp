// Bad input through the public ABI: each failure has a specific status and message, frees what it
// took, and leaves the runtime usable (every test ends by loading a good model and generating).
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

const fs::path kGood = fixtures() / "tiny-qwen2";

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override { rt_ = make_cpu_runtime(); }
  void TearDown() override {
    // The runtime still works after whatever failed.
    auto m = load(rt_.get(), kGood);
    ASSERT_TRUE(m);
    auto s = make_session(m.get());
    int32_t ids[3] = {1, 2, 3};
    std::vector<float> logits(512);
    size_t n = 0;
    KILN_ASSERT_OK(kiln_forward(s.get(), ids, 3, KILN_LOGITS_LAST, logits.data(), logits.size(), &n));
  }

  // Loads `dir`, expects `status`, and checks the message mentions `needle`.
  void expect_load_fails(const fs::path& dir, kiln_status status, const std::string& needle) {
    kiln_model* m = reinterpret_cast<kiln_model*>(0x1);
    kiln_status st = kiln_model_load(rt_.get(), dir.string().c_str(), nullptr, &m);
    EXPECT_EQ(st, status) << kiln_status_name(st) << ": " << kiln_last_error();
    EXPECT_EQ(m, nullptr) << "out_model must be NULL after a failure";
    EXPECT_NE(std::string(kiln_last_error()).find(needle), std::string::npos)
        << "message was: " << kiln_last_error();
  }

  RuntimePtr rt_;
};

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string header_of(const std::string& file_bytes) {
  uint64_t n = 0;
  std::memcpy(&n, file_bytes.data(), 8);
  return file_bytes.substr(8, n);
}

// Rebuilds a safetensors file with a new header (padded to 8 bytes) and the old data buffer.
std::string with_header(const std::string& file_bytes, std::string header) {
  uint64_t old_n = 0;
  std::memcpy(&old_n, file_bytes.data(), 8);
  while (header.size() % 8) header.push_back(' ');
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + file_bytes.substr(8 + old_n);
}

TEST_F(BadInput, MissingDirectory) {
  expect_load_fails(fixtures() / "no-such-model", KILN_ERR_NOT_FOUND, "no-such-model");
}

TEST_F(BadInput, MissingConfig) {
  fs::path d = copy_model_dir(kGood, "noconfig");
  fs::remove(d / "config.json");
  expect_load_fails(d, KILN_ERR_NOT_FOUND, "config.json");
}

TEST_F(BadInput, MissingWeights) {
  fs::path d = copy_model_dir(kGood, "noweights");
  fs::remove(d / "model.safetensors");
  expect_load_fails(d, KILN_ERR_NOT_FOUND, "safetensors");
}

TEST_F(BadInput, UnknownArchitecture) {
  fs::path d = copy_model_dir(kGood, "arch");
  auto cfg = nlohmann::json::parse(read_file(d / "config.json"));
  cfg["architectures"] = {"MambaForCausalLM"};
  write(d / "config.json", cfg.dump());
  expect_load_fails(d, KILN_ERR_UNSUPPORTED, "MambaForCausalLM");
}

TEST_F(BadInput, ConfigThatIsNotJson) {
  fs::path d = copy_model_dir(kGood, "badjson");
  write(d / "config.json", "{\"hidden_size\": 64,");
  expect_load_fails(d, KILN_ERR_FORMAT, "config.json");
}

TEST_F(BadInput, TruncatedSafetensors) {
  fs::path d = copy_model_dir(kGood, "trunc");
  std::string bytes = read_file(d / "model.safetensors");
  write(d / "model.safetensors", bytes.substr(0, bytes.size() / 2));
  expect_load_fails(d, KILN_ERR_FORMAT, "model.safetensors");
}

TEST_F(BadInput, SafetensorsShorterThanItsHeaderLength) {
  fs::path d = copy_model_dir(kGood, "tiny");
  write(d / "model.safetensors", std::string("\x10\x00\x00\x00\x00\x00\x00\x00{}", 10));
  expect_load_fails(d, KILN_ERR_FORMAT, "model.safetensors");
}

TEST_F(BadInput, HeaderOffsetsPastTheEnd) {
  fs::path d = copy_model_dir(kGood, "offsets");
  std::string bytes = read_file(d / "model.safetensors");
  auto h = nlohmann::json::parse(header_of(bytes));
  auto& t = h["model.norm.weight"];
  uint64_t end = t["data_offsets"][1];
  t["data_offsets"] = {end + (1ull << 40), end + (1ull << 40) + 1024};
  write(d / "model.safetensors", with_header(bytes, h.dump()));
  expect_load_fails(d, KILN_ERR_FORMAT, "model.norm.weight");
}

TEST_F(BadInput, HeaderByteCountDisagreesWithShape) {
  fs::path d = copy_model_dir(kGood, "count");
  std::string bytes = read_file(d / "model.safetensors");
  auto h = nlohmann::json::parse(header_of(bytes));
  h["model.norm.weight"]["shape"] = {255};
  write(d / "model.safetensors", with_header(bytes, h.dump()));
  expect_load_fails(d, KILN_ERR_FORMAT, "model.norm.weight");
}

TEST_F(BadInput, OverlappingTensors) {
  fs::path d = copy_model_dir(kGood, "overlap");
  std::string bytes = read_file(d / "model.safetensors");
  auto h = nlohmann::json::parse(header_of(bytes));
  h["model.norm.weight"]["data_offsets"] = h["model.layers.0.input_layernorm.weight"]["data_offsets"];
  write(d / "model.safetensors", with_header(bytes, h.dump()));
  expect_load_fails(d, KILN_ERR_FORMAT, "overlap");
}

TEST_F(BadInput, AbsurdHeaderLength) {
  fs::path d = copy_model_dir(kGood, "absurd");
  std::string bytes = read_file(d / "model.safetensors");
  uint64_t n = ~0ull >> 1;
  std::memcpy(bytes.data(), &n, 8);
  write(d / "model.safetensors", bytes);
  expect_load_fails(d, KILN_ERR_FORMAT, "header");
}

TEST_F(BadInput, ShapeDisagreesWithConfig) {
  fs::path d = copy_model_dir(kGood, "shape");
  auto cfg = nlohmann::json::parse(read_file(d / "config.json"));
  cfg["intermediate_size"] = 640;
  write(d / "config.json", cfg.dump());
  expect_load_fails(d, KILN_ERR_FORMAT, "mlp");
}

TEST_F(BadInput, MissingTensor) {
  fs::path d = copy_model_dir(kGood, "missing");
  auto cfg = nlohmann::json::parse(read_file(d / "config.json"));
  cfg["num_hidden_layers"] = 3;
  cfg.erase("layer_types");
  write(d / "config.json", cfg.dump());
  expect_load_fails(d, KILN_ERR_FORMAT, "model.layers.2");
}

TEST_F(BadInput, TokenIdOutOfRange) {
  auto m = load(rt_.get(), kGood);
  auto s = make_session(m.get());
  int32_t ids[2] = {5, 512};
  size_t n = 0;
  std::vector<float> logits(512);
  EXPECT_EQ(kiln_forward(s.get(), ids, 2, KILN_LOGITS_LAST, logits.data(), logits.size(), &n),
            KILN_ERR_OUT_OF_RANGE);
  EXPECT_NE(std::string(kiln_last_error()).find("512"), std::string::npos);
  int32_t neg = -1;
  EXPECT_EQ(kiln_forward(s.get(), &neg, 1, KILN_LOGITS_NONE, nullptr, 0, &n), KILN_ERR_OUT_OF_RANGE);
  char piece[16];
  EXPECT_EQ(kiln_token_to_piece(m.get(), 100000, piece, sizeof piece, &n), KILN_ERR_OUT_OF_RANGE);
  EXPECT_EQ(kiln_detokenize(m.get(), ids, 2, 0, piece, sizeof piece, &n), KILN_ERR_OUT_OF_RANGE);
  int32_t pos = -1;
  KILN_ASSERT_OK(kiln_session_position(s.get(), &pos, nullptr));
  EXPECT_EQ(pos, 0) << "a refused forward must not touch the cache";
}

TEST_F(BadInput, NullHandlesAndBuffers) {
  size_t n = 0;
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_load(nullptr, kGood.string().c_str(), nullptr, &m), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("runtime"), std::string::npos);
  EXPECT_EQ(kiln_model_load(rt_.get(), nullptr, nullptr, &m), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_model_load(rt_.get(), kGood.string().c_str(), nullptr, nullptr),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenize(nullptr, "a", 1, 0, nullptr, 0, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_forward(nullptr, nullptr, 0, KILN_LOGITS_NONE, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_session_create(nullptr, nullptr, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_runtime_create(nullptr, nullptr), KILN_ERR_INVALID_ARGUMENT);
  auto model = load(rt_.get(), kGood);
  auto s = make_session(model.get());
  int32_t id = 1;
  EXPECT_EQ(kiln_forward(s.get(), nullptr, 3, KILN_LOGITS_NONE, nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_forward(s.get(), &id, 1, static_cast<kiln_logits_mode>(3), nullptr, 0, &n),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenize(model.get(), nullptr, 5, 0, nullptr, 0, &n), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kiln_tokenize(model.get(), "a", 1, 0x80, nullptr, 0, &n), KILN_ERR_INVALID_ARGUMENT);
  // Freeing NULL is a no-op.
  kiln_model_free(nullptr);
  kiln_session_free(nullptr);
  kiln_runtime_free(nullptr);
}

TEST_F(BadInput, BufferTooSmallReportsTheSizeAndOneRetrySucceeds) {
  auto m = load(rt_.get(), kGood);
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  size_t needed = 0;
  int32_t small[2];
  EXPECT_EQ(kiln_tokenize(m.get(), text.data(), text.size(), 0, small, 2, &needed),
            KILN_ERR_BUFFER_TOO_SMALL);
  ASSERT_GT(needed, 2u);
  std::vector<int32_t> ids(needed);
  size_t got = 0;
  KILN_ASSERT_OK(kiln_tokenize(m.get(), text.data(), text.size(), 0, ids.data(), ids.size(), &got));
  EXPECT_EQ(got, needed);

  std::string out(3, '\0');
  EXPECT_EQ(kiln_detokenize(m.get(), ids.data(), ids.size(), 0, out.data(), out.size(), &needed),
            KILN_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(needed, text.size());
  out.resize(needed);
  KILN_ASSERT_OK(kiln_detokenize(m.get(), ids.data(), ids.size(), 0, out.data(), out.size(), &got));
  EXPECT_EQ(out, text);

  auto s = make_session(m.get());
  std::vector<float> logits(10);
  EXPECT_EQ(kiln_forward(s.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, logits.data(),
                         logits.size(), &needed),
            KILN_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(needed, ids.size() * 512);
  int32_t pos = -1;
  KILN_ASSERT_OK(kiln_session_position(s.get(), &pos, nullptr));
  EXPECT_EQ(pos, 0) << "nothing is computed when the buffer is too small";
  logits.resize(needed);
  KILN_ASSERT_OK(kiln_forward(s.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, logits.data(),
                              logits.size(), &needed));
}

TEST_F(BadInput, ProgressCallbackCancelsLoading) {
  kiln_model_load_options o;
  kiln_model_load_options_default(&o, sizeof o);
  int calls = 0;
  o.progress_fn = [](float f, const char*, void* ud) -> int {
    ++*static_cast<int*>(ud);
    return f > 0.05f ? 1 : 0;
  };
  o.progress_user_data = &calls;
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_load(rt_.get(), kGood.string().c_str(), &o, &m), KILN_ERR_CANCELLED);
  EXPECT_EQ(m, nullptr);
  EXPECT_GT(calls, 1);
}

TEST_F(BadInput, ContextLongerThanTheModelSupports) {
  auto m = load(rt_.get(), kGood);
  kiln_session_options o;
  kiln_session_options_default(&o, sizeof o);
  o.context_length = 1 << 20;
  kiln_session* s = nullptr;
  EXPECT_EQ(kiln_session_create(m.get(), &o, &s), KILN_ERR_OUT_OF_RANGE);
  EXPECT_EQ(s, nullptr);
  EXPECT_NE(std::string(kiln_last_error()).find("4096"), std::string::npos) << kiln_last_error();
}

TEST_F(BadInput, InvalidSamplingOptions) {
  auto m = load(rt_.get(), kGood);
  auto s = make_session(m.get());
  kiln_sampling_options so;
  kiln_sampling_options_default(&so, sizeof so);
  so.top_p = 1.5f;
  kiln_generate_options g;
  kiln_generate_options_default(&g, sizeof g);
  g.sampling = &so;
  EXPECT_EQ(kiln_generate(s.get(), "hi", 2, &g, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("top_p"), std::string::npos);
}

}  // namespace
}  // namespace kiln_abi_test

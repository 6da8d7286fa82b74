// The ABI contract: versions, status names, struct_size handling, the log callback, and a C99
// caller (tests/abi/c_caller.c) that uses the header as C.
#include <thread>

#include "abi_util.hpp"

extern "C" int c_caller_struct_sizes(void);
extern "C" int c_caller_generate(const char* model_dir);

namespace kiln_abi_test {
namespace {

TEST(Contract, VersionsAgreeWithTheHeader) {
  EXPECT_EQ(kiln_abi_version(), static_cast<uint32_t>(KILN_ABI_VERSION));
  EXPECT_NE(std::string(kiln_version_string()).find("0.1.0"), std::string::npos);
}

TEST(Contract, StatusNamesAreStable) {
  EXPECT_STREQ(kiln_status_name(KILN_OK), "KILN_OK");
  EXPECT_STREQ(kiln_status_name(KILN_ERR_FORMAT), "KILN_ERR_FORMAT");
  EXPECT_STREQ(kiln_status_name(KILN_ERR_VERSION_MISMATCH), "KILN_ERR_VERSION_MISMATCH");
  EXPECT_EQ(static_cast<int>(KILN_ERR_INTERNAL), 14);
  EXPECT_STREQ(kiln_status_name(static_cast<kiln_status>(15)), "KILN_ERR_UNKNOWN");
}

TEST(Contract, CCallerStructSizeHandlingBothWays) { EXPECT_EQ(c_caller_struct_sizes(), 0); }

TEST(Contract, CCallerGenerates) {
  EXPECT_EQ(c_caller_generate((fixtures() / "tiny-qwen2").string().c_str()), 0);
}

TEST(Contract, EveryOptionsStructRejectsUnknownSizes) {
  kiln_session_options s;
  EXPECT_EQ(kiln_session_options_default(&s, sizeof s - 8), KILN_ERR_VERSION_MISMATCH);
  kiln_sampling_options so;
  EXPECT_EQ(kiln_sampling_options_default(&so, sizeof so + 4), KILN_ERR_VERSION_MISMATCH);
  kiln_generate_options g;
  EXPECT_EQ(kiln_generate_options_default(&g, 3), KILN_ERR_VERSION_MISMATCH);
  kiln_model_load_options l;
  EXPECT_EQ(kiln_model_load_options_default(&l, 0), KILN_ERR_VERSION_MISMATCH);
  EXPECT_EQ(kiln_model_load_options_default(nullptr, sizeof l), KILN_ERR_INVALID_ARGUMENT);
  // The message names the struct and both sizes.
  EXPECT_EQ(kiln_session_options_default(&s, 8), KILN_ERR_VERSION_MISMATCH);
  const std::string msg = kiln_last_error();
  EXPECT_NE(msg.find("kiln_session_options"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(sizeof s)), std::string::npos) << msg;
}

TEST(Contract, LastErrorIsThreadLocalAndClearedBySuccess) {
  kiln_runtime* rt = nullptr;
  EXPECT_EQ(kiln_runtime_create(nullptr, nullptr), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_STRNE(kiln_last_error(), "");
  std::string other;
  std::thread([&] { other = kiln_last_error(); }).join();
  EXPECT_EQ(other, "");
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  o.backend = KILN_BACKEND_CPU;
  ASSERT_EQ(kiln_runtime_create(&o, &rt), KILN_OK);
  EXPECT_STREQ(kiln_last_error(), "");
  kiln_runtime_free(rt);
}

struct LogCapture {
  std::vector<std::pair<kiln_log_level, std::string>> lines;
};

TEST(Contract, RuntimeLogCallbackReceivesLoadMessages) {
  LogCapture cap;
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  o.backend = KILN_BACKEND_CPU;
  o.log_level = KILN_LOG_INFO;
  o.log_user_data = &cap;
  o.log_fn = [](kiln_log_level level, const char* msg, void* ud) {
    static_cast<LogCapture*>(ud)->lines.emplace_back(level, msg);
  };
  kiln_runtime* rt = nullptr;
  ASSERT_EQ(kiln_runtime_create(&o, &rt), KILN_OK);
  RuntimePtr guard(rt);
  auto m = load(rt, fixtures() / "tiny-qwen2");
  bool saw_load = false;
  for (auto& [level, line] : cap.lines) {
    EXPECT_GE(level, KILN_LOG_INFO);
    saw_load = saw_load || line.find("Qwen2ForCausalLM") != std::string::npos;
  }
  EXPECT_TRUE(saw_load);
}

TEST(Contract, ProcessWideLogCallback) {
  LogCapture cap;
  ASSERT_EQ(kiln_set_log_callback(
                [](kiln_log_level level, const char* msg, void* ud) {
                  static_cast<LogCapture*>(ud)->lines.emplace_back(level, msg);
                },
                &cap, KILN_LOG_DEBUG),
            KILN_OK);
  {
    kiln_runtime_options o;
    kiln_runtime_options_default(&o, sizeof o);
    o.backend = KILN_BACKEND_CPU;
    o.log_level = KILN_LOG_DEBUG;
    kiln_runtime* rt = nullptr;
    ASSERT_EQ(kiln_runtime_create(&o, &rt), KILN_OK);
    kiln_runtime_free(rt);
  }
  ASSERT_EQ(kiln_set_log_callback(nullptr, nullptr, KILN_LOG_WARN), KILN_OK);
  ASSERT_FALSE(cap.lines.empty());
  EXPECT_NE(cap.lines[0].second.find("runtime created"), std::string::npos);
  EXPECT_EQ(kiln_set_log_callback(nullptr, nullptr, static_cast<kiln_log_level>(7)),
            KILN_ERR_INVALID_ARGUMENT);
}

TEST(Contract, AskingForCudaWithoutItIsAClearError) {
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  kiln_runtime* rt = nullptr;
  kiln_status expected = KILN_ERR_UNSUPPORTED;  // a build without the CUDA backend
  if (std::string(kiln_version_string()).find("cuda") != std::string::npos) {
    // A CUDA build: AUTO falls back to the CPU when there is no device, and asking for CUDA
    // explicitly then fails with the reason.
    o.backend = KILN_BACKEND_AUTO;
    ASSERT_EQ(kiln_runtime_create(&o, &rt), KILN_OK) << kiln_last_error();
    kiln_runtime_info info;
    info.struct_size = sizeof info;
    ASSERT_EQ(kiln_runtime_get_info(rt, &info), KILN_OK);
    kiln_runtime_free(rt);
    rt = nullptr;
    if (info.backend == KILN_BACKEND_CUDA) {
      GTEST_SKIP() << "a CUDA device is present: the GPU tests cover the CUDA backend";
    }
    expected = KILN_ERR_BACKEND;
  }
  o.backend = KILN_BACKEND_CUDA;
  EXPECT_EQ(kiln_runtime_create(&o, &rt), expected);
  EXPECT_EQ(rt, nullptr);
  EXPECT_NE(std::string(kiln_last_error()).find("CUDA"), std::string::npos) << kiln_last_error();
}

}  // namespace
}  // namespace kiln_abi_test

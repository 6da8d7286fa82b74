// kiln_runtime_options.tensor_parallel through the public ABI on any machine: its default, the
// errors for values no backend here can honour (kiln.h states them), and that the process stays
// usable after each refusal. The GPU side (splitting a model across devices) is
// tests/unit/cuda_tensor_parallel_test.cpp.
#include <string>

#include "abi_util.hpp"

namespace {

using namespace kiln_abi_test;

kiln_runtime_options options(kiln_backend backend, int32_t tensor_parallel) {
  kiln_runtime_options o;
  EXPECT_EQ(kiln_runtime_options_default(&o, sizeof o), KILN_OK);
  o.backend = backend;
  o.n_threads = 1;
  o.tensor_parallel = tensor_parallel;
  return o;
}

void expect_refused(const kiln_runtime_options& o, kiln_status status,
                    std::initializer_list<const char*> parts) {
  kiln_runtime* rt = reinterpret_cast<kiln_runtime*>(0x1);
  EXPECT_EQ(kiln_runtime_create(&o, &rt), status) << kiln_last_error();
  EXPECT_EQ(rt, nullptr);
  const std::string why = kiln_last_error();
  for (const char* p : parts) EXPECT_NE(why.find(p), std::string::npos) << why << " lacks " << p;
}

// The default is off, and 0 and 1 both mean off on the CPU: the model runs as without the field.
TEST(TensorParallelOption, OffByDefaultAndOneIsOff) {
  kiln_runtime_options o;
  KILN_ASSERT_OK(kiln_runtime_options_default(&o, sizeof o));
  EXPECT_EQ(o.tensor_parallel, 0);
  for (int32_t tp : {0, 1}) {
    const kiln_runtime_options cpu = options(KILN_BACKEND_CPU, tp);
    kiln_runtime* rt = nullptr;
    KILN_ASSERT_OK(kiln_runtime_create(&cpu, &rt));
    RuntimePtr runtime(rt);
    ModelPtr model = load(rt, source_dir() / "models" / "kjv-tiny");
    ASSERT_TRUE(model) << kiln_last_error();
  }
}

TEST(TensorParallelOption, NegativeIsInvalid) {
  expect_refused(options(KILN_BACKEND_CPU, -2), KILN_ERR_INVALID_ARGUMENT,
                 {"tensor_parallel is -2"});
}

TEST(TensorParallelOption, TheCpuBackendRefusesMoreThanOneRankAndStaysUsable) {
  expect_refused(options(KILN_BACKEND_CPU, 2), KILN_ERR_UNSUPPORTED,
                 {"tensor_parallel is 2", "CPU backend", "CUDA"});
  // The refusal left nothing behind: a runtime made next works.
  RuntimePtr rt = make_cpu_runtime(1);
  ASSERT_TRUE(rt);
  ModelPtr model = load(rt.get(), source_dir() / "models" / "kjv-tiny");
  EXPECT_TRUE(model) << kiln_last_error();
}

// AUTO with more ranks than CUDA devices: without CUDA (this build or this machine) the runtime
// would fall back to the CPU, which refuses; with CUDA devices, fewer than asked for is
// KILN_ERR_INVALID_ARGUMENT naming both counts. Either way a specific error, never a silent
// single-device runtime.
TEST(TensorParallelOption, MoreRanksThanDevicesIsRefused) {
  const kiln_runtime_options o = options(KILN_BACKEND_AUTO, 1024);
  kiln_runtime* rt = nullptr;
  const kiln_status s = kiln_runtime_create(&o, &rt);
  EXPECT_EQ(rt, nullptr);
  const std::string why = kiln_last_error();
  if (s == KILN_ERR_UNSUPPORTED) {
    EXPECT_NE(why.find("CPU backend"), std::string::npos) << why;
  } else {
    EXPECT_EQ(s, KILN_ERR_INVALID_ARGUMENT) << why;
    EXPECT_NE(why.find("tensor_parallel 1024"), std::string::npos) << why;
    EXPECT_NE(why.find("CUDA device(s)"), std::string::npos) << why;
  }
  RuntimePtr cpu = make_cpu_runtime(1);
  EXPECT_TRUE(cpu);
}

}  // namespace

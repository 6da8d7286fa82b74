// kiln_model_load_options.precision through the public ABI on a CPU runtime: the default is
// KILN_PRECISION_DEFAULT, values outside the enum are KILN_ERR_INVALID_ARGUMENT, BF16 (a CUDA
// precision) is KILN_ERR_UNSUPPORTED on the CPU, and F32 on the CPU is the CPU's own float32 path
// (logits within 1e-4 of Hugging Face's float32 reference). The CUDA side of the option is tested
// on the GPU in tests/unit/cuda_f32_parity_test.cpp.
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

const fs::path kModel = fixtures() / "hf" / "llama3";

class Precision : public ::testing::Test {
 protected:
  void SetUp() override { rt_ = make_cpu_runtime(); }

  kiln_status load_with(int precision, kiln_model** out) {
    kiln_model_load_options o;
    EXPECT_EQ(kiln_model_load_options_default(&o, sizeof o), KILN_OK);
    // Through memcpy: a value outside the enum is exactly what a foreign caller may store.
    static_assert(sizeof o.precision == sizeof precision);
    std::memcpy(&o.precision, &precision, sizeof precision);
    *out = reinterpret_cast<kiln_model*>(0x1);
    return kiln_model_load(rt_.get(), kModel.string().c_str(), &o, out);
  }

  RuntimePtr rt_;
};

TEST_F(Precision, DefaultOptionsAskForTheBackendDefault) {
  kiln_model_load_options o;
  std::memset(&o, 0x5A, sizeof o);
  ASSERT_EQ(kiln_model_load_options_default(&o, sizeof o), KILN_OK);
  EXPECT_EQ(o.precision, KILN_PRECISION_DEFAULT);
  EXPECT_EQ(static_cast<int>(KILN_PRECISION_DEFAULT), 0);
  EXPECT_EQ(static_cast<int>(KILN_PRECISION_BF16), 1);
  EXPECT_EQ(static_cast<int>(KILN_PRECISION_F32), 2);
}

TEST_F(Precision, ValuesOutsideTheEnumAreInvalidArguments) {
  for (int bad : {3, -1, 1000}) {
    kiln_model* m = nullptr;
    EXPECT_EQ(load_with(bad, &m), KILN_ERR_INVALID_ARGUMENT) << bad;
    EXPECT_EQ(m, nullptr);
    const std::string msg = kiln_last_error();
    EXPECT_NE(msg.find("precision is " + std::to_string(bad)), std::string::npos) << msg;
  }
}

TEST_F(Precision, Bf16IsUnsupportedOnTheCpu) {
  kiln_model* m = nullptr;
  EXPECT_EQ(load_with(KILN_PRECISION_BF16, &m), KILN_ERR_UNSUPPORTED);
  EXPECT_EQ(m, nullptr);
  const std::string msg = kiln_last_error();
  EXPECT_NE(msg.find("KILN_PRECISION_BF16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CPU"), std::string::npos) << msg;
}

TEST_F(Precision, F32OnTheCpuMatchesTransformersFloat32) {
  const auto ref = nlohmann::json::parse(read_file(kModel / "ref.json"));
  const auto ids = ref.at("ids").get<std::vector<int32_t>>();
  const std::vector<float> want = read_f32(kModel / "logits.bin");
  for (int precision : {KILN_PRECISION_DEFAULT, KILN_PRECISION_F32}) {
    kiln_model* raw = nullptr;
    ASSERT_EQ(load_with(precision, &raw), KILN_OK) << kiln_last_error();
    ModelPtr m(raw);
    auto s = make_session(m.get(), 64);
    std::vector<float> got(want.size(), NAN);
    size_t n = 0;
    KILN_ASSERT_OK(
        kiln_forward(s.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, got.data(), got.size(), &n));
    ASSERT_EQ(n, want.size());
    EXPECT_LE(rel_l2(got, want), 1e-4) << "precision " << precision;
  }
}

}  // namespace
}  // namespace kiln_abi_test

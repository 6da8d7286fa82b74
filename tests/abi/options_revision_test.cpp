// Options structs grow by appending fields, and a program built against an older kiln.h keeps
// working (kiln.h, "Options"): the library takes an older revision's struct_size, reads only that
// prefix, fills only that prefix in kiln_*_options_default, and uses the defaults for the fields
// added since. Simulated here with byte buffers of the older sizes, guarded at both ends.
#include <cstddef>
#include <cstring>

#include "abi_util.hpp"

namespace {

using namespace kiln_abi_test;

// The first revision of kiln_model_load_options ended before `precision`.
constexpr size_t kLoadOptionsV1 = offsetof(kiln_model_load_options, precision);
// The first revision of kiln_trainer_options ended before `residual_dropout`.
constexpr size_t kTrainerOptionsV1 =
    (offsetof(kiln_trainer_options, residual_dropout) + alignof(kiln_trainer_options) - 1) /
    alignof(kiln_trainer_options) * alignof(kiln_trainer_options);

// The first revision of kiln_runtime_options ended before `tensor_parallel` (padded to 8 bytes).
constexpr size_t kRuntimeOptionsV1 =
    (offsetof(kiln_runtime_options, tensor_parallel) + alignof(kiln_runtime_options) - 1) /
    alignof(kiln_runtime_options) * alignof(kiln_runtime_options);

// A caller's struct of `size` bytes followed by guard bytes the library must never touch.
template <typename T>
struct OldStruct {
  alignas(T) unsigned char bytes[sizeof(T) + 64];
  size_t size;
  explicit OldStruct(size_t n) : size(n) { std::memset(bytes, 0xA5, sizeof bytes); }
  T* get() { return reinterpret_cast<T*>(bytes); }
  bool guard_intact() const {
    for (size_t i = size; i < sizeof bytes; ++i) {
      if (bytes[i] != 0xA5) return false;
    }
    return true;
  }
};

TEST(OptionsRevisions, AnOlderModelLoadOptionsLoadsWithTheDefaultPrecision) {
  ASSERT_LT(kLoadOptionsV1, sizeof(kiln_model_load_options));
  OldStruct<kiln_model_load_options> old(kLoadOptionsV1);
  KILN_ASSERT_OK(kiln_model_load_options_default(old.get(), kLoadOptionsV1));
  EXPECT_EQ(old.get()->struct_size, kLoadOptionsV1);
  EXPECT_TRUE(old.guard_intact()) << "the default filler wrote past the caller's struct";

  RuntimePtr rt = make_cpu_runtime();
  kiln_model* m = nullptr;
  KILN_ASSERT_OK(
      kiln_model_load(rt.get(), (source_dir() / "models" / "kjv-tiny").c_str(), old.get(), &m));
  ModelPtr model(m);
  EXPECT_TRUE(old.guard_intact());

  // The same model through the current struct gives the same logits (default precision).
  kiln_model_load_options now;
  KILN_ASSERT_OK(kiln_model_load_options_default(&now, sizeof now));
  EXPECT_EQ(now.precision, KILN_PRECISION_DEFAULT);
  ModelPtr model2 = load(rt.get(), source_dir() / "models" / "kjv-tiny");
  const int32_t ids[] = {1, 300, 260, 2077};
  std::vector<float> a(4096), b(4096);
  size_t n = 0;
  SessionPtr s1 = make_session(model.get()), s2 = make_session(model2.get());
  KILN_ASSERT_OK(kiln_forward(s1.get(), ids, 4, KILN_LOGITS_LAST, a.data(), a.size(), &n));
  KILN_ASSERT_OK(kiln_forward(s2.get(), ids, 4, KILN_LOGITS_LAST, b.data(), b.size(), &n));
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(OptionsRevisions, AnOlderTrainerOptionsTrainsWithoutDropout) {
  ASSERT_LT(kTrainerOptionsV1, sizeof(kiln_trainer_options));
  RuntimePtr rt = make_cpu_runtime();
  ModelPtr model = load(rt.get(), source_dir() / "models" / "kjv-tiny");
  ASSERT_TRUE(model);

  OldStruct<kiln_trainer_options> old(kTrainerOptionsV1);
  KILN_ASSERT_OK(kiln_trainer_options_default(old.get(), kTrainerOptionsV1));
  EXPECT_TRUE(old.guard_intact());
  kiln_trainer_options now;
  KILN_ASSERT_OK(kiln_trainer_options_default(&now, sizeof now));
  EXPECT_EQ(now.residual_dropout, 0.0f);

  // One step through each: identical losses (the older caller gets residual_dropout = 0).
  const int32_t B = 2, T = 16;
  std::vector<int32_t> in(B * T), tg(B * T);
  for (int i = 0; i < B * T; ++i) in[i] = 260 + i, tg[i] = 261 + i;
  kiln_batch batch = {sizeof batch, B, T, in.data(), tg.data(), nullptr, nullptr};
  double losses[2];
  const kiln_trainer_options* opts[2] = {old.get(), &now};
  for (int k = 0; k < 2; ++k) {
    kiln_trainer* t = nullptr;
    KILN_ASSERT_OK(kiln_trainer_create(model.get(), opts[k], &t));
    kiln_train_result r{};
    r.struct_size = sizeof r;
    KILN_ASSERT_OK(kiln_train_step(t, &batch, &r));
    losses[k] = r.loss;
    kiln_trainer_free(t);
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_TRUE(old.guard_intact());
}

TEST(OptionsRevisions, AnOlderRuntimeOptionsCreatesARuntimeWithoutTensorParallelism) {
  ASSERT_LT(kRuntimeOptionsV1, sizeof(kiln_runtime_options));
  OldStruct<kiln_runtime_options> old(kRuntimeOptionsV1);
  KILN_ASSERT_OK(kiln_runtime_options_default(old.get(), kRuntimeOptionsV1));
  EXPECT_EQ(old.get()->struct_size, kRuntimeOptionsV1);
  EXPECT_TRUE(old.guard_intact()) << "the default filler wrote past the caller's struct";
  // Read past its end, the guard bytes would be tensor_parallel = 0xA5A5A5A5 (negative: refused,
  // or > 1: refused on the CPU); the library must use the default (off) instead.
  old.get()->backend = KILN_BACKEND_CPU;
  old.get()->n_threads = 1;
  kiln_runtime* rt = nullptr;
  KILN_ASSERT_OK(kiln_runtime_create(old.get(), &rt));
  RuntimePtr runtime(rt);
  EXPECT_TRUE(old.guard_intact());
  kiln_runtime_options now;
  KILN_ASSERT_OK(kiln_runtime_options_default(&now, sizeof now));
  EXPECT_EQ(now.tensor_parallel, 0);
}

TEST(OptionsRevisions, SizesNoRevisionHadAreRefused) {
  OldStruct<kiln_model_load_options> odd(kLoadOptionsV1 + 4);
  EXPECT_EQ(kiln_model_load_options_default(odd.get(), kLoadOptionsV1 + 4),
            KILN_ERR_VERSION_MISMATCH);
  EXPECT_TRUE(odd.guard_intact());
  kiln_model_load_options o;
  KILN_ASSERT_OK(kiln_model_load_options_default(&o, sizeof o));
  o.struct_size = sizeof o + 8;  // a newer header's
  RuntimePtr rt = make_cpu_runtime();
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_load(rt.get(), (source_dir() / "models" / "kjv-tiny").c_str(), &o, &m),
            KILN_ERR_VERSION_MISMATCH);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(kiln_last_error()).find("struct_size"), std::string::npos);
  // A struct that never grew still takes only its own size.
  kiln_session_options so;
  EXPECT_EQ(kiln_session_options_default(&so, sizeof so - 4), KILN_ERR_VERSION_MISMATCH);
}

}  // namespace

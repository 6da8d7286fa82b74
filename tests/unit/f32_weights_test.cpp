// F32WeightStore's transposed (Conv1D) blocks: a stored [in, out] tensor handed out as the
// [out × in] nn.Linear block it stands for, whole or as a slice of output features. The expected
// values are written here from the storage layout (stored[c][j] = 100·c + j).
#include "backend/cpu/f32_weights.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/error.hpp"

namespace kiln::cpu {
namespace {

constexpr int64_t kIn = 3, kOut = 7;

float stored_value(int64_t c, int64_t j) { return static_cast<float>(100 * c + j); }

// A [kIn, kOut] tensor over `bytes`, as F32 or BF16 (every value is an integer < 256 apart from
// the hundreds, all exact in BF16).
TensorView conv1d_tensor(std::vector<uint8_t>& bytes, DType dtype) {
  const size_t elem = dtype == DType::F32 ? 4 : 2;
  bytes.assign(static_cast<size_t>(kIn * kOut) * elem, 0);
  for (int64_t c = 0; c < kIn; ++c) {
    for (int64_t j = 0; j < kOut; ++j) {
      const float v = stored_value(c, j);
      uint8_t* dst = bytes.data() + static_cast<size_t>(c * kOut + j) * elem;
      if (dtype == DType::F32) {
        std::memcpy(dst, &v, 4);
      } else {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        const auto high = static_cast<uint16_t>(bits >> 16);
        std::memcpy(dst, &high, 2);
      }
    }
  }
  TensorView t;
  t.name = "h.0.attn.c_attn.weight";
  t.dtype = dtype;
  t.shape = {kIn, kOut};
  t.data = bytes.data();
  t.nbytes = bytes.size();
  t.file = "test-memory";
  return t;
}

TEST(F32WeightStoreTransposed, WholeAndSlicedBlocksComeOutInLinearOrientation) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    std::vector<uint8_t> bytes;
    const TensorView t = conv1d_tensor(bytes, dtype);
    F32WeightStore store(2);
    const WeightRef whole{&t, 0, kOut, kIn, true};
    const float* w = store.get(whole);
    ASSERT_NE(w, nullptr);
    for (int64_t r = 0; r < kOut; ++r) {
      for (int64_t c = 0; c < kIn; ++c) EXPECT_EQ(w[r * kIn + c], stored_value(c, r));
    }
    const WeightRef slice{&t, 2, 4, kIn, true};  // output features 2..5
    const Matrix m = store.matrix(slice);
    ASSERT_NE(m.f32, nullptr);  // transposed blocks are always materialised as float32
    EXPECT_EQ(m.bf16, nullptr);
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < kIn; ++c) EXPECT_EQ(m.f32[r * kIn + c], stored_value(c, 2 + r));
    }
    // Asked again: the same copy, counted once.
    EXPECT_EQ(store.get(whole), w);
    EXPECT_EQ(store.n_elements(), kOut * kIn + 4 * kIn);
  }
}

TEST(F32WeightStoreTransposed, BlockOutsideTheTensorIsAFormatError) {
  std::vector<uint8_t> bytes;
  const TensorView t = conv1d_tensor(bytes, DType::F32);
  F32WeightStore store(1);
  try {
    store.get(WeightRef{&t, 5, 3, kIn, true});  // columns 5..7 of 7
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("h.0.attn.c_attn.weight"), std::string::npos);
  }
  // A transposed block is not a contiguous byte range: data() refuses rather than mislead.
  const WeightRef ref{&t, 0, kOut, kIn, true};
  try {
    (void)ref.data();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INTERNAL);
  }
}

}  // namespace
}  // namespace kiln::cpu

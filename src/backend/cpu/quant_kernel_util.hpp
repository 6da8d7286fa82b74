// Helpers shared by the integer dot kernels: little-endian field loads from byte pointers (weight
// blocks sit at any alignment in the mapped file) and a branch-free float16 → float32.
#pragma once

#include <cstdint>
#include <cstring>

namespace kiln::cpu {

inline uint16_t load_u16_le(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

inline uint32_t load_u32_le(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // x86 and every target kiln builds for are little-endian
  return v;
}

// IEEE binary16 → binary32, exact for every input. The exponent and mantissa bits are moved into
// float32 position with the exponent left 112 (= 127 - 15) short, and one multiplication by 2^112
// rebias them: exact for normal and subnormal halves alike. Infinities and NaNs (exponent 31)
// instead get the all-ones float32 exponent directly.
inline float half_to_float(uint16_t h) {
  const uint32_t magnitude = static_cast<uint32_t>(h & 0x7FFFu) << 13;
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  float f;
  if ((h & 0x7C00u) == 0x7C00u) {
    const uint32_t bits = sign | 0x7F800000u | magnitude;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  std::memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;
  return (h & 0x8000u) ? -f : f;
}

inline float load_half(const uint8_t* p) { return half_to_float(load_u16_le(p)); }

}  // namespace kiln::cpu

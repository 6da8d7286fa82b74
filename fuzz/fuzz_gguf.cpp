// Fuzzes the GGUF reader (header, metadata KV, tensor infos, alignment and bounds checks) on
// arbitrary bytes through GgufFile::parse, the same code GgufFile::open runs on a mapped file.
#include <cstddef>
#include <cstdint>

#include "formats/gguf.hpp"
#include "fuzz_expect_error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const auto file = kiln::GgufFile::parse(data, size, "fuzz.gguf");
    (void)file->version();
  });
  return 0;
}

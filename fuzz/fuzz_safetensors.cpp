// Fuzzes the safetensors reader (length prefix, JSON header, dtype/shape/offset validation). The
// reader maps a path, so each input is written to an anonymous in-memory file (memfd) and opened
// through /proc/self/fd: the exact open() path a model load takes, with no disk I/O.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/safetensors.hpp"
#include "fuzz_expect_error.hpp"
#include "fuzz_memory_file.hpp"

using kiln::fuzz::MemoryFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const MemoryFile file(data, size);
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const auto st = kiln::SafetensorsFile::open(file.path());
    // Touch every view the reader vouched for: ASan flags any byte outside the mapping.
    uint8_t sum = 0;
    for (const auto& [name, view] : st->tensors()) {
      for (size_t i = 0; i < view.nbytes; ++i) sum = static_cast<uint8_t>(sum + view.data[i]);
    }
    volatile uint8_t sink = sum;
    (void)sink;
  });
  return 0;
}

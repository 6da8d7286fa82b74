// Fuzzes checkpoint loading the way kiln_checkpoint_load does it: the file is mapped, the
// flatbuffers manifest verified, every tensor's dtype/shape/offset/size checked, then the config
// parsed and the trainer rebuilt (weights and optimizer state restored). Inputs go through a memfd
// opened by its /proc path, so the real open/mmap path runs with no disk I/O.

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_expect_error.hpp"
#include "fuzz_memory_file.hpp"
#include "train/checkpoint/checkpoint.hpp"
#include "train/trainer.hpp"

using kiln::fuzz::MemoryFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const MemoryFile file(data, size);
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const auto ckpt = kiln::LoadedCheckpoint::open(file.path());
    // Touch every tensor the reader vouched for: ASan flags any byte outside the mapping.
    uint8_t sum = 0;
    for (const auto& t : ckpt->contents().tensors) {
      for (size_t i = 0; i < t.nbytes; ++i) sum = static_cast<uint8_t>(sum + t.data[i]);
    }
    volatile uint8_t sink = sum;
    (void)sink;
  });
  kiln::fuzz::expect_success_or_kiln_error(
      [&] { (void)kiln::Trainer::load_checkpoint(file.path()); });
  return 0;
}

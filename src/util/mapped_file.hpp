// MappedFile: a read-only memory mapping of a whole file (RAII; munmap on destruction).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace kiln {

class MappedFile {
 public:
  // Throws kiln::Error: KILN_ERR_NOT_FOUND (no such file), KILN_ERR_IO (a directory, unreadable,
  // mmap failure), each naming the path and the OS reason.
  static std::unique_ptr<MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) text file. Throws KILN_ERR_NOT_FOUND / KILN_ERR_IO naming the path.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace kiln

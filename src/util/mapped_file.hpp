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
  // open() for a file read once from start to end by a parser that reads whole SIMD blocks
  // (simdjson): the `padding` bytes after the file's end are readable zeros (the file's last
  // page is followed by anonymous pages where needed), and the pages are mapped up front
  // (MAP_POPULATE) — faster than reading the file into a fresh buffer, which costs a zeroed page
  // fault per 4 KiB and a copy. Same errors as open().
  static std::unique_ptr<MappedFile> open_padded(const std::filesystem::path& path, size_t padding);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  static std::unique_ptr<MappedFile> map(const std::filesystem::path& path, size_t padding,
                                         bool populate);
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;  // bytes mapped from data_ (the file, then any padding pages)
};

// Reads a whole (small) text file. Throws KILN_ERR_NOT_FOUND / KILN_ERR_IO naming the path.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace kiln

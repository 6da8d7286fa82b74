// AtomicFileWriter: replaces a file so that a crash at any moment leaves either the old file or
// the complete new one under its name, never a mix. Bytes go to `<path>.tmp.<pid>`; commit()
// fsyncs it, renames it over `<path>` (rename(2) is atomic within a file system) and fsyncs the
// directory so the rename itself survives a power loss. Destroyed without commit() (an error on
// the way), it removes the temporary file and leaves `<path>` untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace kiln {

class AtomicFileWriter {
 public:
  // Creates the temporary file. Throws kiln::Error: KILN_ERR_NOT_FOUND (the directory does not
  // exist), KILN_ERR_IO (cannot be created), naming the path and the OS reason.
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes. Throws KILN_ERR_IO naming the temporary file and the OS reason (disk full,
  // file size limit, ...).
  void write(const void* data, size_t n);
  // Appends zero bytes up to `offset` (>= position()).
  void pad_to(uint64_t offset);
  uint64_t position() const { return position_; }
  const std::filesystem::path& temp_path() const { return temp_; }

  // fsync, rename over the destination, fsync of the directory. Throws KILN_ERR_IO.
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  uint64_t position_ = 0;
  bool committed_ = false;
};

// The whole of `bytes` as the new content of `path`, through an AtomicFileWriter. Throws as the
// writer does; the temporary file is removed on failure.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace kiln

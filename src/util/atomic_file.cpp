#include "util/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

std::string os_reason(int err) { return std::strerror(err); }

fs::path directory_of(const fs::path& path) {
  const fs::path parent = path.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  temp_ = path_;
  temp_ += ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    std::error_code ec;
    if (err == ENOENT && !fs::is_directory(directory_of(path_), ec)) {
      fail(KILN_ERR_NOT_FOUND, "cannot write '" + path_.string() + "': directory '" +
                                   directory_of(path_).string() + "' does not exist");
    }
    fail(KILN_ERR_IO, "cannot create temporary file '" + temp_.string() + "' for '" +
                          path_.string() + "': " + os_reason(err));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);  // best effort: the destination is untouched either way
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      fail(KILN_ERR_IO, "writing '" + temp_.string() + "' (for '" + path_.string() +
                            "') failed at byte " + std::to_string(position_) + ": " +
                            os_reason(err));
    }
    p += w;
    n -= static_cast<size_t>(w);
    position_ += static_cast<uint64_t>(w);
  }
}

void AtomicFileWriter::pad_to(uint64_t offset) {
  if (offset < position_) {
    fail(KILN_ERR_INTERNAL, "AtomicFileWriter::pad_to(" + std::to_string(offset) +
                                ") is behind the write position " + std::to_string(position_));
  }
  static constexpr uint8_t kZeros[256] = {};
  while (position_ < offset) {
    write(kZeros, static_cast<size_t>(std::min<uint64_t>(sizeof(kZeros), offset - position_)));
  }
}

void AtomicFileWriter::commit() {
  if (::fsync(fd_) != 0) {
    const int err = errno;
    fail(KILN_ERR_IO, "fsync of '" + temp_.string() + "' failed: " + os_reason(err));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    fail(KILN_ERR_IO, "closing '" + temp_.string() + "' failed: " + os_reason(err));
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    fail(KILN_ERR_IO,
         "renaming '" + temp_.string() + "' to '" + path_.string() + "' failed: " + os_reason(err));
  }
  committed_ = true;
  const fs::path dir = directory_of(path_);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    const int err = errno;
    fail(KILN_ERR_IO, "'" + path_.string() + "' was written, but opening its directory '" +
                          dir.string() + "' to fsync the rename failed: " + os_reason(err));
  }
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0) {
    fail(KILN_ERR_IO, "'" + path_.string() + "' was written, but fsync of its directory '" +
                          dir.string() + "' failed: " + os_reason(err));
  }
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

}  // namespace kiln

#include "util/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "core/error.hpp"

namespace kiln {

namespace {
[[noreturn]] void io_error(const std::string& what, const std::filesystem::path& path, int err) {
  fail(err == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO,
       what + " " + path.string() + ": " + std::strerror(err));
}

// The process umask, read without changing it (umask(2) can only be read by setting it, which
// would race with other threads creating files). Linux 4.7+ reports it in /proc/self/status.
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0)
      return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  }
  return 022;
}

// Closes the descriptor and removes the temporary file unless released.
class TempFile {
 public:
  explicit TempFile(std::filesystem::path target) {
    std::string pattern = target.string() + ".tmp-XXXXXX";
    fd_ = ::mkstemp(pattern.data());
    if (fd_ < 0) io_error("cannot create a temporary file next to", target, errno);
    path_ = pattern;
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }
  void close_checked() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) io_error("cannot close", path_, errno);
  }
  void release() { path_.clear(); }

 private:
  int fd_ = -1;
  std::filesystem::path path_;
};
}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  TempFile temp(path);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(temp.fd(), bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) io_error("cannot write", temp.path(), errno);
    written += static_cast<size_t>(n);
  }
  // mkstemp creates the file 0600; give it the permissions an ordinary new file gets.
  if (::fchmod(temp.fd(), 0666 & ~current_umask()) != 0) {
    io_error("cannot chmod", temp.path(), errno);
  }
  if (::fsync(temp.fd()) != 0) io_error("cannot fsync", temp.path(), errno);
  temp.close_checked();
  if (::rename(temp.path().c_str(), path.c_str()) != 0) io_error("cannot rename onto", path, errno);
  temp.release();
}

}  // namespace kiln

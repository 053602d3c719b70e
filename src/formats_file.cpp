// Whole-file writers shared by every format: plain (write_file) and atomic (write_file_atomic).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "klcal/formats.hpp"

namespace klcal::formats {
namespace {

[[noreturn]] void fail_io(const std::string& name, const std::string& what) {
  throw error(errc::io_error, name + ": " + what);
}

std::string errno_text(int e) {
  return std::strerror(e);
}

// The directory holding `path` ("." for a bare file name).
std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Closes and removes the temporary unless release() was called (the rename succeeded).
class temp_file {
 public:
  temp_file(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }
  // Closes the descriptor; returns errno of a failing close, 0 on success.
  int close() noexcept {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }
  void release() noexcept { path_.clear(); }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

void write_file(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail_io(path, std::string("cannot create: ") + std::strerror(errno));
  std::size_t w = std::fwrite(bytes.data(), 1, bytes.size(), f);
  int e = errno;
  if (std::fclose(f) != 0 || w != bytes.size()) {
    fail_io(path, std::string("write failed: ") + std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  // A unique name per process and call; O_EXCL never reuses a file left by someone else.
  static std::atomic<unsigned> serial{0};
  int fd = -1;
  std::string tmp;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100)) {
      int e = errno;
      fail_io(path, "cannot create a temporary file in " + parent_dir(path) + ": " + errno_text(e));
    }
  }
  temp_file t(fd, tmp);
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(t.fd(), p, left);
    if (w < 0) {
      int e = errno;
      if (e == EINTR) continue;
      fail_io(path, "write failed: " + errno_text(e));
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::fsync(t.fd()) != 0) {
    int e = errno;
    fail_io(path, "fsync failed: " + errno_text(e));
  }
  if (int e = t.close(); e != 0) fail_io(path, "close failed: " + errno_text(e));
  if (::rename(t.path().c_str(), path.c_str()) != 0) {
    int e = errno;
    fail_io(path, "cannot rename the temporary file over it: " + errno_text(e));
  }
  t.release();
  // Make the rename itself durable. Best effort: the new file is already in place, so a
  // directory that cannot be synced (some file systems refuse) is not reported as a failure.
  int dfd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace klcal::formats

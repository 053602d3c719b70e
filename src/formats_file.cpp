// Whole-file writers shared by every format: plain (write_file) and atomic (staged_file,
// write_file_atomic).
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

staged_file::staged_file(const std::string& path, const std::string& bytes) : path_(path) {
  // A unique name per process and call; O_EXCL never reuses a file left by someone else.
  static std::atomic<unsigned> serial{0};
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temp_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
    fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100)) {
      int e = errno;
      temp_.clear();
      fail_io(path, "cannot create a temporary file in " + parent_dir(path) + ": " + errno_text(e));
    }
  }
  // From here on a failure removes the temporary (the destructor does not run for a throwing
  // constructor, so do it by hand).
  auto fail = [&](const std::string& what, int e) {
    ::close(fd);
    ::unlink(temp_.c_str());
    temp_.clear();
    fail_io(path, what + ": " + errno_text(e));
  };
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) fail("fsync failed", errno);
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(temp_.c_str());
    temp_.clear();
    fail_io(path, "close failed: " + errno_text(e));
  }
}

staged_file::~staged_file() {
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

staged_file::staged_file(staged_file&& o) noexcept
    : path_(std::move(o.path_)), temp_(std::move(o.temp_)) {
  o.temp_.clear();
}

void staged_file::commit() {
  if (temp_.empty()) fail_io(path_, "internal error: staged file committed twice");
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    fail_io(path_, "cannot rename the temporary file over it: " + errno_text(e));
  }
  temp_.clear();
  // Make the rename itself durable. Best effort: the new file is already in place, so a
  // directory that cannot be synced (some file systems refuse) is not reported as a failure.
  int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  staged_file(path, bytes).commit();
}

}  // namespace klcal::formats

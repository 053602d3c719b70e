// Whole-file writers shared by every format (cache, JSON, CSV, .npy/.npz, state files).
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "klcal/formats.hpp"

namespace klcal::formats {
namespace {

[[noreturn]] void fail_io(const std::string& name, const std::string& what) {
  throw error(errc::io_error, name + ": " + what);
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

}  // namespace klcal::formats

// Output files of the klcal tool: checked up front, staged atomically, written together.
#include "outputs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include "cli.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

[[noreturn]] void fail(const std::string& opt, const std::string& path, const std::string& what) {
  throw error(errc::io_error, opt + " " + escaped(path) + ": " + what);
}

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Writes all of `bytes` to a character device or FIFO opened without creating or truncating.
void write_stream(const std::string& opt, const std::string& path, const std::string& bytes) {
  if (path == "-") {
    std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::cout.flush();
    if (!std::cout) fail(opt, path, "write to standard output failed");
    return;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(opt, path, std::string("cannot open for writing: ") + std::strerror(errno));
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      ::close(fd);
      fail(opt, path, std::string("write failed: ") + std::strerror(e));
    }
    p += w;
    left -= static_cast<std::size_t>(w);
  }
  if (::close(fd) != 0) fail(opt, path, std::string("close failed: ") + std::strerror(errno));
}

}  // namespace

void output_set::add(const std::string& opt, const std::string& path) {
  if (path.empty()) return;
  target t;
  t.opt = opt;
  t.path = path;
  struct stat st {};
  if (path == "-") {
    if (stdout_used_) fail(opt, path, "standard output is already used by another output");
    stdout_used_ = true;
    t.stream = true;
  } else if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail(opt, path, "is a directory");
    if (S_ISSOCK(st.st_mode) || S_ISBLK(st.st_mode)) {
      fail(opt, path, "is a socket or block device, not a file klcal can write");
    }
    t.stream = S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode);
    if (!t.stream && !force_) fail(opt, path, "file exists (use --force to overwrite)");
    t.id = file_id{st.st_dev, st.st_ino};
  } else {
    const std::string dir = parent_of(path);
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      fail(opt, path, "directory " + escaped(dir) + " does not exist");
    }
    t.id = file_id{st.st_dev, st.st_ino};
    t.leaf = path.substr(path.find_last_of('/') + 1);  // npos + 1 == 0: the whole name
  }
  if (!t.stream && ::access(parent_of(path).c_str(), W_OK) != 0) {
    fail(opt, path, "directory " + escaped(parent_of(path)) + " is not writable");
  }
  for (const auto& o : targets_) {
    const bool same =
        o.path == path || (path != "-" && o.path != "-" && o.id == t.id && o.leaf == t.leaf);
    if (same) {
      fail(opt, path,
           "is also the output of " + o.opt + " " + escaped(o.path) +
               "; give each output its own file");
    }
  }
  targets_.push_back(std::move(t));
}

void output_set::refuse_inputs(const std::vector<file_id>& inputs) const {
  for (const auto& t : targets_) {
    if (t.path == "-" || !t.leaf.empty()) continue;  // a new name cannot be an input
    for (const auto& in : inputs) {
      if (in == t.id) fail(t.opt, t.path, "is one of the input files; it would be overwritten");
    }
  }
}

void output_set::set(const std::string& path, std::string bytes) {
  for (auto& t : targets_) {
    if (t.path == path) {
      t.bytes = std::move(bytes);
      t.has_content = true;
      return;
    }
  }
  throw std::logic_error("output " + path + " was not registered");
}

void output_set::write_all() {
  std::vector<formats::staged_file> staged;
  for (auto& t : targets_) {
    if (t.has_content && !t.stream) {
      try {
        staged.emplace_back(t.path, t.bytes);
      } catch (const error& e) {
        throw error(errc::io_error, t.opt + " " + escaped(e.what()) + "; no output was changed");
      }
    }
  }
  for (auto& t : targets_) {
    if (t.has_content && t.stream) write_stream(t.opt, t.path, t.bytes);
  }
  for (auto& f : staged) f.commit();
}

void warn_cache_name(const std::string& name) {
  if (name.find(':') == std::string::npos) return;
  warn("tensor name '" + name +
       "' contains ':'; ONNX Runtime's TensorRT provider reads a cache line up to the first ':' "
       "as the name and would misread this entry (docs/cli.md, TensorRT interop)");
}

std::vector<tensor_result> renamed(const std::vector<tensor_result>& in, const name_map& names) {
  std::vector<tensor_result> out;
  for (const auto& t : in) {
    for (const auto& n : names.targets(t.name)) {
      out.push_back(t);
      out.back().name = n;
    }
  }
  return out;
}

void warn_zero_scale(const tensor_result& t, progress_bar* bar) {
  std::string which;
  for (std::size_t k = 0; k < t.results.size(); ++k) {
    if (t.results[k].scale == 0.0f) {
      which += std::string(which.empty() ? "" : ", ") + method_name(t.opts[k].meth);
    }
  }
  if (which.empty()) return;
  std::string why;
  if (t.stats.finite_count == 0) {
    why = "has no finite values (" + std::to_string(t.stats.nan_count) + " NaN, " +
          std::to_string(t.stats.inf_count) + " Inf)";
  } else if (t.stats.max_abs == 0.0f) {
    why = "is all zero";
  } else {
    why = "has max |x| = " + fmt_g(t.stats.max_abs) + " (too small for the histogram range)";
  }
  if (bar) bar->finish();
  warn("tensor '" + t.name + "' " + why + ": scale 0 (" + which +
       "); a reader of the cache would quantize all of it to 0");
}

}  // namespace klcal::cli

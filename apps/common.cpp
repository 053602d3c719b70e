// Input discovery and small helpers of the klcal tool.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>

#include "cli.hpp"

namespace klcal::cli {

void warn(const std::string& msg) {
  std::cerr << "klcal: warning: " << msg << "\n";
}

const char* method_name(method m) {
  switch (m) {
    case method::entropy: return "entropy";
    case method::max: return "max";
    case method::percentile: return "percentile";
    case method::mse: return "mse";
  }
  return "?";
}

const char* rules_name(rule_set r) {
  return r == rule_set::mxnet ? "mxnet" : "tensorrt";
}

const char* range_name(range_policy p) {
  switch (p) {
    case range_policy::fixed: return "fixed";
    case range_policy::two_pass: return "two-pass";
    case range_policy::streaming: return "streaming";
  }
  return "?";
}

std::string fmt_g(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

void check_output(const std::string& path, bool force, const std::string& opt) {
  if (path.empty()) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw error(errc::io_error, opt + " " + path + ": is a directory");
    if (!force) {
      throw error(errc::io_error, opt + " " + path + ": file exists (use --force to overwrite)");
    }
  }
  auto slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw error(errc::io_error, opt + " " + path + ": directory " + dir + " does not exist");
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    throw error(errc::io_error, opt + " " + path + ": directory " + dir + " is not writable");
  }
}

bool path_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string base_name(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

void add_file(const std::string& path, std::vector<tensor_group>& groups,
              std::map<std::string, std::size_t>& index) {
  auto add = [&](const std::string& name, tensor_source src) {
    auto it = index.find(name);
    if (it == index.end()) {
      index.emplace(name, groups.size());
      groups.push_back(tensor_group{name, {std::move(src)}});
    } else {
      groups[it->second].sources.push_back(std::move(src));
    }
  };
  if (ends_with(path, ".npy")) {
    std::string b = base_name(path);
    add(b.substr(0, b.size() - 4), tensor_source{path, ""});
  } else if (ends_with(path, ".npz")) {
    formats::npz_archive a(formats::open_file(path));
    std::size_t used = 0;
    for (const auto& m : a.members()) {
      if (!ends_with(m.file_name, ".npy")) {
        warn(path + ": member '" + m.file_name + "' is not a .npy, skipped");
        continue;
      }
      add(formats::npz_archive::tensor_name(m), tensor_source{path, m.file_name, m});
      ++used;
    }
    if (used == 0) warn(path + ": archive contains no .npy members");
  } else {
    throw error(errc::io_error, path + ": not a .npy or .npz file (unknown extension)");
  }
}

}  // namespace

formats::npy_reader tensor_source::open(std::size_t chunk_bytes) const {
  if (member.empty()) return formats::open_npy(file, chunk_bytes);
  // The directory was read once by collect_inputs; a large archive is not parsed per open.
  formats::npz_archive a(formats::open_file(file), {entry});
  return a.open_npy(entry, chunk_bytes);
}

std::vector<tensor_group> collect_inputs(const std::vector<std::string>& inputs) {
  std::vector<tensor_group> groups;
  std::map<std::string, std::size_t> index;
  for (const auto& in : inputs) {
    struct stat st {};
    if (::stat(in.c_str(), &st) != 0)
      throw error(errc::io_error, in + ": no such file or directory");
    if (S_ISDIR(st.st_mode)) {
      DIR* d = ::opendir(in.c_str());
      if (!d) throw error(errc::io_error, in + ": cannot read directory");
      std::vector<std::string> files;
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (ends_with(n, ".npy") || ends_with(n, ".npz")) {
          std::string p = in + (ends_with(in, "/") ? "" : "/") + n;
          struct stat fs {};
          if (::stat(p.c_str(), &fs) == 0 && S_ISREG(fs.st_mode)) files.push_back(p);
        }
      }
      ::closedir(d);
      if (files.empty())
        throw error(errc::io_error, in + ": directory contains no .npy or .npz files");
      std::sort(files.begin(), files.end());  // byte order: the same on every platform
      for (const auto& f : files) add_file(f, groups, index);
    } else {
      add_file(in, groups, index);
    }
  }
  return groups;
}

}  // namespace klcal::cli

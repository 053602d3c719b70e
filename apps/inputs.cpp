// Input discovery and validation of the klcal tool (files, archive members, tensor names, order).
#include "inputs.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "cli.hpp"

namespace klcal::cli {
namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string base_name(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void fail_io(const std::string& what) {
  throw error(errc::io_error, what);
}

class collector {
 public:
  collector(const input_options& o, std::vector<file_id>* files) : opts_(o), files_(files) {}

  void input(const std::string& in) {
    struct stat st {};
    if (::stat(in.c_str(), &st) != 0) fail_io(escaped(in) + ": no such file or directory");
    if (S_ISDIR(st.st_mode)) {
      if (directory(in, st) == 0) {
        fail_io(escaped(in) + ": directory contains no .npy or .npz files" +
                (opts_.recursive ? "" : " (--recursive descends into subdirectories)"));
      }
    } else {
      file(in, st);
    }
  }

  std::vector<tensor_group> take() { return std::move(groups_); }

 private:
  // Adds every tensor file of directory `dir`; returns how many were found.
  std::size_t directory(const std::string& dir, const struct stat& st) {
    if (!dirs_.insert(file_id{st.st_dev, st.st_ino}).second) {
      fail_io(escaped(dir) + ": directory visited twice (given twice, or a symbolic link loop)");
    }
    DIR* d = ::opendir(dir.c_str());
    if (!d) fail_io(escaped(dir) + ": cannot read directory");
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end(), natural_less);
    std::size_t found = 0;
    for (const auto& n : names) {
      std::string p = dir + (ends_with(dir, "/") ? "" : "/") + n;
      const bool tensor_file = ends_with(n, ".npy") || ends_with(n, ".npz");
      struct stat fs {};
      if (!tensor_file && !opts_.recursive) continue;
      if (::stat(p.c_str(), &fs) != 0) {
        if (tensor_file) fail_io(escaped(p) + ": cannot stat (dangling symbolic link?)");
        continue;
      }
      if (S_ISDIR(fs.st_mode)) {
        if (opts_.recursive) found += directory(p, fs);
      } else if (tensor_file) {
        file(p, fs);
        ++found;
      }
    }
    return found;
  }

  void file(const std::string& path, const struct stat& st) {
    if (!S_ISREG(st.st_mode)) {
      fail_io(escaped(path) + ": is " + kind_of(st.st_mode) +
              ", expected a regular .npy or .npz file (not opened)");
    }
    file_id id{st.st_dev, st.st_ino};
    auto seen = seen_.find(id);
    if (seen != seen_.end()) {
      fail_io(escaped(path) + ": given twice (the same file as " + escaped(seen->second) +
              "); its values would be counted twice");
    }
    seen_.emplace(id, path);
    if (files_) files_->push_back(id);
    if (ends_with(path, ".npy")) {
      std::string b = base_name(path);
      std::string name = b.substr(0, b.size() - 4);
      check_tensor_name(name, "file " + escaped(path));
      add(name, tensor_source{path, "", {}, opts_.void2});
    } else if (ends_with(path, ".npz")) {
      formats::npz_archive a(formats::open_file(path));
      std::set<std::string> members;
      std::size_t used = 0;
      for (const auto& m : a.members()) {
        if (!members.insert(m.file_name).second) {
          throw error(errc::format_error, escaped(path) + ": member '" + escaped(m.file_name) +
                                              "' appears twice in the archive");
        }
      }
      for (const auto& m : a.members()) {
        if (!ends_with(m.file_name, ".npy")) {
          warn(path + ": member '" + m.file_name + "' is not a .npy, skipped");
          continue;
        }
        std::string name = formats::npz_archive::tensor_name(m);
        check_tensor_name(name, escaped(path) + " member '" + escaped(m.file_name) + "'");
        add(name, tensor_source{path, m.file_name, m, opts_.void2});
        ++used;
      }
      if (used == 0) warn(path + ": archive contains no .npy members");
    } else {
      fail_io(escaped(path) + ": not a .npy or .npz file (unknown extension)");
    }
  }

  void add(const std::string& name, tensor_source src) {
    auto it = index_.find(name);
    if (it == index_.end()) {
      index_.emplace(name, groups_.size());
      groups_.push_back(tensor_group{name, {std::move(src)}});
    } else {
      groups_[it->second].sources.push_back(std::move(src));
    }
  }

  const input_options& opts_;
  std::vector<file_id>* files_;
  std::vector<tensor_group> groups_;
  std::map<std::string, std::size_t> index_;
  std::map<file_id, std::string> seen_;
  std::set<file_id> dirs_;
};

}  // namespace

formats::npy_reader tensor_source::open(std::size_t chunk_bytes) const {
  if (member.empty()) return formats::open_npy(file, chunk_bytes, void2);
  // The directory was read once by collect_inputs; a large archive is not parsed per open.
  formats::npz_archive a(formats::open_file(file), {entry});
  return a.open_npy(entry, chunk_bytes, void2);
}

std::vector<tensor_group> collect_inputs(const std::vector<std::string>& inputs,
                                         const input_options& opts, std::vector<file_id>* files) {
  collector c(opts, files);
  for (const auto& in : inputs) c.input(in);
  return c.take();
}

std::string escaped(const std::string& s) {
  std::string o;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      o += ch;
    } else if (c == '\n') {
      o += "\\n";
    } else if (c == '\r') {
      o += "\\r";
    } else if (c == '\t') {
      o += "\\t";
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      o += b;
    }
  }
  return o;
}

void check_tensor_name(const std::string& name, const std::string& origin) {
  if (name.empty()) throw error(errc::format_error, origin + ": empty tensor name");
  for (char ch : name) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      throw error(errc::format_error, origin + ": tensor name '" + escaped(name) +
                                          "' contains a control character; rename it");
    }
  }
}

bool natural_less(const std::string& a, const std::string& b) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      std::size_t i0 = i, j0 = j;
      while (i0 < a.size() && a[i0] == '0') ++i0;  // leading zeros do not change the number
      while (j0 < b.size() && b[j0] == '0') ++j0;
      std::size_t i1 = i0, j1 = j0;
      while (i1 < a.size() && digit(a[i1])) ++i1;
      while (j1 < b.size() && digit(b[j1])) ++j1;
      if (i1 - i0 != j1 - j0) return i1 - i0 < j1 - j0;  // fewer digits: smaller number
      int c = a.compare(i0, i1 - i0, b, j0, j1 - j0);
      if (c != 0) return c < 0;
      i = i1;
      j = j1;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  if ((i < a.size()) != (j < b.size())) return j < b.size();  // a prefix of the other first
  return a < b;                                               // equal up to leading zeros
}

file_id file_id_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_io(escaped(path) + ": no such file or directory");
  return file_id{st.st_dev, st.st_ino};
}

std::string read_text_file(const std::string& path) {
  auto src = formats::open_file(path);
  std::string s(static_cast<std::size_t>(src->size()), '\0');
  if (!s.empty() && src->read_at(0, s.data(), s.size()) != s.size()) {
    throw error(errc::io_error, path + ": short read");
  }
  return s;
}

name_map::name_map(const std::string& path) : path_(path) {
  using kind = formats::json_value::kind;
  const std::string where = "--names " + escaped(path);
  std::string text;
  try {
    text = read_text_file(path);
  } catch (const error& e) {
    throw error(e.code(), "--names " + std::string(e.what()));
  }
  auto doc = formats::parse_json(text, where);
  if (doc.type != kind::object) {
    throw error(errc::format_error, where +
                                        ": expected a JSON object {\"dump name\": \"name\" or "
                                        "[\"name\", ...]}");
  }
  for (const auto& [key, v] : doc.obj) {
    const std::string at = where + ": '" + escaped(key) + "'";
    if (map_.count(key)) throw error(errc::format_error, at + " appears twice");
    std::vector<std::string> names;
    if (v.type == kind::string) {
      names.push_back(v.str);
    } else if (v.type == kind::array && !v.arr.empty()) {
      for (const auto& e : v.arr) {
        if (e.type != kind::string) {
          throw error(errc::format_error, at + ": expected a string or an array of strings");
        }
        names.push_back(e.str);
      }
    } else {
      throw error(errc::format_error, at + ": expected a string or a non-empty array of strings");
    }
    for (const auto& n : names) check_tensor_name(n, at);
    map_.emplace(key, std::move(names));
  }
}

void name_map::check(const std::vector<tensor_group>& groups) const {
  const std::string where = "--names " + escaped(path_);
  std::set<std::string> dumps;
  for (const auto& g : groups) dumps.insert(g.name);
  for (const auto& kv : map_) {
    if (!dumps.count(kv.first)) {
      throw error(errc::format_error,
                  where + ": '" + escaped(kv.first) + "' is not a tensor of the inputs");
    }
  }
  std::map<std::string, std::string> owner;  // output name -> dump name
  for (const auto& g : groups) {
    for (const auto& t : targets(g.name)) {
      auto [it, fresh] = owner.emplace(t, g.name);
      if (!fresh) {
        throw error(errc::format_error, where + ": tensors '" + escaped(it->second) + "' and '" +
                                            escaped(g.name) + "' would both be called '" +
                                            escaped(t) + "'");
      }
    }
  }
}

std::vector<std::string> name_map::targets(const std::string& dump) const {
  auto it = map_.find(dump);
  return it == map_.end() ? std::vector<std::string>{dump} : it->second;
}

}  // namespace klcal::cli

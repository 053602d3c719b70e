// .npy streaming reader and serializer, plus the file/memory byte sources the readers build on.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "klcal/formats.hpp"

namespace klcal::formats {
namespace {

[[noreturn]] void fail_format(const std::string& name, const std::string& what) {
  throw error(errc::format_error, name + ": " + what);
}
[[noreturn]] void fail_io(const std::string& name, const std::string& what) {
  throw error(errc::io_error, name + ": " + what);
}

class file_source final : public byte_source {
 public:
  file_source(std::FILE* f, std::uint64_t size, std::string name)
      : f_(f), size_(size), name_(std::move(name)) {}
  ~file_source() override {
    unmap();
    std::fclose(f_);
  }
  file_source(const file_source&) = delete;
  file_source& operator=(const file_source&) = delete;
  std::uint64_t size() const noexcept override { return size_; }
  const std::string& name() const noexcept override { return name_; }
  std::size_t read_at(std::uint64_t offset, void* dst, std::size_t n) override {
    if (offset >= size_ || n == 0) return 0;
    n = static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - offset));
    // Sequential reads (the common case) skip the seek so that stdio's buffer is not dropped.
    if (offset != pos_) {
      if (fseeko(f_, static_cast<off_t>(offset), SEEK_SET) != 0) {
        fail_io(name_, std::string("seek failed: ") + std::strerror(errno));
      }
    }
    std::size_t got = std::fread(dst, 1, n, f_);
    if (got < n && std::ferror(f_)) {
      int e = errno;
      std::clearerr(f_);
      pos_ = std::numeric_limits<std::uint64_t>::max();
      fail_io(name_, std::string("read failed: ") + std::strerror(e));
    }
    pos_ = offset + got;
    return got;
  }
  // Maps [offset, offset + n) read-only (one window at a time: the previous one is unmapped, so
  // resident memory stays bounded by the window). MAP_POPULATE maps the page-cache pages in one
  // call instead of one fault per page. Any failure falls back to read_at (nullptr).
  const void* view_at(std::uint64_t offset, std::size_t n) override {
    unmap();
    if (n == 0 || offset > size_ || size_ - offset < n) return nullptr;
    static const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    const std::uint64_t base = offset / page * page;
    const std::size_t len = static_cast<std::size_t>(offset - base) + n;
    void* p = mmap(nullptr, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fileno(f_),
                   static_cast<off_t>(base));
    if (p == MAP_FAILED) return nullptr;
    (void)madvise(p, len, MADV_SEQUENTIAL);
    map_ = p;
    map_len_ = len;
    return static_cast<const unsigned char*>(p) + (offset - base);
  }

 private:
  void unmap() noexcept {
    if (map_ != nullptr) munmap(map_, map_len_);
    map_ = nullptr;
    map_len_ = 0;
  }
  void* map_ = nullptr;
  std::size_t map_len_ = 0;
  std::FILE* f_;
  std::uint64_t size_;
  std::string name_;
  std::uint64_t pos_ = 0;
};

class mem_source final : public byte_source {
 public:
  mem_source(const void* d, std::size_t n, std::string name)
      : d_(static_cast<const unsigned char*>(d)), n_(n), name_(std::move(name)) {}
  std::uint64_t size() const noexcept override { return n_; }
  const std::string& name() const noexcept override { return name_; }
  std::size_t read_at(std::uint64_t offset, void* dst, std::size_t n) override {
    if (offset >= n_) return 0;
    n = static_cast<std::size_t>(std::min<std::uint64_t>(n, n_ - offset));
    if (n) std::memcpy(dst, d_ + offset, n);
    return n;
  }
  const void* view_at(std::uint64_t offset, std::size_t n) override {
    if (offset > n_ || n_ - offset < n) return nullptr;
    return d_ + offset;
  }

 private:
  const unsigned char* d_;
  std::size_t n_;
  std::string name_;
};

class range_stream_impl final : public byte_stream {
 public:
  range_stream_impl(std::shared_ptr<byte_source> s, std::uint64_t b, std::uint64_t len)
      : src_(std::move(s)), pos_(b), end_(b + len) {}
  std::size_t read(void* dst, std::size_t n) override {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, end_ - pos_));
    std::size_t got = 0;
    auto* out = static_cast<unsigned char*>(dst);
    while (got < want) {
      std::size_t r = src_->read_at(pos_, out + got, want - got);
      if (r == 0) break;
      got += r;
      pos_ += r;
    }
    return got;
  }
  const void* view(std::size_t n) override {
    if (end_ - pos_ < n) return nullptr;
    const void* p = src_->view_at(pos_, n);
    if (p != nullptr) pos_ += n;
    return p;
  }

 private:
  std::shared_ptr<byte_source> src_;
  std::uint64_t pos_, end_;
};

// Reads exactly n bytes or reports truncation of what `what` describes.
void read_exact(byte_stream& in, void* dst, std::size_t n, const std::string& name,
                const char* what) {
  std::size_t got = in.read(dst, n);
  if (got != n) {
    fail_format(name, std::string("truncated ") + what + " (expected " + std::to_string(n) +
                          " bytes, got " + std::to_string(got) + ")");
  }
}

// ---- tiny parser for the Python dict literal of a .npy header -------------------------------

struct py_value {
  enum class kind { str, boolean, integer, tuple, list, other } k = kind::other;
  std::string s;
  bool b = false;
  std::int64_t i = 0;
  std::vector<py_value> items;
};

class header_parser {
 public:
  header_parser(const std::string& text, const std::string& name) : t_(text), name_(name) {}

  std::vector<std::pair<std::string, py_value>> parse_dict() {
    skip_ws();
    expect('{');
    std::vector<std::pair<std::string, py_value>> out;
    skip_ws();
    while (peek() != '}') {
      py_value key = parse_value(0);
      if (key.k != py_value::kind::str) bad("dictionary key is not a string");
      skip_ws();
      expect(':');
      py_value v = parse_value(0);
      for (auto& kv : out) {
        if (kv.first == key.s) bad("duplicate key '" + key.s + "'");
      }
      out.emplace_back(key.s, std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++p_;
        skip_ws();
      } else if (peek() != '}') {
        bad("expected ',' or '}'");
      }
    }
    ++p_;
    skip_ws();
    if (p_ != t_.size()) bad("unexpected text after the dictionary");
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    fail_format(name_, "malformed .npy header: " + what + " at offset " + std::to_string(p_) +
                           " of the header dictionary");
  }
  char peek() const { return p_ < t_.size() ? t_[p_] : '\0'; }
  void skip_ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r'))
      ++p_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++p_;
  }
  py_value parse_value(int depth) {
    if (depth > 8) bad("nesting too deep");
    skip_ws();
    py_value v;
    char c = peek();
    if (c == '\'' || c == '"') {
      ++p_;
      v.k = py_value::kind::str;
      while (peek() != c) {
        if (p_ >= t_.size()) bad("unterminated string");
        if (t_[p_] == '\\') bad("escape sequences are not supported in header strings");
        v.s += t_[p_++];
      }
      ++p_;
    } else if (c == '(' || c == '[') {
      char close = c == '(' ? ')' : ']';
      v.k = c == '(' ? py_value::kind::tuple : py_value::kind::list;
      ++p_;
      skip_ws();
      while (peek() != close) {
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') {
          ++p_;
          skip_ws();
        } else if (peek() != close) {
          bad(std::string("expected ',' or '") + close + "'");
        }
      }
      ++p_;
    } else if (c >= '0' && c <= '9') {
      v.k = py_value::kind::integer;
      while (peek() >= '0' && peek() <= '9') {
        int d = peek() - '0';
        if (v.i > (std::numeric_limits<std::int64_t>::max() - d) / 10) bad("integer too large");
        v.i = v.i * 10 + d;
        ++p_;
      }
      if (peek() == 'L') ++p_;  // Python 2 long literal written by old NumPy
    } else if (t_.compare(p_, 4, "True") == 0) {
      v.k = py_value::kind::boolean;
      v.b = true;
      p_ += 4;
    } else if (t_.compare(p_, 5, "False") == 0) {
      v.k = py_value::kind::boolean;
      p_ += 5;
    } else {
      bad("unexpected character");
    }
    return v;
  }

  const std::string& t_;
  const std::string& name_;
  std::size_t p_ = 0;
};

std::uint32_t load_le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}

}  // namespace

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return S_ISREG(mode) ? "a regular file" : "not a regular file";
}

}  // namespace

std::shared_ptr<byte_source> open_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    fail_io(path, std::string("cannot open: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    fail_io(path, std::string("is ") + file_kind(st.st_mode) + ", expected a regular file");
  // O_NONBLOCK: should the path be swapped for a FIFO after the stat, open() must not wait for
  // a writer; fstat below then refuses it without reading a byte.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail_io(path, std::string("cannot open: ") + std::strerror(errno));
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_io(path, "is not a regular file");
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    ::close(fd);
    fail_io(path, std::string("cannot open: ") + std::strerror(errno));
  }
  std::FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    ::close(fd);
    fail_io(path, std::string("cannot open: ") + std::strerror(errno));
  }
  return std::make_shared<file_source>(f, static_cast<std::uint64_t>(st.st_size), path);
}

std::shared_ptr<byte_source> memory_source(const void* data, std::size_t n, std::string name) {
  return std::make_shared<mem_source>(data, n, std::move(name));
}

std::unique_ptr<byte_stream> range_stream(std::shared_ptr<byte_source> src, std::uint64_t begin,
                                          std::uint64_t length) {
  return std::make_unique<range_stream_impl>(std::move(src), begin, length);
}

npy_header parse_npy_header(byte_stream& in, const std::string& name, npy_void2 void2) {
  unsigned char pre[10];
  std::size_t got = in.read(pre, 8);
  if (got < 6 || std::memcmp(pre, "\x93NUMPY", 6) != 0) {
    fail_format(name, "not a .npy file (missing the \\x93NUMPY magic)");
  }
  if (got < 8) fail_format(name, "truncated .npy header (no version)");
  npy_header h;
  h.version_major = pre[6];
  h.version_minor = pre[7];
  if (!((h.version_major == 1 || h.version_major == 2 || h.version_major == 3) &&
        h.version_minor == 0)) {
    fail_format(name, "unsupported .npy format version " + std::to_string(h.version_major) + "." +
                          std::to_string(h.version_minor) + " (supported: 1.0, 2.0, 3.0)");
  }
  std::uint64_t hlen = 0;
  if (h.version_major == 1) {
    read_exact(in, pre + 8, 2, name, ".npy header length");
    hlen = std::uint64_t(pre[8]) | (std::uint64_t(pre[9]) << 8);
    h.data_offset = 10 + hlen;
  } else {
    unsigned char l[4];
    read_exact(in, l, 4, name, ".npy header length");
    hlen = load_le32(l);
    h.data_offset = 12 + hlen;
  }
  // NumPy never writes more than a few hundred bytes; the bound keeps hostile lengths cheap.
  if (hlen > (std::uint64_t{1} << 20)) {
    fail_format(name,
                "malformed .npy header: header length " + std::to_string(hlen) + " exceeds 1 MiB");
  }
  std::string text(static_cast<std::size_t>(hlen), '\0');
  if (hlen) read_exact(in, text.data(), text.size(), name, ".npy header");
  for (char c : text) {
    if (c == '\0') fail_format(name, "malformed .npy header: NUL byte in the header");
  }
  auto dict = header_parser(text, name).parse_dict();
  const py_value* descr = nullptr;
  const py_value* fortran = nullptr;
  const py_value* shape = nullptr;
  for (auto& kv : dict) {
    if (kv.first == "descr")
      descr = &kv.second;
    else if (kv.first == "fortran_order")
      fortran = &kv.second;
    else if (kv.first == "shape")
      shape = &kv.second;
    else
      fail_format(name, "malformed .npy header: unexpected key '" + kv.first + "'");
  }
  if (!descr || !fortran || !shape) {
    fail_format(name, "malformed .npy header: missing key '" +
                          std::string(!descr     ? "descr"
                                      : !fortran ? "fortran_order"
                                                 : "shape") +
                          "'");
  }
  if (descr->k != py_value::kind::str) {
    fail_format(name,
                "unsupported dtype: structured or object arrays are not supported "
                "(supported: '<f4', '<f2', '<f8')");
  }
  const std::string& d = descr->s;
  if (d == "<f4")
    h.stored = npy_dtype::f4;
  else if (d == "<f2")
    h.stored = npy_dtype::f2;
  else if (d == "<f8")
    h.stored = npy_dtype::f8;
  else if ((d == "<V2" || d == "|V2") && void2 == npy_void2::bf16)
    h.stored = npy_dtype::bf16;
  else if (d == "<V2" || d == "|V2")
    fail_format(name, "2-byte void dtype '" + d +
                          "' (how NumPy stores bfloat16, but not only that); if these are bf16 "
                          "values, say so with --void2 bf16");
  else if (d == ">f4" || d == ">f2" || d == ">f8")
    fail_format(name,
                "big-endian dtype '" + d +
                    "' is not supported; convert with arr.astype(arr.dtype.newbyteorder('<'))");
  else
    fail_format(name, "unsupported dtype '" + d + "' (supported: '<f4', '<f2', '<f8')");
  if (fortran->k != py_value::kind::boolean) {
    fail_format(name, "malformed .npy header: 'fortran_order' is not True or False");
  }
  h.fortran_order = fortran->b;
  if (shape->k != py_value::kind::tuple) {
    fail_format(name, "malformed .npy header: 'shape' is not a tuple");
  }
  h.count = 1;
  int big_dims = 0;
  bool overflow = false;
  for (auto& it : shape->items) {
    if (it.k != py_value::kind::integer) {
      fail_format(name, "malformed .npy header: shape entry is not a non-negative integer");
    }
    h.shape.push_back(it.i);
    if (it.i > 1) ++big_dims;
  }
  // Overflow is judged after the product of all dims: a zero dim makes any size valid.
  bool zero = false;
  for (auto s : h.shape) zero = zero || s == 0;
  if (zero) {
    h.count = 0;
  } else {
    for (auto s : h.shape) {
      if (h.count > std::numeric_limits<std::int64_t>::max() / 8 / s)
        overflow = true;
      else
        h.count *= s;
    }
  }
  if (overflow) fail_format(name, "shape/size mismatch: the shape's element count overflows");
  if (h.fortran_order && big_dims > 1) {
    fail_format(name,
                "Fortran-order arrays with more than one dimension > 1 are not supported "
                "(save with np.ascontiguousarray)");
  }
  return h;
}

npy_reader::npy_reader(std::unique_ptr<byte_stream> in, std::string name, std::int64_t payload_size,
                       std::size_t chunk_bytes, npy_void2 void2)
    : in_(std::move(in)), name_(std::move(name)) {
  header_ = parse_npy_header(*in_, name_, void2);
  std::uint64_t isz = header_.itemsize();
  if (payload_size >= 0) {
    std::uint64_t expect = header_.data_offset + std::uint64_t(header_.count) * isz;
    if (std::uint64_t(payload_size) != expect) {
      std::string shape = "(";
      for (auto s : header_.shape) shape += std::to_string(s) + ",";
      shape += ")";
      fail_format(name_, "shape/size mismatch: shape " + shape + " needs " +
                             std::to_string(expect) + " bytes but the data has " +
                             std::to_string(payload_size) +
                             (std::uint64_t(payload_size) < expect ? " (truncated)" : ""));
    }
  }
  remaining_ = header_.count;
  chunk_elems_ = std::max<std::size_t>(1, chunk_bytes / isz);
  if (header_.stored == npy_dtype::f8) converted_.resize(chunk_elems_);
}

bool npy_reader::next(chunk& out) {
  out = chunk{};
  out.type = header_.delivered();
  if (done_) return false;
  if (remaining_ == 0) {
    // Anything after the last element means the header lies about the shape.
    unsigned char extra;
    if (in_->read(&extra, 1) != 0) {
      fail_format(name_, "shape/size mismatch: trailing bytes after the " +
                             std::to_string(header_.count) + " elements of the shape");
    }
    done_ = true;
    return false;
  }
  std::size_t isz = header_.itemsize();
  std::size_t n = static_cast<std::size_t>(
      std::min<std::int64_t>(remaining_, static_cast<std::int64_t>(chunk_elems_)));
  // Zero-copy where the stream allows it (a mapped file, a memory buffer), else a copy.
  // The copy buffer is allocated on first use; a view whose address is not a multiple of the
  // element size (a header length that is not) is copied too, so chunks are always aligned.
  const void* src = in_->view(n * isz);
  std::size_t got = n * isz;
  if (src == nullptr || reinterpret_cast<std::uintptr_t>(src) % isz != 0) {
    if (raw_.empty()) raw_.resize((chunk_elems_ * isz + 7) / 8);
    if (src != nullptr) {
      std::memcpy(raw_.data(), src, n * isz);
    } else {
      got = in_->read(raw_.data(), n * isz);
    }
    src = raw_.data();
  }
  if (got != n * isz) {
    std::uint64_t have = bytes_read_ + got;
    fail_format(name_, "truncated data: expected " +
                           std::to_string(std::uint64_t(header_.count) * isz) +
                           " bytes of elements, got " + std::to_string(have));
  }
  bytes_read_ += got;
  remaining_ -= static_cast<std::int64_t>(n);
  out.n = static_cast<std::int64_t>(n);
  if (header_.stored == npy_dtype::f8) {
    // IEEE conversion rounds to nearest even in the default rounding mode. memcpy: a view
    // need not be 8-byte aligned.
    const auto* bytes = static_cast<const unsigned char*>(src);
    for (std::size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, bytes + i * 8, 8);
      converted_[i] = static_cast<float>(d);
    }
    out.data = converted_.data();
  } else {
    out.data = src;
  }
  return true;
}

npy_reader open_npy(const std::string& path, std::size_t chunk_bytes, npy_void2 void2) {
  auto src = open_file(path);
  std::uint64_t size = src->size();
  return npy_reader(range_stream(src, 0, size), path, static_cast<std::int64_t>(size), chunk_bytes,
                    void2);
}

std::vector<float> read_all_f32(npy_reader& r) {
  std::vector<float> out;
  chunk c;
  while (r.next(c)) {
    if (c.type == dtype::f32) {
      const float* p = static_cast<const float*>(c.data);
      out.insert(out.end(), p, p + c.n);
    } else if (c.type == dtype::bf16) {
      const auto* p = static_cast<const std::uint16_t*>(c.data);
      for (std::int64_t i = 0; i < c.n; ++i) {
        std::uint32_t bits = std::uint32_t(p[i]) << 16;  // bf16 is the top half of an fp32
        float f;
        std::memcpy(&f, &bits, 4);
        out.push_back(f);
      }
    } else {
      const auto* p = static_cast<const std::uint16_t*>(c.data);
      for (std::int64_t i = 0; i < c.n; ++i) {
        // Exact half -> float widening (normal, subnormal, inf, nan).
        std::uint32_t h = p[i];
        std::uint32_t sign = (h & 0x8000u) << 16;
        std::uint32_t exp = (h >> 10) & 0x1f;
        std::uint32_t man = h & 0x3ff;
        std::uint32_t bits;
        if (exp == 0x1f) {
          bits = sign | 0x7f800000u | (man << 13);
        } else if (exp != 0) {
          bits = sign | ((exp + 112) << 23) | (man << 13);
        } else if (man == 0) {
          bits = sign;
        } else {
          int e = -1;
          do {
            ++e;
            man <<= 1;
          } while ((man & 0x400) == 0);
          bits = sign | ((112 - e) << 23) | ((man & 0x3ff) << 13);
        }
        float f;
        std::memcpy(&f, &bits, 4);
        out.push_back(f);
      }
    }
  }
  return out;
}

std::string npy_bytes(const void* data, npy_dtype stored, const std::vector<std::int64_t>& shape) {
  std::string dict = "{'descr': '";
  dict += stored == npy_dtype::f2     ? "<f2"
          : stored == npy_dtype::f8   ? "<f8"
          : stored == npy_dtype::bf16 ? "<V2"
                                      : "<f4";
  dict += "', 'fortran_order': False, 'shape': (";
  std::int64_t count = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
    count *= shape[i];
  }
  dict += "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary, as NumPy does.
  std::size_t total = 10 + dict.size() + 1;
  std::size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  if (dict.size() > 65535) throw error(errc::invalid_option, "npy_bytes: shape too long");
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  std::size_t isz = stored == npy_dtype::f2 || stored == npy_dtype::bf16 ? 2
                    : stored == npy_dtype::f8                            ? 8
                                                                         : 4;
  out.append(static_cast<const char*>(data), static_cast<std::size_t>(count) * isz);
  return out;
}

}  // namespace klcal::formats

// .npz (zip) archives: central directory with zip64, stored and deflate members streamed via zlib.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "klcal/formats.hpp"

namespace klcal::formats {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw error(errc::format_error, name + ": " + what);
}

std::uint16_t le16(const unsigned char* p) {
  return std::uint16_t(p[0] | (p[1] << 8));
}
std::uint32_t le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
std::uint64_t le64(const unsigned char* p) {
  return std::uint64_t(le32(p)) | (std::uint64_t(le32(p + 4)) << 32);
}

void read_exact_at(byte_source& s, std::uint64_t off, void* dst, std::size_t n, const char* what) {
  if (off > s.size() || s.size() - off < n || s.read_at(off, dst, n) != n) {
    fail(s.name(), std::string("truncated zip archive: cannot read the ") + what + " at offset " +
                       std::to_string(off));
  }
}

constexpr std::uint32_t sig_local = 0x04034b50;
constexpr std::uint32_t sig_central = 0x02014b50;
constexpr std::uint32_t sig_eocd = 0x06054b50;
constexpr std::uint32_t sig_eocd64 = 0x06064b50;
constexpr std::uint32_t sig_locator64 = 0x07064b50;

// Inflates raw deflate data from a compressed range, checking size and CRC-32 at the end.
class inflate_stream final : public byte_stream {
 public:
  inflate_stream(std::unique_ptr<byte_stream> in, std::string name, std::uint64_t expect_size,
                 std::uint32_t expect_crc)
      : in_(std::move(in)), name_(std::move(name)), expect_(expect_size), crc_expect_(expect_crc) {
    std::memset(&z_, 0, sizeof z_);
    if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) {
      throw error(errc::out_of_memory, name_ + ": zlib inflateInit2 failed");
    }
    buf_.resize(std::size_t{256} * 1024);
  }
  ~inflate_stream() override { inflateEnd(&z_); }
  inflate_stream(const inflate_stream&) = delete;
  inflate_stream& operator=(const inflate_stream&) = delete;

  std::size_t read(void* dst, std::size_t n) override {
    auto* out = static_cast<unsigned char*>(dst);
    std::size_t produced = 0;
    while (produced < n && !finished_) {
      if (z_.avail_in == 0 && !in_eof_) {
        std::size_t got = in_->read(buf_.data(), buf_.size());
        if (got == 0) in_eof_ = true;
        z_.next_in = buf_.data();
        z_.avail_in = static_cast<uInt>(got);
      }
      std::size_t want = std::min<std::size_t>(n - produced, 1u << 30);
      z_.next_out = out + produced;
      z_.avail_out = static_cast<uInt>(want);
      int rc = inflate(&z_, Z_NO_FLUSH);
      std::size_t made = want - z_.avail_out;
      crc_ = crc32_z(crc_, out + produced, made);
      produced += made;
      total_ += made;
      if (rc == Z_STREAM_END) {
        finished_ = true;
        if (total_ != expect_) {
          fail(name_, "deflate data has " + std::to_string(total_) +
                          " bytes, the zip directory says " + std::to_string(expect_));
        }
        if (crc_ != crc_expect_) fail(name_, "CRC-32 mismatch in deflate data (corrupt archive)");
      } else if (rc == Z_BUF_ERROR && made == 0 && z_.avail_in == 0 && in_eof_) {
        fail(name_, "truncated deflate data");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        fail(name_,
             std::string("corrupt deflate data (zlib: ") + (z_.msg ? z_.msg : "error") + ")");
      }
      if (total_ > expect_) {
        fail(name_,
             "deflate data is longer than the zip directory's size " + std::to_string(expect_));
      }
    }
    return produced;
  }

 private:
  std::unique_ptr<byte_stream> in_;
  std::string name_;
  std::uint64_t expect_;
  std::uint32_t crc_expect_;
  z_stream z_;
  std::vector<unsigned char> buf_;
  bool in_eof_ = false;
  bool finished_ = false;
  std::uint64_t total_ = 0;
  uLong crc_ = 0;
};

void put16(std::string& s, std::uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}
void put32(std::string& s, std::uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

}  // namespace

npz_archive::npz_archive(std::shared_ptr<byte_source> src) : src_(std::move(src)) {
  byte_source& s = *src_;
  const std::uint64_t size = s.size();
  if (size < 22) fail(s.name(), "not a zip archive (too short for an end-of-central-directory)");
  // The end record is 22 bytes plus a comment of at most 65535 bytes: search backwards.
  std::uint64_t tail_len = std::min<std::uint64_t>(size, 22 + 65535);
  std::vector<unsigned char> tail(static_cast<std::size_t>(tail_len));
  read_exact_at(s, size - tail_len, tail.data(), tail.size(), "end of archive");
  std::int64_t at = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail_len) - 22; i >= 0; --i) {
    if (le32(&tail[i]) == sig_eocd) {
      at = i;
      break;
    }
  }
  if (at < 0) fail(s.name(), "not a zip archive (no end-of-central-directory record)");
  const unsigned char* e = &tail[static_cast<std::size_t>(at)];
  std::uint64_t eocd_off = size - tail_len + static_cast<std::uint64_t>(at);
  if (le16(e + 4) != 0 || le16(e + 6) != 0)
    fail(s.name(), "multi-disk zip archives are not supported");
  std::uint64_t entries = le16(e + 10);
  std::uint64_t cd_size = le32(e + 12);
  std::uint64_t cd_off = le32(e + 16);
  if (entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
    if (eocd_off < 20) fail(s.name(), "zip64 archive without a zip64 locator");
    unsigned char loc[20];
    read_exact_at(s, eocd_off - 20, loc, 20, "zip64 locator");
    if (le32(loc) != sig_locator64) fail(s.name(), "zip64 archive without a zip64 locator");
    std::uint64_t rec_off = le64(loc + 8);
    unsigned char rec[56];
    read_exact_at(s, rec_off, rec, 56, "zip64 end record");
    if (le32(rec) != sig_eocd64) fail(s.name(), "bad zip64 end-of-central-directory signature");
    entries = le64(rec + 32);
    cd_size = le64(rec + 40);
    cd_off = le64(rec + 48);
  }
  if (cd_off > size || cd_size > size - cd_off) {
    fail(s.name(), "central directory lies outside the file (truncated archive?)");
  }
  // 46 bytes is the smallest directory entry: bounds the count before reserving.
  if (entries > cd_size / 46) fail(s.name(), "central directory entry count exceeds its size");
  std::vector<unsigned char> cd(static_cast<std::size_t>(cd_size));
  read_exact_at(s, cd_off, cd.data(), cd.size(), "central directory");
  std::size_t p = 0;
  for (std::uint64_t k = 0; k < entries; ++k) {
    if (cd.size() - p < 46 || le32(&cd[p]) != sig_central) {
      fail(s.name(), "malformed central directory entry " + std::to_string(k));
    }
    const unsigned char* h = &cd[p];
    zip_member m;
    m.flags = le16(h + 8);
    m.method = le16(h + 10);
    m.crc32 = le32(h + 16);
    m.compressed_size = le32(h + 20);
    m.uncompressed_size = le32(h + 24);
    std::size_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
    m.local_header_offset = le32(h + 42);
    if (cd.size() - p - 46 < name_len + extra_len + comment_len) {
      fail(s.name(), "malformed central directory entry " + std::to_string(k) + " (overruns)");
    }
    m.file_name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    // zip64 extra field: the 64-bit values appear only for fields saturated at 0xffffffff.
    const unsigned char* x = h + 46 + name_len;
    std::size_t xp = 0;
    while (xp + 4 <= extra_len) {
      std::uint16_t id = le16(x + xp), len = le16(x + xp + 2);
      if (xp + 4 + len > extra_len) break;
      if (id == 0x0001) {
        std::size_t q = xp + 4, qend = q + len;
        auto take = [&](std::uint64_t& field) {
          if (field == 0xffffffffu) {
            if (q + 8 > qend) fail(s.name(), "malformed zip64 extra field of " + m.file_name);
            field = le64(x + q);
            q += 8;
          }
        };
        take(m.uncompressed_size);
        take(m.compressed_size);
        take(m.local_header_offset);
      }
      xp += 4 + len;
    }
    members_.push_back(std::move(m));
    p += 46 + name_len + extra_len + comment_len;
  }
}

std::string npz_archive::tensor_name(const zip_member& m) {
  const std::string& n = m.file_name;
  if (n.size() >= 4 && n.compare(n.size() - 4, 4, ".npy") == 0) return n.substr(0, n.size() - 4);
  return n;
}

std::unique_ptr<byte_stream> npz_archive::open(const zip_member& m) const {
  const std::string where = src_->name() + ":" + m.file_name;
  if (m.flags & 1u) fail(where, "encrypted zip members are not supported");
  if (m.method != 0 && m.method != 8) {
    fail(where, "compression method " + std::to_string(m.method) +
                    " is not supported (only stored and deflate)");
  }
  unsigned char lh[30];
  read_exact_at(*src_, m.local_header_offset, lh, 30, "local file header");
  if (le32(lh) != sig_local) fail(where, "bad local file header signature");
  std::uint64_t data_off = m.local_header_offset + 30 + le16(lh + 26) + le16(lh + 28);
  if (data_off > src_->size() || m.compressed_size > src_->size() - data_off) {
    fail(where, "member data lies outside the file (truncated archive)");
  }
  if (m.method == 0 && m.compressed_size != m.uncompressed_size) {
    fail(where, "stored member with different compressed and uncompressed sizes");
  }
  auto raw = range_stream(src_, data_off, m.compressed_size);
  if (m.method == 0) return raw;
  return std::make_unique<inflate_stream>(std::move(raw), where, m.uncompressed_size, m.crc32);
}

npy_reader npz_archive::open_npy(const zip_member& m, std::size_t chunk_bytes,
                                 npy_void2 void2) const {
  if (m.uncompressed_size > std::uint64_t(std::numeric_limits<std::int64_t>::max())) {
    fail(src_->name() + ":" + m.file_name, "member too large");
  }
  return npy_reader(open(m), src_->name() + ":" + m.file_name,
                    static_cast<std::int64_t>(m.uncompressed_size), chunk_bytes, void2);
}

std::string npz_bytes(const std::vector<npz_entry>& entries, bool deflate) {
  std::string out, cd;
  for (const auto& e : entries) {
    std::string data;
    if (deflate) {
      z_stream z;
      std::memset(&z, 0, sizeof z);
      if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
          Z_OK) {
        throw error(errc::out_of_memory, "npz_bytes: deflateInit2 failed");
      }
      data.resize(deflateBound(&z, static_cast<uLong>(e.bytes.size())));
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(e.bytes.data()));
      z.avail_in = static_cast<uInt>(e.bytes.size());
      z.next_out = reinterpret_cast<Bytef*>(data.data());
      z.avail_out = static_cast<uInt>(data.size());
      int rc = ::deflate(&z, Z_FINISH);
      data.resize(z.total_out);
      deflateEnd(&z);
      if (rc != Z_STREAM_END) throw error(errc::format_error, "npz_bytes: deflate failed");
    } else {
      data = e.bytes;
    }
    if (out.size() > 0xffffffffu - 64 || e.bytes.size() > 0xffffffffu) {
      throw error(errc::invalid_option, "npz_bytes: archives above 4 GiB are not supported");
    }
    std::uint32_t crc = static_cast<std::uint32_t>(
        crc32_z(0, reinterpret_cast<const Bytef*>(e.bytes.data()), e.bytes.size()));
    std::uint32_t offset = static_cast<std::uint32_t>(out.size());
    std::uint16_t method = deflate ? 8 : 0;
    // Local header.
    put32(out, sig_local);
    put16(out, 20);
    put16(out, 0);
    put16(out, method);
    put16(out, 0);
    put16(out, 0x21);  // 1980-01-01: fixed so that output is reproducible
    put32(out, crc);
    put32(out, static_cast<std::uint32_t>(data.size()));
    put32(out, static_cast<std::uint32_t>(e.bytes.size()));
    put16(out, static_cast<std::uint32_t>(e.file_name.size()));
    put16(out, 0);
    out += e.file_name;
    out += data;
    // Central directory entry.
    put32(cd, sig_central);
    put16(cd, 20);
    put16(cd, 20);
    put16(cd, 0);
    put16(cd, method);
    put16(cd, 0);
    put16(cd, 0x21);
    put32(cd, crc);
    put32(cd, static_cast<std::uint32_t>(data.size()));
    put32(cd, static_cast<std::uint32_t>(e.bytes.size()));
    put16(cd, static_cast<std::uint32_t>(e.file_name.size()));
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, offset);
    cd += e.file_name;
  }
  std::uint32_t cd_off = static_cast<std::uint32_t>(out.size());
  out += cd;
  put32(out, sig_eocd);
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<std::uint32_t>(entries.size()));
  put16(out, static_cast<std::uint32_t>(entries.size()));
  put32(out, static_cast<std::uint32_t>(cd.size()));
  put32(out, cd_off);
  put16(out, 0);
  return out;
}

}  // namespace klcal::formats

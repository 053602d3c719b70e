// TensorRT calibration cache: writer and lenient reader (docs/numerics.md section 7).
#include <cstdio>
#include <cstring>

#include "klcal/formats.hpp"

namespace klcal::formats {

std::string scale_hex(float scale) {
  std::uint32_t bits;
  std::memcpy(&bits, &scale, 4);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x", static_cast<unsigned>(bits));
  return buf;
}

std::string format_cache(const calibration_cache& c) {
  std::string out = "TRT-" + c.version + "-" + c.algorithm + "\n";
  for (const auto& e : c.entries) out += e.name + ": " + scale_hex(e.scale) + "\n";
  return out;
}

calibration_cache parse_cache(const std::string& text, const std::string& name) {
  calibration_cache c;
  c.entries.clear();
  std::size_t pos = 0;
  std::size_t line_no = 0;
  bool have_header = false;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = name + ":" + std::to_string(line_no) + ": ";
    if (!have_header) {
      // TRT-<digits>-<tag>; the tag is free text (TensorRT matches it to its calibrator class).
      std::size_t d = 4;
      while (d < line.size() && line[d] >= '0' && line[d] <= '9') ++d;
      if (line.compare(0, 4, "TRT-") != 0 || d == 4 || d >= line.size() || line[d] != '-' ||
          d + 1 == line.size()) {
        throw error(errc::format_error,
                    where + "expected a header 'TRT-<version>-<algorithm>', got '" + line + "'");
      }
      c.version = line.substr(4, d - 4);
      c.algorithm = line.substr(d + 1);
      have_header = true;
      continue;
    }
    std::size_t sep = line.rfind(": ");
    if (sep == std::string::npos) {
      throw error(errc::format_error, where + "expected '<name>: <hex>', got '" + line + "'");
    }
    std::string hex = line.substr(sep + 2);
    while (!hex.empty() && (hex.back() == ' ' || hex.back() == '\t')) hex.pop_back();
    if (hex.empty() || hex.size() > 8 ||
        hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      throw error(errc::format_error,
                  where + "scale '" + hex + "' is not an fp32 bit pattern (1 to 8 hex digits)");
    }
    std::uint32_t bits = static_cast<std::uint32_t>(std::stoul(hex, nullptr, 16));
    cache_entry e;
    e.name = line.substr(0, sep);
    std::memcpy(&e.scale, &bits, 4);
    c.entries.push_back(std::move(e));
  }
  if (!have_header) throw error(errc::format_error, name + ": empty calibration cache (no header)");
  return c;
}

}  // namespace klcal::formats

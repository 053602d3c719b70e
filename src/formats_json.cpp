// Minimal JSON: escaping and number formatting for the writers, a small recursive-descent reader.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "klcal/formats.hpp"

namespace klcal::formats {
namespace {

class json_parser {
 public:
  json_parser(const std::string& t, const std::string& name) : t_(t), name_(name) {}

  json_value document() {
    json_value v = value(0);
    ws();
    if (p_ != t_.size()) bad("unexpected text after the value");
    return v;
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    throw error(errc::format_error,
                name_ + ": invalid JSON at byte " + std::to_string(p_) + ": " + what);
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r'))
      ++p_;
  }
  bool lit(const char* s) {
    std::size_t n = std::char_traits<char>::length(s);
    if (t_.compare(p_, n, s) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  unsigned hex4() {
    if (t_.size() - p_ < 4) bad("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = t_[p_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= unsigned(c - 'A' + 10);
      else
        bad("bad hex digit in \\u escape");
    }
    return v;
  }
  std::string string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ >= t_.size()) bad("unterminated string");
      char c = t_[p_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) bad("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= t_.size()) bad("unterminated escape");
      char e = t_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00 && t_.compare(p_, 2, "\\u") == 0) {
            p_ += 2;
            unsigned lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) bad("invalid surrogate pair");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          utf8(out, cp);
          break;
        }
        default: bad("unknown escape");
      }
    }
  }
  json_value value(int depth) {
    if (depth > 256) bad("nesting deeper than 256");
    ws();
    json_value v;
    if (p_ >= t_.size()) bad("unexpected end of input");
    char c = t_[p_];
    if (c == '{') {
      ++p_;
      v.type = json_value::kind::object;
      ws();
      if (p_ < t_.size() && t_[p_] == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        ws();
        if (p_ >= t_.size() || t_[p_] != '"') bad("expected a string key");
        std::string k = string();
        ws();
        if (p_ >= t_.size() || t_[p_] != ':') bad("expected ':'");
        ++p_;
        json_value m = value(depth + 1);
        v.obj.emplace_back(std::move(k), std::move(m));
        ws();
        if (p_ < t_.size() && t_[p_] == ',') {
          ++p_;
        } else if (p_ < t_.size() && t_[p_] == '}') {
          ++p_;
          return v;
        } else {
          bad("expected ',' or '}'");
        }
      }
    }
    if (c == '[') {
      ++p_;
      v.type = json_value::kind::array;
      ws();
      if (p_ < t_.size() && t_[p_] == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        v.arr.push_back(value(depth + 1));
        ws();
        if (p_ < t_.size() && t_[p_] == ',') {
          ++p_;
        } else if (p_ < t_.size() && t_[p_] == ']') {
          ++p_;
          return v;
        } else {
          bad("expected ',' or ']'");
        }
      }
    }
    if (c == '"') {
      v.type = json_value::kind::string;
      v.str = string();
      return v;
    }
    if (lit("null")) return v;
    if (lit("true")) {
      v.type = json_value::kind::boolean;
      v.b = true;
      return v;
    }
    if (lit("false")) {
      v.type = json_value::kind::boolean;
      return v;
    }
    // Number: validate the RFC 8259 grammar, then convert with strtod (C locale assumed).
    std::size_t s = p_;
    if (t_[p_] == '-') ++p_;
    auto digits = [&] {
      std::size_t d = p_;
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      return p_ - d;
    };
    if (p_ < t_.size() && t_[p_] == '0')
      ++p_;
    else if (digits() == 0)
      bad("unexpected character");
    if (p_ < t_.size() && t_[p_] == '.') {
      ++p_;
      if (digits() == 0) bad("digit expected after '.'");
    }
    if (p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
      ++p_;
      if (p_ < t_.size() && (t_[p_] == '+' || t_[p_] == '-')) ++p_;
      if (digits() == 0) bad("digit expected in exponent");
    }
    v.type = json_value::kind::number;
    v.num = std::strtod(t_.substr(s, p_ - s).c_str(), nullptr);
    return v;
  }

  const std::string& t_;
  const std::string& name_;
  std::size_t p_ = 0;
};

}  // namespace

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;  // UTF-8 passes through unchanged
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

const json_value* json_value::find(const std::string& key) const noexcept {
  if (type != kind::object) return nullptr;
  for (const auto& kv : obj) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

json_value parse_json(const std::string& text, const std::string& name) {
  return json_parser(text, name).document();
}

}  // namespace klcal::formats

// `klcal check`: recomputes stored scales with the brute-force reference and reports disagreements.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "args.hpp"
#include "cli.hpp"
#include "klcal/reference.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

const char* k_check_help = R"(usage: klcal check (--cache FILE | --json FILE) [options] INPUT...

Recomputes every tensor of the cache or JSON with the brute-force reference (klcal::reference)
and compares the stored fp32 scale bit for bit. JSON files written by `klcal calibrate --json`
record the method and its parameters; a TensorRT cache does not, so it is checked with the
options below (defaults: entropy, tensorrt rules, 2048 bins, two-pass range).

  --method M       entropy|max|percentile|mse (cache only)
  --rules R        tensorrt|mxnet (cache only)
  --bins N         (cache only; default 2048, 8001 for mxnet)
  --range R        two-pass|streaming (cache only)
  --percentile P   (cache only)
  --quiet, -q      print only disagreements

Exit status 0 when every scale agrees, 1 when one differs or a tensor is missing, 3 when one
cannot be recomputed (its parameters do not fit; named on stderr, the others still checked).
)";

struct expectation {
  std::string name;
  float scale = 0.0f;
  search_options opts{};
  std::int32_t bins = 2048;
  bool streaming = false;
};

// The fp32 bit pattern: "same scale" means the same bits (+0 != -0, NaN payloads count).
std::uint32_t fp32_bits(float f) {
  std::uint32_t b = 0;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

std::string read_text(const std::string& path) {
  auto src = formats::open_file(path);
  std::string s(static_cast<std::size_t>(src->size()), '\0');
  if (!s.empty() && src->read_at(0, s.data(), s.size()) != s.size()) {
    throw error(errc::io_error, path + ": short read");
  }
  return s;
}

method parse_method(const std::string& v, const std::string& where) {
  if (v == "entropy") return method::entropy;
  if (v == "max") return method::max;
  if (v == "percentile") return method::percentile;
  if (v == "mse") return method::mse;
  throw error(errc::format_error, where + ": unknown method '" + v + "'");
}

std::vector<expectation> from_json(const std::string& path) {
  auto doc = formats::parse_json(read_text(path), path);
  const auto* tensors = doc.find("tensors");
  if (!tensors || tensors->type != formats::json_value::kind::object) {
    throw error(errc::format_error, path + ": no \"tensors\" object");
  }
  std::vector<expectation> out;
  // One expectation per tensor and method: the "methods" object holds every method of the run
  // (each with its scale and params); files without it have only the first method's fields.
  struct node {
    std::string tensor;
    const formats::json_value* v;
    std::string method;  // the key in "methods"; "" for the first method's fields
  };
  std::vector<node> nodes;
  for (const auto& kv : tensors->obj) {
    const auto* ms = kv.second.find("methods");
    if (ms && ms->type == formats::json_value::kind::object && !ms->obj.empty()) {
      for (const auto& m : ms->obj) nodes.push_back({kv.first, &m.second, m.first});
    } else {
      nodes.push_back({kv.first, &kv.second, ""});
    }
  }
  for (const auto& nd : nodes) {
    const std::string where =
        path + ": tensor '" + nd.tensor + "'" + (nd.method.empty() ? "" : " method " + nd.method);
    expectation e;
    e.name = nd.tensor;
    const auto& t = *nd.v;
    auto num = [&](const formats::json_value* obj, const char* key, double dflt) {
      const auto* v = obj ? obj->find(key) : nullptr;
      if (!v) return dflt;
      if (v->type != formats::json_value::kind::number) {
        throw error(errc::format_error, where + ": \"" + key + "\" is not a number");
      }
      return v->num;
    };
    const auto* hex = t.find("scale_hex");
    if (hex && hex->type == formats::json_value::kind::string) {
      auto c = formats::parse_cache("TRT-0-x\nx: " + hex->str + "\n", where);
      e.scale = c.entries.at(0).scale;
    } else {
      const auto* sc = t.find("scale");
      if (!sc || sc->type != formats::json_value::kind::number) {
        throw error(errc::format_error, where + ": no \"scale\"");
      }
      e.scale = static_cast<float>(sc->num);  // exact: written from an fp32 with %.17g
    }
    const auto* m = t.find("method");
    e.opts.meth = parse_method(!nd.method.empty()                                  ? nd.method
                               : m && m->type == formats::json_value::kind::string ? m->str
                                                                                   : "entropy",
                               where);
    const auto* p = t.find("params");
    const auto* rules = p ? p->find("rules") : nullptr;
    if (rules && rules->str == "mxnet") e.opts.rules = rule_set::mxnet;
    const auto* range = p ? p->find("range") : nullptr;
    e.streaming = range && range->str == "streaming";
    // Integers are range-checked before the conversion (a double outside int32 is UB to cast);
    // values inside the range but invalid for the method are reported by the reference.
    auto integer = [&](const char* key, double dflt) {
      double v = num(p, key, dflt);
      if (!(v >= -1e9 && v <= 1e9) || v != std::floor(v)) {
        throw error(errc::format_error, where + ": \"" + key + "\" is not a valid integer");
      }
      return static_cast<std::int32_t>(v);
    };
    e.bins = integer("bins", e.opts.rules == rule_set::mxnet ? 8001 : 2048);
    e.opts.bits = integer("bits", 8);
    e.opts.start_bin = integer("start_bin", 128);
    e.opts.stride = integer("stride", 1);
    e.opts.percentile = num(p, "percentile", 99.99);
    const auto* u = p ? p->find("unsigned") : nullptr;
    e.opts.is_unsigned = u && u->type == formats::json_value::kind::boolean && u->b;
    out.push_back(e);
  }
  return out;
}

}  // namespace

int run_check(const std::vector<std::string>& args) {
  std::string cache_path, json_path;
  std::vector<std::string> inputs;
  search_options cache_opts;
  std::int32_t cache_bins = -1;
  bool cache_streaming = false, quiet = false;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_check_help;
      return exit_ok;
    } else if (a == "--cache") {
      cache_path = w.value(a);
    } else if (a == "--json") {
      json_path = w.value(a);
    } else if (a == "--method") {
      cache_opts.meth = parse_method_option(a, w.value(a));
    } else if (a == "--rules") {
      cache_opts.rules = parse_rules_option(a, w.value(a));
    } else if (a == "--bins") {
      cache_bins = static_cast<std::int32_t>(parse_int(a, w.value(a), 2, max_bins));
    } else if (a == "--range") {
      std::string v = w.value(a);
      if (v != "two-pass" && v != "streaming") {
        throw usage_error("--range '" + v + "': expected two-pass or streaming");
      }
      cache_streaming = v == "streaming";
    } else if (a == "--percentile") {
      cache_opts.percentile = parse_double(a, w.value(a), 0.0, 100.0);
    } else if (a == "--quiet" || a == "-q") {
      w.no_value(a);
      quiet = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal check --help)");
    } else {
      inputs.push_back(a);
    }
  }
  if (cache_path.empty() == json_path.empty()) {
    throw usage_error("give exactly one of --cache FILE or --json FILE");
  }
  if (inputs.empty()) throw usage_error("no INPUT given (see klcal check --help)");

  std::vector<expectation> expect;
  if (!json_path.empty()) {
    expect = from_json(json_path);
  } else {
    auto cache = formats::parse_cache(read_text(cache_path), cache_path);
    if (cache_opts.meth == method::entropy && cache.algorithm != "EntropyCalibration2") {
      warn(cache_path + ": algorithm tag '" + cache.algorithm +
           "' but checking with --method entropy (pass --method to choose)");
    }
    if (cache_bins < 0) cache_bins = cache_opts.rules == rule_set::mxnet ? 8001 : 2048;
    for (const auto& e : cache.entries) {
      expect.push_back({e.name, e.scale, cache_opts, cache_bins, cache_streaming});
    }
  }
  const std::string source = json_path.empty() ? cache_path : json_path;
  auto groups = collect_inputs(inputs);
  std::map<std::string, const tensor_group*> by_name;
  for (const auto& g : groups) by_name[g.name] = &g;

  std::vector<std::vector<std::string>> rows = {
      {"tensor", "method", "stored", "reference", "result"}};
  int bad = 0, unusable = 0;
  std::map<std::string, bool> seen;
  for (const auto& e : expect) {
    seen[e.name] = true;
    auto it = by_name.find(e.name);
    if (it == by_name.end()) {
      rows.push_back({e.name, method_name(e.opts.meth), formats::scale_hex(e.scale), "-",
                      "MISSING (not in the inputs)"});
      ++bad;
      continue;
    }
    // One tensor whose parameters the reference cannot use fails alone (exit 3 at the end).
    auto recompute = [&]() -> float {
      const bool mx = e.opts.meth == method::entropy && e.opts.rules == rule_set::mxnet;
      histogram_spec spec;
      std::vector<std::uint64_t> counts;
      float max_abs = 0.0f;
      formats::chunk c;
      if (e.streaming) {
        reference::streaming_histogram sh;
        if (status st = sh.init(e.bins); !st.ok()) {
          throw error(errc::format_error, source + ": tensor '" + e.name + "': bins " +
                                              std::to_string(e.bins) +
                                              ": the streaming range needs a power of two from 2 "
                                              "to 16777216");
        }
        for (const auto& src : it->second->sources) {
          auto r = src.open();
          while (r.next(c)) (void)sh.add(c.data, c.type, c.n);
        }
        spec = sh.get().spec;
        counts = sh.get().counts;
        max_abs = sh.get().max_abs;
      } else {
        // Pass 1: the reference's own max |x| (any small histogram tracks it).
        reference::histogram probe;
        (void)reference::make_histogram(histogram_spec{layout::abs, 2, 0.0f, 1.0f}, &probe);
        for (const auto& src : it->second->sources) {
          auto r = src.open();
          while (r.next(c)) (void)reference::add(probe, c.data, c.type, c.n);
        }
        max_abs = probe.max_abs;
        // numerics.md 1.5: [0, hi) or [-hi, hi) with hi = max(max_abs, 2^-64).
        const float hi = std::max(max_abs, std::ldexp(1.0f, streaming_min_exponent));
        spec = mx ? histogram_spec{layout::signed_, e.bins, -hi, hi}
                  : histogram_spec{layout::abs, e.bins, 0.0f, hi};
        reference::histogram h;
        if (status st = reference::make_histogram(spec, &h); !st.ok()) {
          throw error(errc::format_error,
                      source + ": tensor '" + e.name + "': " + explain_options(st, spec, e.opts));
        }
        for (const auto& src : it->second->sources) {
          auto r = src.open();
          while (r.next(c)) (void)reference::add(h, c.data, c.type, c.n);
        }
        counts = std::move(h.counts);
      }
      reference::search_output out;
      if (status st = reference::search(counts, spec, max_abs, e.opts, &out); !st.ok()) {
        throw error(errc::format_error, source + ": tensor '" + e.name + "': invalid parameters: " +
                                            explain_options(st, spec, e.opts));
      }
      return out.result.scale;
    };
    float got = 0.0f;
    try {
      got = recompute();
    } catch (const error& err) {
      if (err.code().code != errc::format_error) throw;
      std::cerr << "klcal check: error: " << err.what() << "\n";
      rows.push_back({e.name, method_name(e.opts.meth), formats::scale_hex(e.scale), "-",
                      "NOT CHECKED (error above)"});
      ++unusable;
      continue;
    }
    bool same = fp32_bits(got) == fp32_bits(e.scale);
    std::string res = "ok";
    if (!same) {
      ++bad;
      double rel = got != 0 ? std::fabs(double(e.scale) - double(got)) / std::fabs(double(got))
                            : std::numeric_limits<double>::infinity();
      res = "DIFFERS (relative difference " + fmt_g(rel, 3) + ")";
    }
    if (!quiet || !same) {
      rows.push_back({e.name, method_name(e.opts.meth), formats::scale_hex(e.scale),
                      formats::scale_hex(got), res});
    }
  }
  for (const auto& g : groups) {
    if (!seen.count(g.name))
      warn("tensor '" + g.name + "' is not in the " + (json_path.empty() ? "cache" : "JSON") +
           ", not checked");
  }
  if (rows.size() > 1) print_table(rows, std::cout);
  const std::size_t n = expect.size();
  const std::size_t ok = n - std::size_t(bad) - std::size_t(unusable);
  std::cout << (bad || unusable ? "FAILED: " : "OK: ") << ok << " of " << n
            << " scales equal the reference bit for bit"
            << (unusable ? " (" + std::to_string(unusable) + " could not be recomputed)" : "")
            << "\n";
  if (unusable) return exit_input;
  return bad ? exit_check_failed : exit_ok;
}

}  // namespace klcal::cli

// `klcal search` (thresholds from a saved state file, without the data) and `klcal merge`
// (state files merged exactly, tensors matched by name).
#include <sys/stat.h>

#include <iostream>
#include <map>

#include "args.hpp"
#include "cli.hpp"
#include "klcal/state_file.hpp"
#include "report.hpp"

namespace klcal::cli {
namespace {

const char* k_search_help = R"(usage: klcal search STATE [options]

Searches the thresholds of every tensor of a state file (klcal calibrate --save-histograms, or
klcal merge) without the data: the same search and the same outputs as klcal calibrate, so the
cache, JSON and CSV equal those of a calibrate run with the same options byte for byte (but for
the JSON "sources", which the state file does not record). The bins, the range and its policy
come from the file.

  --method M         entropy|max|percentile|mse; comma-separated or repeated (default entropy)
  --rules R          tensorrt|mxnet (default: mxnet for signed histograms, else tensorrt)
  --start-bin N      first candidate of tensorrt entropy and mse (default 128)
  --stride N         candidate step (default 1)
  --bits N           quantized bits, 2..16 (default 8)
  --unsigned         unsigned quantization (tensorrt rules only)
  --percentile P     percentile method, 0..100 (default 99.99)
  --threads N        CPU threads, 0 = all (default 0)
  --cache FILE, --trt-version V, --json FILE, --csv FILE, --curves DIR, --force, --quiet
                     as for klcal calibrate

Exit status 0, or 3 when some tensor failed (the others are still in the outputs).
)";

const char* k_merge_help = R"(usage: klcal merge STATE STATE... -o OUT [--force]

Merges state files exactly (counts summed, statistics merged; docs/numerics.md 1.4): tensors
are matched by name and written in order of first appearance. Both must have the same range
policy, layout and bins; two-pass histograms also need the same range bit for bit (collect
with --range streaming to merge runs over different data freely). A tensor present in only
some files is kept as it is, with a warning. Any mismatch is an error naming the tensor and
the files; then nothing is written. The same file given twice, or -o naming an input, is
refused.

  -o, --output FILE  the merged state file
  --force            overwrite an existing output
)";

}  // namespace

int run_search(const std::vector<std::string>& args) {
  calibrate_settings s;
  std::string path;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_search_help;
      return exit_ok;
    } else if (parse_search_option(w, a, s)) {
      continue;
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal search --help)");
    } else if (path.empty()) {
      path = a;
    } else {
      throw usage_error("search takes one state file (got '" + path + "' and '" + a + "')");
    }
  }
  if (path.empty()) throw usage_error("no state file given (see klcal search --help)");
  validate_search_settings(s);
  check_output(s.cache_path, s.force, "--cache");
  check_output(s.json_path, s.force, "--json");
  check_output(s.csv_path, s.force, "--csv");
  const std::vector<named_state> states = formats::read_state_file(path);
  if (states.empty()) throw error(errc::format_error, path + ": the state file holds no tensors");

  // The JSON settings describe the run: bins and range of the first tensor, and the rules.
  const calibrator_state& first = states[0].state;
  s.bins = first.spec.bins;
  s.streaming = first.policy == range_policy::streaming;
  if (!s.rules_given)
    s.rules = first.spec.kind == layout::signed_ ? rule_set::mxnet : rule_set::tensorrt;

  std::vector<tensor_result> out(states.size());
  for (std::size_t k = 0; k < states.size(); ++k) out[k].name = states[k].name;
  plan_curve_files(s, out);
  std::vector<tensor_result> done;
  std::size_t failed = 0;
  for (std::size_t k = 0; k < states.size(); ++k) {
    const auto& ns = states[k];
    const rule_set rules = s.rules_given                           ? s.rules
                           : ns.state.spec.kind == layout::signed_ ? rule_set::mxnet
                                                                   : rule_set::tensorrt;
    std::vector<search_options> opts;
    for (auto m : s.methods) opts.push_back(options_for(s, m, rules));
    try {
      if (!ns.state.range_done) {
        throw error(errc::invalid_option,
                    "holds only the first pass of a two-pass range (no counts to search)");
      }
      tensor_result t = search_state(ns.name, ns.state, opts, !s.curves_dir.empty(), s.threads);
      t.hist_file = out[k].hist_file;
      t.curve_files = out[k].curve_files;
      if (t.stats.finite_count + t.stats.nan_count + t.stats.inf_count == 0) {
        warn("tensor '" + ns.name + "' is empty (0 elements), skipped");
        continue;
      }
      done.push_back(std::move(t));
    } catch (const error& e) {
      if (e.code().code != errc::invalid_option) throw;
      std::cerr << "klcal search: error: " << path << ": tensor '" << ns.name << "': " << e.what()
                << "\n";
      ++failed;
    }
  }
  if (done.empty()) {
    std::cerr << "klcal search: error: no tensor could be searched; no output written\n";
    return exit_input;
  }
  write_outputs(s, "cpu", done);
  return report_failures("search", failed, failed + done.size());
}

int run_merge(const std::vector<std::string>& args) {
  std::vector<std::string> inputs;
  std::string output;
  bool force = false;
  arg_walker w(args);
  while (!w.done()) {
    std::string a = w.next();
    if (a == "--help" || a == "-h") {
      std::cout << k_merge_help;
      return exit_ok;
    } else if (a == "-o" || a == "--output") {
      output = w.value(a);
    } else if (a == "--force") {
      w.no_value(a);
      force = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error("unknown option '" + a + "' (see klcal merge --help)");
    } else {
      inputs.push_back(a);
    }
  }
  if (output.empty()) throw usage_error("no output given: -o FILE (see klcal merge --help)");
  if (inputs.size() < 2) throw usage_error("merge needs at least two state files");
  check_output(output, force, "-o");
  // The same file twice would be counted twice; an output naming an input would replace it.
  {
    struct stat out_st {};
    const bool out_exists = ::stat(output.c_str(), &out_st) == 0;
    std::map<std::pair<dev_t, ino_t>, std::string> seen;
    for (const auto& in : inputs) {
      struct stat st {};
      if (::stat(in.c_str(), &st) != 0) continue;  // read_state_file names the missing file
      if (out_exists && st.st_dev == out_st.st_dev && st.st_ino == out_st.st_ino) {
        throw usage_error("-o " + output + " is the input " + in + "; write to another file");
      }
      auto [it, fresh] = seen.emplace(std::make_pair(st.st_dev, st.st_ino), in);
      if (!fresh) {
        throw usage_error(in + " and " + it->second +
                          " are the same file: its counts would be added twice");
      }
    }
  }

  std::vector<named_state> merged;
  std::map<std::string, std::size_t> index;       // name -> position in merged
  std::vector<std::vector<std::string>> seen_in;  // files of each merged tensor
  for (const auto& in : inputs) {
    for (auto& ns : formats::read_state_file(in)) {
      auto it = index.find(ns.name);
      if (it == index.end()) {
        index.emplace(ns.name, merged.size());
        seen_in.push_back({in});
        merged.push_back(std::move(ns));
        continue;
      }
      calibrator_state& into = merged[it->second].state;
      if (!merge(into, ns.state).ok()) {
        const auto& a = into;
        const auto& b = ns.state;
        auto describe = [](const calibrator_state& st) {
          return std::string(range_name(st.policy)) + " " +
                 (st.spec.kind == layout::abs ? "abs" : "signed") + " histogram of " +
                 std::to_string(st.spec.bins) + " bins over [" + fmt_g(st.spec.lo, 9) + ", " +
                 fmt_g(st.spec.hi, 9) + ")" +
                 (st.policy == range_policy::two_pass && !st.range_done ? " (first pass only)"
                                                                        : "");
        };
        std::string files;
        for (const auto& f : seen_in[it->second]) files += (files.empty() ? "" : ", ") + f;
        throw error(errc::format_error,
                    "tensor '" + ns.name + "' cannot be merged: " + files + ": a " + describe(a) +
                        "; " + in + ": a " + describe(b) +
                        (a.policy == range_policy::two_pass && b.policy == a.policy &&
                                 a.spec.bins == b.spec.bins
                             ? " (two-pass histograms merge only with the same range; collect "
                               "with --range streaming to merge runs over different data)"
                             : ""));
      }
      seen_in[it->second].push_back(in);
    }
  }
  for (std::size_t k = 0; k < merged.size(); ++k) {
    if (seen_in[k].size() < inputs.size()) {
      warn("tensor '" + merged[k].name + "' is only in " + std::to_string(seen_in[k].size()) +
           " of " + std::to_string(inputs.size()) + " files; kept as it is");
    }
  }
  formats::write_state_file(output, merged);
  return exit_ok;
}

}  // namespace klcal::cli

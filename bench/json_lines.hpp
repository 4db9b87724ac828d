#pragma once
// The JSON-lines protocol every bench program prints for bench/run.py: one
// object per measurement (metric, contender, value, unit, better, extras).

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

inline std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// Prints one measurement; `extra` is appended inside the object (", \"k\": v").
inline void emit(std::string_view metric, std::string_view contender, double value,
                 std::string_view unit, std::string_view better, const std::string& extra = {}) {
  std::printf(
      "{\"metric\": \"%.*s\", \"contender\": \"%.*s\", \"value\": %s, \"unit\": \"%.*s\", "
      "\"better\": \"%.*s\"%s}\n",
      static_cast<int>(metric.size()), metric.data(), static_cast<int>(contender.size()),
      contender.data(), fmt_double(value).c_str(), static_cast<int>(unit.size()), unit.data(),
      static_cast<int>(better.size()), better.data(), extra.c_str());
  std::fflush(stdout);
}

/// q in [0, 1] over sorted samples (nearest rank).
inline double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) {
    return 0;
  }
  const auto idx = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(idx, sorted.size() - 1)];
}

/// A latency distribution: p50 and p99 rows plus 200 quantile points for the plot.
inline void emit_latency(std::string_view prefix, std::string_view contender,
                         std::vector<double> us) {
  std::sort(us.begin(), us.end());
  std::string q = ", \"quantiles\": [";
  for (int i = 0; i < 200; ++i) {
    q += (i ? ", " : "") + fmt_double(percentile(us, i / 199.0));
  }
  q += "], \"n\": " + std::to_string(us.size());
  emit(std::string(prefix) + "_p50", contender, percentile(us, 0.50), "us", "lower");
  emit(std::string(prefix) + "_p99", contender, percentile(us, 0.99), "us", "lower");
  emit(std::string(prefix) + "_dist", contender, percentile(us, 0.50), "us", "lower", q);
}

}  // namespace bench

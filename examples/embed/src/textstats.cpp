#include "textstats/textstats.hpp"

#include <cctype>
#include <cstdio>
#include <string>

namespace textstats::detail {
namespace {
// Set before the pool forks its zygote, so every worker inherits it.
log_sink g_sink = nullptr;
}  // namespace

options configure(options opt) {
  g_sink = opt.sink;
  return opt;
}

stats analyze_text(std::string text) {
  stats s;
  s.bytes = text.size();
  std::uint64_t word = 0;
  for (char c : text) {
    if (c == '\n') {
      ++s.lines;
    }
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      s.words += word > 0 ? 1 : 0;
      s.longest_word = std::max(s.longest_word, word);
      word = 0;
    } else {
      ++word;
    }
  }
  s.words += word > 0 ? 1 : 0;
  s.longest_word = std::max(s.longest_word, word);
  if (g_sink != nullptr) {
    char line[128];
    std::snprintf(line, sizeof line, "textstats: analysed %llu bytes",
                  static_cast<unsigned long long>(s.bytes));
    g_sink(line);
  }
  return s;
}

}  // namespace textstats::detail

// Readers for the tokenizer fixtures (tests/data/tokenizer_*.tsv, written by
// tools/gen_tokenizer_fixtures.py): tab-separated fields, text as hex UTF-8,
// ids as space-separated integers, "-" for empty; and printers for failure
// messages.
#ifndef QKERN_TESTS_TOKENIZER_FIXTURES_H_
#define QKERN_TESTS_TOKENIZER_FIXTURES_H_

#include <stdint.h>
#include <stdio.h>

#include <sstream>
#include <string>
#include <vector>

namespace qkern {
namespace test {

inline std::vector<std::string> SplitTabs(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream in(line);
  std::string field;
  while (std::getline(in, field, '\t')) fields.push_back(field);
  return fields;
}

inline std::string FromHex(const std::string& hex) {
  std::string out;
  if (hex == "-") return out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

inline std::vector<int32_t> ParseInts(const std::string& text) {
  std::vector<int32_t> out;
  if (text == "-") return out;
  std::stringstream in(text);
  long long v;
  while (in >> v) out.push_back(static_cast<int32_t>(v));
  return out;
}

// Ids as "1 2 3", for messages.
inline std::string Join(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += (out.empty() ? "" : " ") + std::to_string(id);
  return out;
}

// Text with bytes outside printable ASCII as \xNN, for messages.
inline std::string Escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\x%02x", c);
      out += esc;
    }
  }
  return out;
}

}  // namespace test
}  // namespace qkern

#endif  // QKERN_TESTS_TOKENIZER_FIXTURES_H_

// Helpers of the validation tests: fake device pointers (validation never dereferences them)
// and matching a rule's message among the reasons a call collects.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace jitattn::test {

// Each call without an address gives a new one, 2^40 bytes from the last, so that tensors made
// with it never overlap (validation refuses outputs that share memory with an input).
inline void* fake(uintptr_t p = 0) {
  static uintptr_t next = uintptr_t(1) << 40;
  if (p == 0) {
    p = next;
    next += uintptr_t(1) << 40;
  }
  return reinterpret_cast<void*>(p);
}

inline bool mentions(const std::vector<std::string>& reasons, const std::string& needle) {
  for (const auto& r : reasons)
    if (r.find(needle) != std::string::npos) return true;
  return false;
}

inline std::string joined(const std::vector<std::string>& reasons) {
  std::string s;
  for (const auto& r : reasons) s += r + " | ";
  return s;
}

}  // namespace jitattn::test

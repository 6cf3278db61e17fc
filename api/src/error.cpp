#include "jitattn/error.h"

namespace jitattn {

namespace {
std::string join(const std::vector<std::string>& reasons) {
  std::string out;
  for (const auto& r : reasons) out += (out.empty() ? "" : "; ") + r;
  return out.empty() ? "jitattn error" : out;
}
}  // namespace

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_argument: return "invalid_argument";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::compile: return "compile";
    case ErrorKind::cuda: return "cuda";
    case ErrorKind::out_of_memory: return "out_of_memory";
    case ErrorKind::cache_miss: return "cache_miss";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

Error::Error(ErrorKind kind, std::vector<std::string> reasons)
    : std::runtime_error(join(reasons)), reasons_(std::move(reasons)), kind_(kind) {}

}  // namespace jitattn

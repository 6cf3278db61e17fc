#include "jitattn/error.h"

namespace jitattn {

namespace {
std::string join(const std::vector<std::string>& reasons) {
  std::string out;
  for (const auto& r : reasons) out += (out.empty() ? "" : "; ") + r;
  return out.empty() ? "jitattn error" : out;
}
}  // namespace

Error::Error(std::vector<std::string> reasons) : std::runtime_error(join(reasons)), reasons_(std::move(reasons)) {}

}  // namespace jitattn

// jitattn::Error carries every reason a call cannot run (docs/design.md decision 2), in the style of
// xFormers' not_supported_reasons: "query.shape[-1]=100 is not a multiple of 8".
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace jitattn {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string reason) : Error(std::vector<std::string>{std::move(reason)}) {}
  explicit Error(std::vector<std::string> reasons);
  const std::vector<std::string>& reasons() const { return reasons_; }

 private:
  std::vector<std::string> reasons_;
};

}  // namespace jitattn

// jitattn::Error carries every reason a call cannot run (docs/design.md decision 2), in the style of
// xFormers' not_supported_reasons: "query.shape[-1]=100 is not a multiple of 8", and what kind of
// failure it is, so a caller (the C API among them) can tell a refused input from a compile, driver
// or cache failure without reading the message.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace jitattn {

enum class ErrorKind {
  invalid_argument,  // a malformed value: a bias that breaks its constructor's rules, a bad tensor view, a bad JITATTN_* variable
  unsupported,       // the inputs are refused (the reasons are the call's not_supported_reasons); the default
  compile,           // no kernel: NVRTC missing, or it failed
  cuda,              // no CUDA driver or device, a device/context mismatch, a CUDA driver error
  out_of_memory,     // CUDA_ERROR_OUT_OF_MEMORY
  cache_miss,        // JITATTN_JIT=off and no cache layer holds the kernel
  internal,          // anything else: the cache's own I/O, a bug
};

// "invalid_argument", "unsupported", ...
const char* to_string(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  // Without a kind: ErrorKind::unsupported, what validation throws.
  explicit Error(std::string reason) : Error(ErrorKind::unsupported, std::move(reason)) {}
  explicit Error(std::vector<std::string> reasons) : Error(ErrorKind::unsupported, std::move(reasons)) {}
  Error(ErrorKind kind, std::string reason) : Error(kind, std::vector<std::string>{std::move(reason)}) {}
  Error(ErrorKind kind, std::vector<std::string> reasons);
  const std::vector<std::string>& reasons() const { return reasons_; }
  ErrorKind kind() const { return kind_; }

 private:
  std::vector<std::string> reasons_;
  ErrorKind kind_;
};

}  // namespace jitattn

// The C API's C++ side (api/src/c_api.cpp, c_api_bias.cpp): reading the caller's versioned
// structs into the C++ API's values, and the error a conversion throws.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "jitattn/bias.h"
#include "jitattn/c_api.h"
#include "jitattn/error.h"
#include "jitattn/tensor.h"
#include "jitattn/variant.h"

struct jitattn_bias_handle {
  jitattn::AttnBias bias;
};

struct jitattn_variant {
  jitattn::Variant variant;  // its captures hold placeholder values; each call copies it and sets them
};

namespace jitattn::capi {

// A failure with its C status (the C side's own checks: NULL, struct_size, enums, ...).
struct CallError {
  jitattn_status status;
  std::vector<std::string> reasons;
};
[[noreturn]] inline void invalid(std::string reason) { throw CallError{JITATTN_ERROR_INVALID_ARGUMENT, {std::move(reason)}}; }

template <class T>
T& required(T* p, const char* name) {
  if (!p) invalid(std::string(name) + " is NULL");
  return *p;
}

// The caller's struct as this library's version of it (the header's ABI rules): the fields that
// lie wholly within struct_size are copied, the others stay zero (every default is zero); bytes
// past the known struct must be zero. `field_ends` lists offsetof + sizeof of each field.
template <class T, size_t N>
T read_struct(const T& caller, const char* name, const size_t (&field_ends)[N]) {
  const size_t size = caller.struct_size;
  if (size < sizeof(size_t))
    invalid(std::string(name) + ".struct_size=" + std::to_string(size) + " must be at least sizeof(size_t); set it to sizeof(" +
            name + ")");
  // A newer header's struct is at most a few fields longer; a size far past ours is an
  // uninitialized struct_size, whose bytes must not be scanned (they may not be mapped).
  if (size > sizeof(T) + 4096)
    invalid(std::string(name) + ".struct_size=" + std::to_string(size) + " is more than 4096 bytes past this library's " +
            std::to_string(sizeof(T)) + ": set it to sizeof(" + name + ")");
  const auto* bytes = reinterpret_cast<const unsigned char*>(&caller);
  for (size_t i = sizeof(T); i < size; ++i)
    if (bytes[i] != 0)
      invalid(std::string(name) + ".struct_size=" + std::to_string(size) + " is larger than this library's " +
              std::to_string(sizeof(T)) + " and byte " + std::to_string(i) +
              " past it is not zero: a field this library does not know is set");
  size_t copied = sizeof(size_t);
  for (size_t end : field_ends)
    if (end <= size) copied = std::max(copied, end);
  T out{};
  std::memcpy(static_cast<void*>(&out), &caller, copied);
  out.struct_size = sizeof(T);
  return out;
}
#define JITATTN_FIELD_END(T, field) (offsetof(T, field) + sizeof(T::field))

// Reads a jitattn_tensor (nullptr: an undefined TensorView).
TensorView to_tensor(const jitattn_tensor* t, const char* name);
// The TensorView for the JITATTN_DTYPE_* value `dtype`, or INVALID_ARGUMENT naming `name`.
DType to_dtype(int32_t dtype, const char* name);

// A bias description (nullptr: no bias) as the C++ bias, through its constructors.
AttnBias to_bias(const jitattn_bias* desc);
// A handle's bias (nullptr: no bias).
inline const AttnBias& handle_bias(const jitattn_bias_handle* h) {
  static const AttnBias none{};
  return h ? h->bias : none;
}

}  // namespace jitattn::capi

// Device memory for GPU tests, through the library's own driver loader (tests link no CUDA).
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "jit/cuda_driver.h"

namespace jitattn::test {

// True when a CUDA driver and a device are present; the reason otherwise.
bool gpu_available(std::string* why = nullptr);

#define JITATTN_REQUIRE_GPU()                                   \
  do {                                                          \
    std::string why_;                                           \
    if (!::jitattn::test::gpu_available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = 0, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  void* get() const { return reinterpret_cast<void*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;
  std::vector<unsigned char> download() const;
  void fill(unsigned char byte);  // poison: 0xFF is NaN in f16, bf16 and f32

 private:
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

void device_synchronize();

}  // namespace jitattn::test

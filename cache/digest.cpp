#include "cache/digest.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

std::string to_hex(const unsigned char* md, unsigned int n) {
  static const char digits[] = "0123456789abcdef";
  std::string out(size_t(n) * 2, '0');
  for (unsigned int i = 0; i < n; ++i) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 15];
  }
  return out;
}

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct FileClose {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data, size, md, &n, EVP_sha256(), nullptr) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  return to_hex(md, n);
}

std::string sha256_file_hex(const std::string& path) {
  std::unique_ptr<std::FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error(ErrorKind::internal, "cannot read " + path + " to check its digest: " + std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  std::vector<unsigned char> buf(1 << 20);
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    if (EVP_DigestUpdate(ctx.get(), buf.data(), got) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  }
  if (std::ferror(f.get())) throw Error(ErrorKind::internal, "cannot read " + path + " to check its digest: " + std::strerror(errno));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &n) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  return to_hex(md, n);
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
}

std::string Sha256::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &n) != 1) throw Error(ErrorKind::internal, "SHA-256 failed (libcrypto)");
  return to_hex(md, n);
}

}  // namespace jitattn::cache

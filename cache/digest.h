// SHA-256 through OpenSSL's libcrypto: what vouches for a stored binary and for a shipped DB file.
// XXH3-128 (cache/sqlite_store.h hash_hex) stays for keys, where speed matters and nothing is
// being defended against.
#pragma once
#include <cstddef>
#include <string>

namespace jitattn::cache {

// 64 lowercase hex chars of SHA-256(data).
std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

// SHA-256 of a whole file, read in chunks (a shipped DB may be a gigabyte). Throws jitattn::Error
// naming the path if it cannot be read.
std::string sha256_file_hex(const std::string& path);

// SHA-256 of data given in pieces (a file read through SQLite's own handle, SqliteStore).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex();  // 64 lowercase hex chars; ends the digest
 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace jitattn::cache

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

}  // namespace jitattn::cache

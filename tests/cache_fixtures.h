// What cache tests make and break: synthetic kernel rows, and a damaged page in a DB file.
#pragma once
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "cache/digest.h"
#include "cache/sqlite_store.h"

namespace jitattn::test {

// A row with `size` random bytes for a binary (not a cubin), its SHA-256, and fixed metadata.
inline cache::KernelRecord make_record(const std::string& name, size_t size, uint64_t seed,
                                       int64_t last_used = 1700000100) {
  std::mt19937_64 rng(seed);
  cache::KernelRecord r;
  r.key = cache::hash_hex("key material of " + name);
  r.name = name;
  r.target = "sm_80";
  r.compiler = "nvrtc 13.0";
  r.source_hash = cache::hash_hex("kernel_src");
  r.binary.resize(size);
  for (auto& c : r.binary) c = static_cast<char>(rng());
  r.binary_hash = cache::sha256_hex(r.binary);
  r.registers = 96;
  r.shared_bytes = 16384;
  r.compile_ms = 250;
  r.created_at = 1700000000;
  r.last_used_at = last_used;
  return r;
}

// Overwrites the root page of table or index `name` with garbage, the way a bad disk would.
// The file must be closed (no WAL pending).
inline void damage_root_page(const std::string& db_path, const std::string& name) {
  int64_t root = 0, page = 0;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = ?1",
                               -1, &st, nullptr), SQLITE_OK);
  sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW) << name;
  root = sqlite3_column_int64(st, 0);
  page = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
  std::string bytes;
  {
    std::ifstream in(db_path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GE(int64_t(bytes.size()), root * page);
  std::fill(bytes.begin() + (root - 1) * page, bytes.begin() + root * page, '\x5a');
  std::ofstream(db_path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace jitattn::test

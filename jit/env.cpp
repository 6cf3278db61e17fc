#include "jit/env.h"

#include <cctype>
#include <cstdlib>

#include "jitattn/error.h"

namespace jitattn::jit {

const char* to_string(JitPolicy policy) {
  switch (policy) {
    case JitPolicy::on: return "on";
    case JitPolicy::off: return "off";
    case JitPolicy::readonly: return "readonly";
    case JitPolicy::redo: return "redo";
  }
  return "?";
}

namespace {
std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

// "a.sqlite:b.sqlite@sha256:HEX": ':' separates DBs, except the one inside "@sha256:".
void parse_cache_ro(const std::string& ro, Env& env) {
  static const std::string pin = "@sha256:";
  std::string cur;
  for (size_t i = 0; i <= ro.size(); ++i) {
    const bool pin_colon = i < ro.size() && ro[i] == ':' && cur.size() >= pin.size() - 1 &&
                           cur.compare(cur.size() - (pin.size() - 1), pin.size() - 1, pin, 0, pin.size() - 1) == 0;
    if (i < ro.size() && (ro[i] != ':' || pin_colon)) {
      cur += ro[i];
      continue;
    }
    if (cur.empty()) continue;
    std::string digest;
    if (const size_t at = cur.rfind(pin); at != std::string::npos) {
      digest = cur.substr(at + pin.size());
      cur.resize(at);
      bool hex = digest.size() == 64;
      for (char& c : digest) {
        c = char(std::tolower(static_cast<unsigned char>(c)));
        hex &= (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      }
      if (!hex || cur.empty())
        throw Error(ErrorKind::invalid_argument, "JITATTN_CACHE_RO: \"" + cur + pin + digest + "\" must be FILE@sha256:<64 hex digits> (jitattn export prints it)");
    }
    env.cache_ro.push_back(cur);
    env.cache_ro_sha256.push_back(digest);
    cur.clear();
  }
}

namespace {

// A variable that must be a positive integer when set; 0 when it is not.
int positive_int(const char* name) {
  const std::string value = getenv_str(name);
  if (value.empty()) return 0;
  int n = -1;
  size_t used = 0;
  try {
    n = std::stoi(value, &used);
  } catch (const std::exception&) {
  }
  if (used != value.size()) n = -1;  // "4x", "2.9": not a number stoi would half read
  if (n < 1) throw Error(ErrorKind::invalid_argument, std::string(name) + "=" + value + " must be a positive integer");
  return n;
}

Env read_env() {
  Env env;
  env.cache_path = getenv_str("JITATTN_CACHE");
  if (env.cache_path.empty()) {
    std::string base = getenv_str("XDG_CACHE_HOME");
    if (base.empty()) {
      const std::string home = getenv_str("HOME");
      base = (home.empty() ? std::string("/tmp") : home) + "/.cache";
    }
    env.cache_path = base + "/jitattn/kernels.sqlite";
  }
  parse_cache_ro(getenv_str("JITATTN_CACHE_RO"), env);
  const std::string jit = getenv_str("JITATTN_JIT");
  if (jit.empty() || jit == "on") env.jit = JitPolicy::on;
  else if (jit == "off") env.jit = JitPolicy::off;
  else if (jit == "readonly") env.jit = JitPolicy::readonly;
  else if (jit == "redo") env.jit = JitPolicy::redo;
  else throw Error(ErrorKind::invalid_argument, "JITATTN_JIT=" + jit + " is not one of on, off, readonly, redo");
  env.nvrtc_path = getenv_str("JITATTN_NVRTC");
  env.cuda_home = getenv_str("CUDA_HOME");
  const std::string bwd_tile = getenv_str("JITATTN_BWD_TILE");
  if (!bwd_tile.empty()) {
    env.bwd_tile = TileConfig::parse(bwd_tile);
    if (!env.bwd_tile) throw Error(ErrorKind::invalid_argument, "JITATTN_BWD_TILE=" + bwd_tile + " is not a tile config like m64n128w8");
  }
  const std::string bwd_dq_tile = getenv_str("JITATTN_BWD_DQ_TILE");
  if (!bwd_dq_tile.empty()) {
    env.bwd_dq_tile = TileConfig::parse(bwd_dq_tile);
    if (!env.bwd_dq_tile) throw Error(ErrorKind::invalid_argument, "JITATTN_BWD_DQ_TILE=" + bwd_dq_tile + " is not a tile config like m64n64w4");
  }
  const std::string tile = getenv_str("JITATTN_TILE");
  if (!tile.empty()) {
    env.tile = TileConfig::parse(tile);
    if (!env.tile) throw Error(ErrorKind::invalid_argument, "JITATTN_TILE=" + tile + " is not a tile config like m128n64w8");
  }
  if (const std::string fam = getenv_str("JITATTN_FWD_FAMILY"); !fam.empty()) {
    if (fam != "mma" && fam != "wgmma" && fam != "tma")
      throw Error(ErrorKind::invalid_argument, "JITATTN_FWD_FAMILY=" + fam + " is not one of mma, wgmma, tma");
    env.fwd_family = fam == "mma" ? Env::FwdFamily::mma : fam == "wgmma" ? Env::FwdFamily::wgmma : Env::FwdFamily::tma;
  }
  if (const std::string fam = getenv_str("JITATTN_BWD_FAMILY"); !fam.empty()) {
    if (fam != "mma" && fam != "wgmma" && fam != "tma")
      throw Error(ErrorKind::invalid_argument, "JITATTN_BWD_FAMILY=" + fam + " is not one of mma, wgmma, tma");
    env.bwd_family = fam == "mma" ? Env::FwdFamily::mma : fam == "wgmma" ? Env::FwdFamily::wgmma : Env::FwdFamily::tma;
  }
  if (const std::string fam = getenv_str("JITATTN_FAMILY"); !fam.empty()) {
    if (fam != "portable" && fam != "default")
      throw Error(ErrorKind::invalid_argument, "JITATTN_FAMILY=" + fam + " is not one of portable, default");
    env.portable = fam == "portable";
  }
  if (const std::string m = getenv_str("JITATTN_AMD_MFMA"); !m.empty()) {
    if (m != "on" && m != "off") throw Error(ErrorKind::invalid_argument, "JITATTN_AMD_MFMA=" + m + " is not one of on, off");
    env.amd_mfma = m == "on";
  }
  env.hip_path = getenv_str("JITATTN_HIP");
  if (const std::string v = getenv_str("JITATTN_VERBOSE"); !v.empty()) {
    if (v != "0" && v != "1") throw Error(ErrorKind::invalid_argument, "JITATTN_VERBOSE=" + v + " is not one of 0, 1");
    env.verbose = v == "1";
  }
  env.pairs_per_chunk = positive_int("JITATTN_PAIRS_PER_CHUNK");
  env.fwd_blocks = positive_int("JITATTN_FWD_BLOCKS");
  if (const std::string dec = getenv_str("JITATTN_DECODE"); !dec.empty()) {
    if (dec != "on" && dec != "off") throw Error(ErrorKind::invalid_argument, "JITATTN_DECODE=" + dec + " is not one of on, off");
    env.decode = dec == "on";
  }
  if (const std::string dt = getenv_str("JITATTN_DECODE_TMA"); !dt.empty()) {
    if (dt != "on" && dt != "off") throw Error(ErrorKind::invalid_argument, "JITATTN_DECODE_TMA=" + dt + " is not one of on, off");
    env.decode_tma = dt == "on";
  }
  if (const std::string dt = getenv_str("JITATTN_DECODE_TILE"); !dt.empty()) {
    env.decode_tile = TileConfig::parse(dt);
    if (!env.decode_tile) throw Error(ErrorKind::invalid_argument, "JITATTN_DECODE_TILE=" + dt + " is not a tile config like m16n64w4");
  }
  if (const std::string ds = getenv_str("JITATTN_DECODE_SPLITS"); !ds.empty()) {
    const bool digits = ds.size() <= 3 && ds.find_first_not_of("0123456789") == std::string::npos;
    env.decode_splits = digits ? std::stoi(ds) : 0;
    if (env.decode_splits < 1 || env.decode_splits > 128)
      throw Error(ErrorKind::invalid_argument, "JITATTN_DECODE_SPLITS=" + ds + " must be an integer from 1 to 128");
  }
  env.record_path = getenv_str("JITATTN_RECORD");
  return env;
}
}  // namespace

const Env& Env::get() {
  static const Env env = read_env();
  return env;
}

}  // namespace jitattn::jit

#include "jit/recorder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "jit/variant.h"

namespace jitattn::jit {

namespace {
// A JSON string literal of `s` (a user's snippet: quotes, backslashes, newlines, any byte).
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", c);
          out += u;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

// The "variant" object of a manifest entry (docs/manifest.md) for a registered variant's code.
std::string variant_json(uint64_t id) {
  const auto code = variant_code(id);
  std::ostringstream os;
  os << "{";
  const char* sep = "";
  auto field = [&](const char* name, const std::string& text) {
    if (text.empty()) return;
    os << sep << '"' << name << "\":" << json_string(text);
    sep = ",";
  };
  field("mask_mod", code->mask_mod);
  field("score_mod", code->score_mod);
  field("score_grad", code->score_grad);
  if (code->additive) os << sep << "\"additive\":true", sep = ",";
  if (!code->captures.empty()) {
    os << sep << "\"captures\":[";
    for (size_t i = 0; i < code->captures.size(); ++i) {
      const CaptureDecl& c = code->captures[i];
      os << (i ? "," : "") << "{\"name\":" << json_string(c.name) << ",\"kind\":\""
         << (c.kind == CaptureKind::tensor ? "tensor" : c.kind == CaptureKind::f32 ? "float" : "int") << '"';
      if (c.kind == CaptureKind::tensor) os << ",\"type\":\"" << capture_type_name(c.type) << "\",\"rank\":" << c.rank;
      os << "}";
    }
    os << "]";
  }
  os << "}";
  return os.str();
}
}  // namespace

std::string manifest_line(const Signature& sig) {
  // Built by hand: every value here is a number, a bool or a name from a fixed table, except a
  // user variant's snippets and capture names, which json_string escapes. The order is part of the format:
  // deduplication compares lines byte for byte.
  std::ostringstream os;
  os << "{\"op\":\"" << to_string(sig.op) << "\",\"arch\":\"" << sig.arch().name() << "\",\"dtype\":\""
     << jitattn::to_string(sig.dtype) << "\",\"out_dtype\":\"" << jitattn::to_string(sig.out_dtype)
     << "\",\"head_dim\":" << sig.head_dim << ",\"head_dim_v\":" << sig.head_dim_v << ",\"bias\":\""
     << to_string(sig.bias) << "\",\"lse\":" << (sig.lse ? "true" : "false") << ",\"align\":" << int(sig.align);
  if (sig.dropout) os << ",\"dropout\":true";  // only when set: older lines stay as they were
  if (sig.dbias) os << ",\"dbias\":true";
  if (sig.variant) os << ",\"variant\":" << variant_json(sig.variant);  // the code, escaped
  os << "}";
  return os.str();
}

std::string manifest_line(const KernelSpec& spec) {
  // A field entry gets its tile from the tile table, and f32 entries always get align 4
  // (tools/manifest.cpp); a spec that differs from that is only reachable by its name.
  const bool field_entry_reproduces = make_spec(spec.sig).name() == spec.name() &&
                                      (spec.sig.dtype != DType::f32 || spec.sig.align == 4);
  if (field_entry_reproduces) return manifest_line(spec.sig);
  return "{\"name\":\"" + spec.name() + "\"}";
}

Recorder::Recorder(std::string path) : path_(std::move(path)) {}

Recorder& Recorder::for_path(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Recorder>> recorders;  // lives for the process
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = recorders[path];
  if (!slot) slot = std::make_unique<Recorder>(path);
  return *slot;
}

namespace {

// An append that no retry could make succeed: the path is no regular file, or is too large.
struct StopRecording : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Closes a file descriptor (and so releases its flock) on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

void Recorder::record(const Signature& sig) {
  if (path_.empty()) return;
  const std::string line = manifest_line(sig);
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_ || seen_.count(line)) return;
  try {
    append_locked(line);
    seen_.insert(line);
  } catch (const StopRecording& e) {
    // Reading /dev/full or /dev/zero never ends, and each retry would warn or read again.
    if (!warned_) std::cerr << "jitattn: warning: JITATTN_RECORD: " << e.what() << "; not recording in this process\n";
    warned_ = stopped_ = true;
  } catch (const std::exception& e) {
    // Recording is a convenience for prewarming later; the call it observes must go on. Not
    // marked seen, so a later call retries (the file may become writable).
    if (!warned_) std::cerr << "jitattn: warning: JITATTN_RECORD: " << e.what() << "; not recording\n";
    warned_ = true;
  }
}

void Recorder::append_locked(const std::string& line) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);  // open() reports a real failure

  Fd f;
  // O_NONBLOCK: opening a FIFO must not wait for a reader; it is refused just below.
  f.fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
  if (f.fd < 0) fail("cannot open", path_);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail("cannot stat", path_);
  if (!S_ISREG(st.st_mode)) throw StopRecording(path_ + " is not a regular file");
  // Another process may be between its read and its write: the lock makes read-check-append
  // one step, so overlapping recorders never write a line twice.
  while (::flock(f.fd, LOCK_EX) != 0)
    if (errno != EINTR) fail("cannot lock", path_);

  std::string content;
  char buf[1 << 16];
  for (off_t off = 0;;) {
    const ssize_t n = ::pread(f.fd, buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read", path_);
    }
    if (n == 0) break;
    content.append(buf, size_t(n));
    off += n;
    if (content.size() > kMaxManifestBytes)
      throw StopRecording(path_ + " is larger than " + std::to_string(kMaxManifestBytes >> 20) +
                          " MiB, more than jitattn reads as a manifest");
  }
  // Remember every line already there, so later signatures that are in the file skip it.
  bool present = false;
  for (size_t start = 0; start < content.size();) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    std::string existing = content.substr(start, end - start);
    if (!existing.empty() && existing.back() == '\r') existing.pop_back();
    present |= existing == line;
    seen_.insert(std::move(existing));
    start = end + 1;
  }
  if (present) return;

  // One write() of the whole line, so a reader never sees half of it; a file that a person
  // left without a final newline gets one first, so the new entry starts its own line.
  const std::string out = (content.empty() || content.back() == '\n' ? "" : "\n") + line + "\n";
  const ssize_t n = ::write(f.fd, out.data(), out.size());
  if (n < 0) fail("cannot write", path_);
  if (size_t(n) != out.size()) throw std::runtime_error("short write to " + path_);
}

}  // namespace jitattn::jit

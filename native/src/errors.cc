// errors.cc — JS error construction and the libbpf log capture (see errors.h).
//
// The log buffer keeps the last kKeep..kCap bytes of WARN/INFO output; `total_` counts every
// byte ever appended so a caller can ask for "what was logged since my mark". Guarded by
// `log_mu`, because libbpf may print from the poll thread (ring buffer errors) too.
#include "errors.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace sl {

namespace {

constexpr size_t kCap = 64 * 1024;   // trim when the buffer grows past this
constexpr size_t kKeep = 32 * 1024;  // ...down to this many newest bytes

std::mutex log_mu;
std::string log_buf;     // newest bytes of the log
uint64_t log_total = 0;  // bytes ever appended; log_buf ends at this position

int PrintHook(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(line, sizeof line, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string text;
  if (static_cast<size_t>(n) < sizeof line) {
    text.assign(line, static_cast<size_t>(n));
  } else {  // long lines (verifier log chunks): format again at full length
    text.resize(static_cast<size_t>(n) + 1);
    vsnprintf(text.data(), text.size(), fmt, args);
    text.resize(static_cast<size_t>(n));
  }
  std::lock_guard<std::mutex> lock(log_mu);
  log_buf += text;
  log_total += text.size();
  if (log_buf.size() > kCap) log_buf.erase(0, log_buf.size() - kKeep);
  return n;
}

}  // namespace

std::string ErrnoText(int err) {
  char buf[256];
  if (libbpf_strerror(err, buf, sizeof buf) != 0 && buf[0] == '\0') {
    snprintf(buf, sizeof buf, "Unknown error %d", err);
  }
  return buf;
}

Napi::Error MakeError(Napi::Env env, const std::string& step, const std::string& subject,
                      int err, const std::string& text, const std::string& log) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;  // never report errno 0 for a failure
  std::string message = step;
  if (!subject.empty()) message += " " + subject;
  message += ": " + (text.empty() ? ErrnoText(err) : text) + " (errno " + std::to_string(err) + ")";
  if (!log.empty()) message += "\n" + log;
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("errno", Napi::Number::New(env, err));
  e.Value().Set("step", Napi::String::New(env, step));
  if (!log.empty()) e.Value().Set("log", Napi::String::New(env, log));
  return e;
}

void Throw(Napi::Env env, const std::string& step, const std::string& subject, int err,
           const std::string& text, const std::string& log) {
  throw MakeError(env, step, subject, err, text, log);
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

void InstallLibbpfPrint() { libbpf_set_print(PrintHook); }

uint64_t LibbpfLogMark() {
  std::lock_guard<std::mutex> lock(log_mu);
  return log_total;
}

std::string LibbpfLogSince(uint64_t mark, size_t max_bytes) {
  std::lock_guard<std::mutex> lock(log_mu);
  if (mark >= log_total) return {};
  size_t want = static_cast<size_t>(log_total - mark);
  if (want > log_buf.size()) want = log_buf.size();
  if (want > max_bytes) want = max_bytes;
  std::string out = log_buf.substr(log_buf.size() - want);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace sl

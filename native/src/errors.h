// errors.h — how the addon reports failures, and the captured libbpf log.
//
// Owns: the process-wide libbpf print hook and its bounded log buffer (shared by every
// Node environment that loads the addon: worker threads see each other's lines).
// Concurrency: the log functions may be called from any thread (mutex inside);
// MakeError/Throw* need a live Napi::Env, so the JS thread only.
//
// Every failure becomes a JS Error with `errno` (positive) and `step` properties and the
// message "<step> <subject>: <text> (errno <n>)", e.g.
//   "load sidelight.bpf.o: Operation not permitted (errno 1)".
// Exceptions mode: NAPI_CPP_EXCEPTIONS — Throw* are `throw Napi::Error`.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace sl {

// strerror-like text for a positive errno; knows libbpf's own codes (4000+).
std::string ErrnoText(int err);

// Error with .errno/.step. `err` may be negative (-errno); `text` defaults to ErrnoText.
// A non-empty `log` is appended after a newline and also set as the `log` property.
Napi::Error MakeError(Napi::Env env, const std::string& step, const std::string& subject,
                      int err, const std::string& text = {}, const std::string& log = {});

[[noreturn]] void Throw(Napi::Env env, const std::string& step, const std::string& subject,
                        int err, const std::string& text = {}, const std::string& log = {});

[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& message);

// libbpf_set_print(): keep WARN and INFO lines (not DEBUG) in a bounded buffer.
void InstallLibbpfPrint();
// Position in the log stream; pass it to LibbpfLogSince to get what was printed after it.
uint64_t LibbpfLogMark();
// Text logged since `mark`, at most the last `max_bytes` of it ("" if nothing).
std::string LibbpfLogSince(uint64_t mark, size_t max_bytes);

}  // namespace sl

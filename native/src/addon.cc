// addon.cc — module entry of sidelight.node: a thin libbpf binding for src/native.ts.
//
// Owns nothing itself: exports layout(), libbpfVersion() and open(); everything that holds
// kernel resources lives in NativeObject (object.h) and Poller (poller.h).
// Policy (option defaults, ranges, what to attach) lives in TypeScript; this side only
// type-checks arguments (TypeError) and reports kernel/libbpf failures as Errors with
// `errno` and `step` (errors.h). Exceptions mode: NAPI_CPP_EXCEPTIONS.
// Context-aware: each Node environment (main thread, workers) gets its own class and
// objects; the libbpf print hook and its log buffer are process-wide.
#include <bpf/libbpf.h>
#include <napi.h>

#include <string>

#include "errors.h"
#include "object.h"

namespace sl {
Napi::Value Layout(const Napi::CallbackInfo& info);  // layout.cc
}

namespace {

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." +
                                           std::to_string(libbpf_minor_version()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  sl::InstallLibbpfPrint();
  sl::NativeObject::Init(env);
  exports.Set("layout", Napi::Function::New(env, sl::Layout, "layout"));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion, "libbpfVersion"));
  exports.Set("open", Napi::Function::New(env, sl::NativeObject::Open, "open"));
  return exports;
}

}  // namespace

NODE_API_MODULE(sidelight, Init)

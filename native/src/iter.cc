// iter.cc — NativeObject::RunIter: run a BPF iterator program (SEC("iter/...")) of the object
// once and return everything it wrote (bpf_seq_write/bpf_seq_printf) as one ArrayBuffer.
// Used for the pickup of TCP connections that predate the agent (bpf/iter.bpf.h); which
// program, when, and what the bytes mean is the caller's business.
//
// Lifetime: the iterator link and fd live only for the call (bpf_program__attach_iter, then
// bpf_iter_create, read to EOF, close both); nothing is kept. JS thread only; the read blocks
// that thread for as long as the kernel walk takes (one pass over the kernel's table).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "object.h"

namespace sl {

namespace {

constexpr size_t kIterLogBytes = 1024;
constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

// runIter(program, maxBytes) -> { data: ArrayBuffer, truncated: boolean }. Reads at most
// maxBytes (the rest of the output is not read; truncated says so). Throws (step 'iter') when
// the program is missing, cannot be attached as an iterator, or the read fails.
Napi::Value NativeObject::RunIter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowTypeError(env, "program must be a string");
  if (!info[1].IsNumber()) ThrowTypeError(env, "maxBytes must be a number");
  double maxd = info[1].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(maxd) || std::trunc(maxd) != maxd || maxd < 1 || maxd > static_cast<double>(INT_MAX)) {
    ThrowTypeError(env, "maxBytes must be an integer in [1, " + std::to_string(INT_MAX) + "]");
  }
  size_t max_bytes = static_cast<size_t>(maxd);
  std::string prog_name = info[0].As<Napi::String>();
  EnsureOpen(env, "iter", prog_name);
  bpf_program* p = bpf_object__find_program_by_name(obj_, prog_name.c_str());
  if (p == nullptr) Throw(env, "iter", prog_name, ENOENT, "no such program in " + file_);

  uint64_t mark = LibbpfLogMark();
  errno = 0;
  bpf_link* link = bpf_program__attach_iter(p, nullptr);
  if (link == nullptr) {
    int err = errno != 0 ? errno : EINVAL;
    std::string text = ErrnoText(err);
    std::string log = LibbpfLogSince(mark, kIterLogBytes);
    while (!log.empty() && log.back() == '\n') log.pop_back();
    size_t nl = log.find_last_of('\n');
    std::string last = nl == std::string::npos ? log : log.substr(nl + 1);
    if (!last.empty()) text += " (" + last + ")";
    Throw(env, "iter", prog_name + ": attach", err, text);
  }
  int fd = bpf_iter_create(bpf_link__fd(link));
  if (fd < 0) {
    int err = errno != 0 ? errno : -fd;
    bpf_link__destroy(link);
    Throw(env, "iter", prog_name + ": create", err);
  }
  std::vector<uint8_t> out;
  bool truncated = false;
  int err = 0;
  for (;;) {
    if (out.size() >= max_bytes) {
      // is there more? one byte tells
      uint8_t probe;
      ssize_t n = read(fd, &probe, 1);
      if (n < 0 && errno == EINTR) continue;
      truncated = n > 0;
      if (n < 0) err = errno;
      break;
    }
    size_t want = std::min(kReadChunk, max_bytes - out.size());
    size_t have = out.size();
    out.resize(have + want);
    ssize_t n = read(fd, out.data() + have, want);
    if (n < 0) {
      out.resize(have);
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    out.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
  }
  close(fd);
  bpf_link__destroy(link);
  if (err != 0) Throw(env, "iter", prog_name + ": read", err);

  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, out.size());
  if (!out.empty()) std::memcpy(ab.Data(), out.data(), out.size());
  Napi::Object r = Napi::Object::New(env);
  r.Set("data", ab);
  r.Set("truncated", Napi::Boolean::New(env, truncated));
  return r;
}

}  // namespace sl

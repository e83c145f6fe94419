// attach_net.cc — NativeObject's attachments that are not bpf_program__attach()'s auto-attach
// (see object.h): a cgroup program on a cgroup v2 directory, and an sk_msg verdict program on
// a sockmap/sockhash. Used by the opt-in traceparent injection (bpf/inject.bpf.c); no policy
// here: which program, cgroup and map is the caller's choice.
//
// Lifetime: cgroup links join links_ (destroyed by CloseAll()); sockmap attachments are
// recorded in sockmap_attached_ and detached by DetachNet(), which CloseAll() calls before
// closing the object. JS thread only.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"
#include "object.h"

namespace sl {

namespace {

constexpr size_t kNetAttachLogBytes = 1024;

std::string WithLog(int err, const std::string& log) {
  std::string text = ErrnoText(err);
  size_t nl = log.find_last_of('\n');
  std::string last = nl == std::string::npos ? log : log.substr(nl + 1);
  if (!last.empty()) text += " (" + last + ")";
  return text;
}

}  // namespace

// attachCgroup(program, cgroupPath): attach a cgroup program (sockops, ...) to the cgroup v2
// directory cgroupPath with a bpf_link. Throws (step 'attach_cgroup'). Attaching the same
// program twice throws EEXIST.
Napi::Value NativeObject::AttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowTypeError(env, "program must be a string");
  if (!info[1].IsString()) ThrowTypeError(env, "cgroupPath must be a string");
  std::string prog_name = info[0].As<Napi::String>();
  std::string path = info[1].As<Napi::String>();
  EnsureOpen(env, "attach_cgroup", prog_name);
  bpf_program* p = bpf_object__find_program_by_name(obj_, prog_name.c_str());
  if (p == nullptr) Throw(env, "attach_cgroup", prog_name, ENOENT, "no such program in " + file_);
  for (const auto& l : links_) {
    if (l.first == prog_name) Throw(env, "attach_cgroup", prog_name, EEXIST, "already attached");
  }
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Throw(env, "attach_cgroup", path, errno);
  uint64_t mark = LibbpfLogMark();
  errno = 0;
  bpf_link* link = bpf_program__attach_cgroup(p, fd);
  int err = errno != 0 ? errno : EINVAL;
  close(fd);
  if (link == nullptr) {
    Throw(env, "attach_cgroup", prog_name + " " + path, err,
          WithLog(err, LibbpfLogSince(mark, kNetAttachLogBytes)));
  }
  links_.emplace_back(prog_name, link);
  return env.Undefined();
}

// attachSockMap(program, map): attach an sk_msg (BPF_SK_MSG_VERDICT) program to a sockmap or
// sockhash of this object (bpf_prog_attach; libbpf 1.1 has no link for it). Throws (step
// 'attach_sockmap'); EEXIST when already attached.
Napi::Value NativeObject::AttachSockMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowTypeError(env, "program must be a string");
  std::string prog_name = info[0].As<Napi::String>();
  bpf_map* m = FindMap(env, "attach_sockmap", info[1]);
  bpf_program* p = bpf_object__find_program_by_name(obj_, prog_name.c_str());
  if (p == nullptr) Throw(env, "attach_sockmap", prog_name, ENOENT, "no such program in " + file_);
  int prog_fd = bpf_program__fd(p);
  int map_fd = bpf_map__fd(m);
  for (const auto& a : sockmap_attached_) {
    if (a.first == prog_fd && a.second == map_fd) Throw(env, "attach_sockmap", prog_name, EEXIST, "already attached");
  }
  if (bpf_prog_attach(prog_fd, map_fd, BPF_SK_MSG_VERDICT, 0) != 0) {
    int err = errno != 0 ? errno : EINVAL;
    Throw(env, "attach_sockmap", prog_name + " " + bpf_map__name(m), err);
  }
  sockmap_attached_.emplace_back(prog_fd, map_fd);
  return env.Undefined();
}

void NativeObject::DetachNet() {
  for (const auto& [prog_fd, map_fd] : sockmap_attached_) bpf_prog_detach2(prog_fd, map_fd, BPF_SK_MSG_VERDICT);
  sockmap_attached_.clear();
}

}  // namespace sl

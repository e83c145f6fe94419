// object.h — NativeObject: one loaded BPF object file as seen from JS (`open()` returns it).
//
// Owns: the bpf_object (programs + maps), the bpf_links made by attach() and attachUprobe()
// (uprobes: one link per program × binary × function, by handle), the Poller made
// by start(), the BPF_ENABLE_STATS fd made by enableStats(), and one env cleanup hook.
//
// Lifetime: open() loads the object and wraps it. close() — or the env cleanup hook if JS
// never calls close(), or the GC finalizer — stops the poller, destroys links, closes the
// object and the stats fd, in that order; all three paths are idempotent. Any method after
// close() throws errno EBADF.
//
// Concurrency: all methods run on the JS thread of the environment that opened the object.
// The only other thread is the Poller's, which touches the ring buffer map alone.
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct bpf_object;
struct bpf_link;
struct bpf_map;

namespace sl {

class Poller;

class NativeObject : public Napi::ObjectWrap<NativeObject> {
 public:
  // Defines the JS class and keeps its constructor in the env's instance data.
  static void Init(Napi::Env env);
  // The `open(objectPath, rodata, mapSizes)` export.
  static Napi::Value Open(const Napi::CallbackInfo& info);

  explicit NativeObject(const Napi::CallbackInfo& info);  // only via Open()
  ~NativeObject() override;

 private:
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Attach(const Napi::CallbackInfo& info);
  // attachUprobe(program, binaryPath, funcName, retprobe) -> handle; detachUprobe(handle)
  Napi::Value AttachUprobe(const Napi::CallbackInfo& info);
  Napi::Value DetachUprobe(const Napi::CallbackInfo& info);
  // attachCgroup(program, cgroupPath); attachSockMap(program, map) — attach_net.cc
  Napi::Value AttachCgroup(const Napi::CallbackInfo& info);
  Napi::Value AttachSockMap(const Napi::CallbackInfo& info);
  void DetachNet();  // sk_msg attachments made by AttachSockMap(); no JS calls
  // runIter(program, maxBytes) -> { data, truncated } — iter.cc
  Napi::Value RunIter(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value SetPaused(const Napi::CallbackInfo& info);
  Napi::Value Recycle(const Napi::CallbackInfo& info);
  Napi::Value MapUpdate(const Napi::CallbackInfo& info);
  Napi::Value MapDelete(const Napi::CallbackInfo& info);
  Napi::Value MapLookup(const Napi::CallbackInfo& info);
  Napi::Value MapInfo(const Napi::CallbackInfo& info);
  Napi::Value ProgramStats(const Napi::CallbackInfo& info);
  Napi::Value EnableStats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void EnsureOpen(Napi::Env env, const char* step, const std::string& subject) const;
  bpf_map* FindMap(Napi::Env env, const char* step, const Napi::Value& name) const;
  void StopPoller();
  void CloseAll();  // no JS calls: safe from the cleanup hook and the destructor
  void AddHook();
  void RemoveHook();
  static void CleanupHook(void* arg);

  napi_env env_;
  std::string file_;  // basename of the object file, for messages
  bpf_object* obj_ = nullptr;
  std::vector<std::pair<std::string, bpf_link*>> links_;
  // uprobe links made by attachUprobe(), by handle (1, 2, ...; never reused)
  std::map<uint32_t, bpf_link*> uprobes_;
  uint32_t next_uprobe_ = 1;
  // (prog fd, map fd) of sk_msg programs attached by attachSockMap()
  std::vector<std::pair<int, int>> sockmap_attached_;
  std::unique_ptr<Poller> poller_;
  int stats_fd_ = -1;
  bool hooked_ = false;
};

}  // namespace sl

// object.cc — NativeObject: open/load, attach, maps, stats, close (see object.h).
#include "object.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <unordered_set>

#include "errors.h"
#include "poller.h"

namespace sl {

namespace {

constexpr size_t kLoadLogBytes = 4096;   // tail of the libbpf log appended to open/load errors
constexpr size_t kAttachLogBytes = 1024;  // log looked at for a per-program attach error

struct AddonData {
  Napi::FunctionReference ctor;
};

// open() hands the freshly loaded object to the constructor through this slot, so JS cannot
// construct a NativeObject on its own (`new (o.constructor)()` finds it empty).
thread_local bpf_object* pending_object = nullptr;

std::string Basename(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsUint8Array(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
}

Napi::Uint8Array Bytes(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!IsUint8Array(v)) ThrowTypeError(env, std::string(what) + " must be a Uint8Array");
  return v.As<Napi::Uint8Array>();
}

// A JS number that is an integer in [lo, hi], else TypeError.
int64_t Integer(Napi::Env env, const Napi::Value& v, const char* what, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) ThrowTypeError(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(lo) ||
      d > static_cast<double>(hi)) {
    ThrowTypeError(env, std::string(what) + " must be an integer in [" + std::to_string(lo) +
                            ", " + std::to_string(hi) + "]");
  }
  return static_cast<int64_t>(d);
}

bool IsPerCpu(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_PERCPU_HASH ||
         t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Bytes of one value as the syscall sees it: per-CPU maps use one 8-byte aligned slot per
// possible CPU. Returns the slot stride in *stride and the CPU count in *ncpus.
size_t ValueBytes(Napi::Env env, const char* step, const std::string& name, bpf_map* m,
                  size_t* stride, size_t* ncpus) {
  size_t vs = bpf_map__value_size(m);
  if (!IsPerCpu(bpf_map__type(m))) {
    *stride = vs;
    *ncpus = 1;
    return vs;
  }
  int n = libbpf_num_possible_cpus();
  if (n <= 0) Throw(env, step, name, n < 0 ? n : EINVAL);
  *stride = (vs + 7) & ~static_cast<size_t>(7);
  *ncpus = static_cast<size_t>(n);
  return *stride * *ncpus;
}

// `error` of a failed attach result: the errno text, plus libbpf's last line about it, e.g.
// "No such file or directory (libbpf: prog 'x': failed to attach to raw tracepoint 'y': ...)".
// Callers add "(errno N)" themselves from the `errno` field.
std::string AttachErrorText(int err, const std::string& log) {
  std::string text = ErrnoText(err);
  size_t nl = log.find_last_of('\n');
  std::string last = nl == std::string::npos ? log : log.substr(nl + 1);
  if (last.rfind("libbpf: ", 0) == 0) last.erase(0, 8);
  if (!last.empty()) text += " (libbpf: " + last + ")";
  return text;
}

void CheckSize(Napi::Env env, const char* step, const std::string& name, const char* what,
               size_t got, size_t want) {
  if (got != want) {
    Throw(env, step, name, EINVAL,
          std::string(what) + " is " + std::to_string(got) + " bytes, the map wants " +
              std::to_string(want));
  }
}

}  // namespace

void NativeObject::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(
      env, "NativeObject",
      {
          InstanceMethod<&NativeObject::Programs>("programs"),
          InstanceMethod<&NativeObject::Attach>("attach"),
          InstanceMethod<&NativeObject::AttachUprobe>("attachUprobe"),
          InstanceMethod<&NativeObject::DetachUprobe>("detachUprobe"),
          InstanceMethod<&NativeObject::AttachCgroup>("attachCgroup"),
          InstanceMethod<&NativeObject::AttachSockMap>("attachSockMap"),
          InstanceMethod<&NativeObject::RunIter>("runIter"),
          InstanceMethod<&NativeObject::Start>("start"),
          InstanceMethod<&NativeObject::Stop>("stop"),
          InstanceMethod<&NativeObject::SetPaused>("setPaused"),
          InstanceMethod<&NativeObject::Recycle>("recycle"),
          InstanceMethod<&NativeObject::MapUpdate>("mapUpdate"),
          InstanceMethod<&NativeObject::MapDelete>("mapDelete"),
          InstanceMethod<&NativeObject::MapLookup>("mapLookup"),
          InstanceMethod<&NativeObject::MapInfo>("mapInfo"),
          InstanceMethod<&NativeObject::ProgramStats>("programStats"),
          InstanceMethod<&NativeObject::EnableStats>("enableStats"),
          InstanceMethod<&NativeObject::Close>("close"),
      });
  auto* data = new AddonData();
  data->ctor = Napi::Persistent(ctor);
  env.SetInstanceData(data);  // deleted by node-addon-api when the env goes away
}

Napi::Value NativeObject::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowTypeError(env, "objectPath must be a string");
  std::string path = info[0].As<Napi::String>();
  std::string file = Basename(path);
  Napi::Value rodata = info[1];
  bool has_rodata = !rodata.IsNull() && !rodata.IsUndefined();
  if (has_rodata && !IsUint8Array(rodata)) ThrowTypeError(env, "rodata must be a Uint8Array or null");
  Napi::Value sizes_v = info[2];
  std::vector<std::pair<std::string, uint32_t>> sizes;
  if (!sizes_v.IsNull() && !sizes_v.IsUndefined()) {
    if (!sizes_v.IsObject() || sizes_v.IsArray()) ThrowTypeError(env, "mapSizes must be an object");
    Napi::Object o = sizes_v.As<Napi::Object>();
    Napi::Array keys = o.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string k = keys.Get(i).ToString();
      int64_t n = Integer(env, o.Get(k), ("mapSizes." + k).c_str(), 1, UINT32_MAX);
      sizes.emplace_back(k, static_cast<uint32_t>(n));
    }
  }

  uint64_t mark = LibbpfLogMark();
  errno = 0;
  bpf_object* raw = bpf_object__open_file(path.c_str(), nullptr);
  if (raw == nullptr) Throw(env, "open", file, errno, {}, LibbpfLogSince(mark, kLoadLogBytes));
  std::unique_ptr<bpf_object, void (*)(bpf_object*)> obj(raw, bpf_object__close);

  if (has_rodata) {
    Napi::Uint8Array bytes = rodata.As<Napi::Uint8Array>();
    bpf_map* ro = bpf_object__find_map_by_name(obj.get(), ".rodata");
    if (ro == nullptr) Throw(env, "rodata", file, ENOENT, "the object has no .rodata map");
    size_t have = 0;
    bpf_map__initial_value(ro, &have);
    if (bytes.ByteLength() != have) {
      Throw(env, "rodata", file, EINVAL,
            "rodata is " + std::to_string(bytes.ByteLength()) + " bytes but the object's .rodata is " +
                std::to_string(have) + " bytes");
    }
    int err = bpf_map__set_initial_value(ro, bytes.Data(), bytes.ByteLength());
    if (err != 0) Throw(env, "rodata", file, err);
  }

  for (const auto& [name, n] : sizes) {
    bpf_map* m = bpf_object__find_map_by_name(obj.get(), name.c_str());
    if (m == nullptr) Throw(env, "map_sizes", name, ENOENT, "no such map in " + file);
    int err = bpf_map__set_max_entries(m, n);
    if (err != 0) Throw(env, "map_sizes", name, err);
  }

  mark = LibbpfLogMark();
  int err = bpf_object__load(obj.get());
  if (err != 0) Throw(env, "load", file, err, {}, LibbpfLogSince(mark, kLoadLogBytes));

  auto* data = env.GetInstanceData<AddonData>();
  pending_object = obj.release();
  Napi::Object wrapped;
  try {
    wrapped = data->ctor.New({Napi::String::New(env, file)});
  } catch (...) {
    if (pending_object != nullptr) bpf_object__close(pending_object);
    pending_object = nullptr;
    throw;
  }
  return wrapped;
}

NativeObject::NativeObject(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<NativeObject>(info), env_(info.Env()) {
  if (pending_object == nullptr) ThrowTypeError(info.Env(), "NativeObject is created by open()");
  obj_ = pending_object;
  pending_object = nullptr;
  file_ = info[0].As<Napi::String>();
  AddHook();
}

NativeObject::~NativeObject() {
  CloseAll();
  RemoveHook();
}

void NativeObject::AddHook() {
  RemoveHook();
  if (napi_add_env_cleanup_hook(env_, &NativeObject::CleanupHook, this) == napi_ok) hooked_ = true;
}

void NativeObject::RemoveHook() {
  if (!hooked_) return;
  napi_remove_env_cleanup_hook(env_, &NativeObject::CleanupHook, this);
  hooked_ = false;
}

void NativeObject::CleanupHook(void* arg) {
  auto* self = static_cast<NativeObject*>(arg);
  self->hooked_ = false;  // node drops the hook after running it
  self->CloseAll();
}

void NativeObject::StopPoller() {
  if (poller_) poller_->Stop();
  poller_.reset();
}

void NativeObject::CloseAll() {
  StopPoller();
  DetachNet();
  for (auto& [name, link] : links_) bpf_link__destroy(link);
  links_.clear();
  for (auto& [handle, link] : uprobes_) bpf_link__destroy(link);
  uprobes_.clear();
  if (obj_ != nullptr) bpf_object__close(obj_);
  obj_ = nullptr;
  if (stats_fd_ >= 0) close(stats_fd_);
  stats_fd_ = -1;
}

void NativeObject::EnsureOpen(Napi::Env env, const char* step, const std::string& subject) const {
  if (obj_ == nullptr) Throw(env, step, subject.empty() ? file_ : subject, EBADF, "object is closed");
}

bpf_map* NativeObject::FindMap(Napi::Env env, const char* step, const Napi::Value& name) const {
  if (!name.IsString()) ThrowTypeError(env, "map name must be a string");
  std::string n = name.As<Napi::String>();
  EnsureOpen(env, step, n);
  bpf_map* m = bpf_object__find_map_by_name(obj_, n.c_str());
  if (m == nullptr) Throw(env, step, n, ENOENT, "no such map in " + file_);
  return m;
}

Napi::Value NativeObject::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnsureOpen(env, "programs", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, obj_) out.Set(i++, Napi::String::New(env, bpf_program__name(p)));
  return out;
}

Napi::Value NativeObject::Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unordered_set<std::string> skip;
  if (!info[0].IsUndefined() && !info[0].IsNull()) {
    if (!info[0].IsArray()) ThrowTypeError(env, "skip must be an array of program names");
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsString()) ThrowTypeError(env, "skip must be an array of program names");
      skip.insert(v.As<Napi::String>());
    }
  }
  EnsureOpen(env, "attach", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, obj_) {
    std::string name = bpf_program__name(p);
    if (skip.count(name) != 0) continue;  // skipped programs are not reported
    bool linked = false;
    for (const auto& l : links_) linked = linked || l.first == name;
    int err = 0;
    std::string error;
    if (!linked) {
      uint64_t mark = LibbpfLogMark();
      errno = 0;
      bpf_link* link = bpf_program__attach(p);
      if (link != nullptr) {
        links_.emplace_back(name, link);
      } else {
        err = errno != 0 ? errno : EINVAL;
        error = AttachErrorText(err, LibbpfLogSince(mark, kAttachLogBytes));
      }
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("name", name);
    r.Set("ok", Napi::Boolean::New(env, err == 0));
    r.Set("errno", Napi::Number::New(env, err));
    r.Set("error", error);
    out.Set(i++, r);
  }
  return out;
}

// attachUprobe(program, binaryPath, funcName, retprobe): a uprobe (or uretprobe) of the
// program on funcName (an ELF symbol libbpf resolves: .dynsym or .symtab) in binaryPath, for
// every process (pid -1). Returns a handle for detachUprobe(); throws (step 'attach_uprobe')
// with libbpf's last log line when it cannot attach.
Napi::Value NativeObject::AttachUprobe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowTypeError(env, "program must be a string");
  if (!info[1].IsString()) ThrowTypeError(env, "binaryPath must be a string");
  if (!info[2].IsString()) ThrowTypeError(env, "funcName must be a string");
  if (!info[3].IsBoolean()) ThrowTypeError(env, "retprobe must be a boolean");
  std::string prog_name = info[0].As<Napi::String>();
  std::string path = info[1].As<Napi::String>();
  std::string func = info[2].As<Napi::String>();
  bool ret = info[3].As<Napi::Boolean>();
  EnsureOpen(env, "attach_uprobe", prog_name);
  bpf_program* p = bpf_object__find_program_by_name(obj_, prog_name.c_str());
  if (p == nullptr) Throw(env, "attach_uprobe", prog_name, ENOENT, "no such program in " + file_);
  LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = ret, .func_name = func.c_str());
  uint64_t mark = LibbpfLogMark();
  errno = 0;
  bpf_link* link = bpf_program__attach_uprobe_opts(p, -1, path.c_str(), 0, &opts);
  if (link == nullptr) {
    int err = errno != 0 ? errno : EINVAL;
    Throw(env, "attach_uprobe", prog_name + " " + path + ":" + func, err,
          AttachErrorText(err, LibbpfLogSince(mark, kAttachLogBytes)));
  }
  uint32_t handle = next_uprobe_++;
  uprobes_.emplace(handle, link);
  return Napi::Number::New(env, handle);
}

// detachUprobe(handle): destroy one link made by attachUprobe(); false if unknown.
Napi::Value NativeObject::DetachUprobe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t handle = Integer(env, info[0], "handle", 0, UINT32_MAX);
  auto it = uprobes_.find(static_cast<uint32_t>(handle));
  if (it == uprobes_.end()) return Napi::Boolean::New(env, false);
  bpf_link__destroy(it->second);
  uprobes_.erase(it);
  return Napi::Boolean::New(env, true);
}

Napi::Value NativeObject::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t timeout = Integer(env, info[1], "pollTimeoutMs", -1, INT_MAX);
  int64_t max_batch = Integer(env, info[2], "maxBatchBytes", 1, INT_MAX);
  if (!info[3].IsFunction()) ThrowTypeError(env, "onBatch must be a function");
  if (!info[4].IsFunction()) ThrowTypeError(env, "onError must be a function");
  int64_t reuse = info.Length() > 5 && !info[5].IsUndefined() ? Integer(env, info[5], "reuseBatches", 0, 64) : 0;
  bpf_map* m = FindMap(env, "ringbuf", info[0]);
  std::string name = bpf_map__name(m);
  if (bpf_map__type(m) != BPF_MAP_TYPE_RINGBUF) {
    Throw(env, "ringbuf", name, EINVAL,
          "not a ring buffer map (type " + std::to_string(bpf_map__type(m)) + ")");
  }
  if (poller_) Throw(env, "ringbuf", name, EBUSY, "already started");
  poller_ = Poller::Start(env, bpf_map__fd(m), name, static_cast<int>(timeout),
                          static_cast<size_t>(max_batch), static_cast<size_t>(reuse),
                          info[3].As<Napi::Function>(),
                          info[4].As<Napi::Function>());
  // Re-register so our hook is newer than the ThreadSafeFunction's own cleanup hook: hooks
  // run newest first, so the poll thread is joined while the TSFN still exists.
  AddHook();
  return env.Undefined();
}

Napi::Value NativeObject::Stop(const Napi::CallbackInfo& info) {
  StopPoller();
  return info.Env().Undefined();
}

// recycle(batch): give a delivered batch back to the pool (see poller.h); false when it is not
// one of the pool's (or the poller is not running).
Napi::Value NativeObject::Recycle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) ThrowTypeError(env, "batch must be an ArrayBuffer");
  return Napi::Boolean::New(env, poller_ && poller_->Recycle(info[0].As<Napi::ArrayBuffer>()));
}

// setPaused(paused): stop / restart draining the ring buffer; a no-op when not started.
Napi::Value NativeObject::SetPaused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBoolean()) ThrowTypeError(env, "paused must be a boolean");
  if (poller_) poller_->SetPaused(info[0].As<Napi::Boolean>().Value());
  return env.Undefined();
}

Napi::Value NativeObject::MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array key = Bytes(env, info[1], "key");
  Napi::Uint8Array value = Bytes(env, info[2], "value");
  bpf_map* m = FindMap(env, "map_update", info[0]);
  std::string name = bpf_map__name(m);
  size_t stride, ncpus;
  CheckSize(env, "map_update", name, "key", key.ByteLength(), bpf_map__key_size(m));
  CheckSize(env, "map_update", name, "value", value.ByteLength(),
            ValueBytes(env, "map_update", name, m, &stride, &ncpus));
  int err = bpf_map__update_elem(m, key.Data(), key.ByteLength(), value.Data(),
                                 value.ByteLength(), BPF_ANY);
  if (err != 0) Throw(env, "map_update", name, err);
  return env.Undefined();
}

Napi::Value NativeObject::MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array key = Bytes(env, info[1], "key");
  bpf_map* m = FindMap(env, "map_delete", info[0]);
  std::string name = bpf_map__name(m);
  CheckSize(env, "map_delete", name, "key", key.ByteLength(), bpf_map__key_size(m));
  int err = bpf_map__delete_elem(m, key.Data(), key.ByteLength(), 0);
  if (err == -ENOENT) return Napi::Boolean::New(env, false);
  if (err != 0) Throw(env, "map_delete", name, err);
  return Napi::Boolean::New(env, true);
}

Napi::Value NativeObject::MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array key = Bytes(env, info[1], "key");
  bpf_map* m = FindMap(env, "map_lookup", info[0]);
  std::string name = bpf_map__name(m);
  CheckSize(env, "map_lookup", name, "key", key.ByteLength(), bpf_map__key_size(m));
  size_t stride, ncpus;
  size_t total = ValueBytes(env, "map_lookup", name, m, &stride, &ncpus);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, total);
  int err = bpf_map__lookup_elem(m, key.Data(), key.ByteLength(), ab.Data(), total, 0);
  if (err == -ENOENT) return env.Null();
  if (err != 0) Throw(env, "map_lookup", name, err);
  size_t vs = bpf_map__value_size(m);
  Napi::Array out = Napi::Array::New(env, ncpus);
  for (size_t i = 0; i < ncpus; i++) {
    out.Set(static_cast<uint32_t>(i), Napi::Uint8Array::New(env, vs, ab, i * stride));
  }
  return out;
}

Napi::Value NativeObject::MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_map* m = FindMap(env, "map_info", info[0]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::Number::New(env, bpf_map__type(m)));
  o.Set("keySize", Napi::Number::New(env, bpf_map__key_size(m)));
  o.Set("valueSize", Napi::Number::New(env, bpf_map__value_size(m)));
  o.Set("maxEntries", Napi::Number::New(env, bpf_map__max_entries(m)));
  return o;
}

Napi::Value NativeObject::ProgramStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnsureOpen(env, "prog_info", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, obj_) {
    std::string name = bpf_program__name(p);
    bpf_prog_info pi{};
    int fd = bpf_program__fd(p);
    if (fd >= 0) {  // not loaded (autoload off): all zero
      __u32 len = sizeof pi;
      int err = bpf_obj_get_info_by_fd(fd, &pi, &len);
      if (err != 0) Throw(env, "prog_info", name, err);
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("name", name);
    r.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(pi.run_time_ns)));
    r.Set("runCount", Napi::BigInt::New(env, static_cast<uint64_t>(pi.run_cnt)));
    r.Set("recursionMisses", Napi::BigInt::New(env, static_cast<uint64_t>(pi.recursion_misses)));
    out.Set(i++, r);
  }
  return out;
}

Napi::Value NativeObject::EnableStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EnsureOpen(env, "enable_stats", "");
  int err = 0;
  if (stats_fd_ < 0) {
    int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd >= 0) {
      stats_fd_ = fd;
    } else {
      err = errno != 0 ? errno : -fd;
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, err == 0));
  o.Set("errno", Napi::Number::New(env, err));
  return o;
}

Napi::Value NativeObject::Close(const Napi::CallbackInfo& info) {
  CloseAll();
  RemoveHook();
  return info.Env().Undefined();
}

}  // namespace sl

// poller.cc — ring buffer poll thread (see poller.h for ownership and stop semantics).
#include "poller.h"

#include <bpf/libbpf.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "errors.h"

namespace sl {

struct PollContext {
  Napi::FunctionReference on_batch;
  Napi::FunctionReference on_error;
  std::shared_ptr<std::atomic<bool>> cancelled;  // set by Poller::Stop: drop, don't call
  std::string map_name;
};

struct PollMsg {
  std::vector<uint8_t> bytes;  // a batch, or empty for an error
  int err = 0;                 // != 0: an error
};

namespace {

constexpr uint64_t kTagRing = 1;
constexpr uint64_t kTagStop = 2;
constexpr size_t kInitialReserve = 1 << 20;

inline void PutU32LE(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

}  // namespace

namespace {

// Call a JS callback from CallJs. A throw from it becomes a process 'uncaughtException'
// (napi_fatal_exception), as from an EventEmitter listener: letting it propagate out of a
// ThreadSafeFunction callback would only print a deprecation warning and lose it
// (Node-API < 10 does not enforce the uncaught-exception policy).
void Deliver(Napi::Env env, Napi::FunctionReference& fn, napi_value arg) {
  try {
    fn.Call({arg});
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

}  // namespace

// JS thread (or env == nullptr while the TSFN is torn down: only free the message).
void CallJs(Napi::Env env, Napi::Function /*unused*/, PollContext* ctx, PollMsg* raw) {
  std::unique_ptr<PollMsg> msg(raw);
  if (static_cast<napi_env>(env) == nullptr || ctx == nullptr || !msg) return;
  if (ctx->cancelled->load()) return;
  if (msg->err != 0) {
    Napi::Error e = MakeError(env, "ringbuf", ctx->map_name, msg->err);
    Deliver(env, ctx->on_error, e.Value());
    return;
  }
  // One copy into a V8-owned ArrayBuffer (no external buffers: works where they are banned).
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, msg->bytes.size());
  if (!msg->bytes.empty()) std::memcpy(ab.Data(), msg->bytes.data(), msg->bytes.size());
  msg.reset();
  Deliver(env, ctx->on_batch, ab);
}

std::unique_ptr<Poller> Poller::Start(Napi::Env env, int map_fd, const std::string& map_name,
                                      int poll_timeout_ms, size_t max_batch_bytes,
                                      Napi::Function on_batch, Napi::Function on_error) {
  std::unique_ptr<Poller> p(new Poller());
  p->map_name_ = map_name;
  p->timeout_ms_ = poll_timeout_ms;
  p->max_batch_ = max_batch_bytes;
  p->batch_.reserve(max_batch_bytes < kInitialReserve ? max_batch_bytes : kInitialReserve);

  p->rb_ = ring_buffer__new(map_fd, &Poller::OnSample, p.get(), nullptr);
  if (p->rb_ == nullptr) Throw(env, "ringbuf", map_name, errno);
  p->event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->event_fd_ < 0) Throw(env, "ringbuf", map_name, errno);
  p->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (p->epoll_fd_ < 0) Throw(env, "ringbuf", map_name, errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagRing;
  if (epoll_ctl(p->epoll_fd_, EPOLL_CTL_ADD, ring_buffer__epoll_fd(p->rb_), &ev) < 0) {
    Throw(env, "ringbuf", map_name, errno);
  }
  ev.data.u64 = kTagStop;
  if (epoll_ctl(p->epoll_fd_, EPOLL_CTL_ADD, p->event_fd_, &ev) < 0) {
    Throw(env, "ringbuf", map_name, errno);
  }
  // (Each Throw above destroys `p`, whose destructor frees what was created so far.)

  p->cancelled_ = std::make_shared<std::atomic<bool>>(false);
  auto* ctx = new PollContext{Napi::Persistent(on_batch), Napi::Persistent(on_error),
                              p->cancelled_, map_name};
  p->tsfn_ = PollTsfn::New(env, "sidelight.ringbuf", kQueueDepth, 1, ctx,
                           [](Napi::Env, void*, PollContext* c) { delete c; });
  try {
    p->thread_ = std::thread(&Poller::Run, p.get());
  } catch (const std::system_error& e) {
    p->ReleaseTsfn(true);
    Throw(env, "ringbuf", map_name, e.code().value());
  }
  return p;
}

void Poller::ReleaseTsfn(bool abort) {
  std::lock_guard<std::mutex> lock(tsfn_mu_);
  if (tsfn_released_ || static_cast<napi_threadsafe_function>(tsfn_) == nullptr) return;
  tsfn_released_ = true;
  if (abort) {
    tsfn_.Abort();
  } else {
    tsfn_.Release();
  }
}

void Poller::Wake() {
  if (event_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = write(event_fd_, &one, sizeof one);
  (void)n;  // EAGAIN only if already signalled
}

void Poller::SetPaused(bool paused) {
  if (stopped_) return;
  bool was = paused_.exchange(paused);
  if (was && !paused) Wake();
}

void Poller::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (cancelled_) cancelled_->store(true);
  stopping_.store(true);
  ReleaseTsfn(true);  // wakes a BlockingCall stuck on a full queue; drops queued batches
  Wake();
  if (thread_.joinable()) thread_.join();
  if (rb_ != nullptr) ring_buffer__free(rb_);
  rb_ = nullptr;
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (event_fd_ >= 0) close(event_fd_);
  epoll_fd_ = event_fd_ = -1;
}

Poller::~Poller() { Stop(); }

void Poller::Run() {
  pthread_setname_np(pthread_self(), "sl-ringbuf");
  epoll_event events[2];
  uint64_t drained = 0;
  while (!stopping_.load(std::memory_order_relaxed)) {
    if (paused_.load()) {
      // Paused by JS: wait for resume or stop only; the kernel ring keeps the records.
      pollfd pfd{event_fd_, POLLIN, 0};
      int n = poll(&pfd, 1, 1000);
      if (n < 0 && errno != EINTR) {
        Fail(errno);
        break;
      }
      if (n > 0) {
        ssize_t r = read(event_fd_, &drained, sizeof drained);
        (void)r;
      }
      continue;
    }
    int n = epoll_wait(epoll_fd_, events, 2, timeout_ms_);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(errno);
      break;
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.u64 == kTagStop) {  // stop or resume: the flags say which
        ssize_t r = read(event_fd_, &drained, sizeof drained);
        (void)r;
      }
    }
    if (stopping_.load()) break;
    int r = ring_buffer__consume(rb_);
    if (js_gone_ || stopping_.load()) break;
    if (r < 0) {
      Fail(r);
      break;
    }
    bool flushed = false;
    try {
      flushed = Flush();
    } catch (const std::bad_alloc&) {
      Fail(ENOMEM);
    }
    if (!flushed) break;
  }
  ReleaseTsfn(false);  // no-op if Stop() already aborted; else queued messages still go out
}

// Called by libbpf (C frames: nothing may be thrown through them) once per record.
int Poller::OnSample(void* ctx, void* data, size_t size) {
  auto* p = static_cast<Poller*>(ctx);
  if (p->stopping_.load(std::memory_order_relaxed)) return -ECANCELED;
  try {
    size_t need = 4 + size;
    if (!p->batch_.empty() && p->batch_.size() + need > p->max_batch_) {
      if (!p->Flush()) return -ECANCELED;
    }
    size_t at = p->batch_.size();
    p->batch_.resize(at + need);
    PutU32LE(p->batch_.data() + at, static_cast<uint32_t>(size));
    std::memcpy(p->batch_.data() + at + 4, data, size);
    if (p->batch_.size() >= p->max_batch_ && !p->Flush()) return -ECANCELED;
  } catch (const std::bad_alloc&) {
    return -ENOMEM;  // ends this consume; Run() reports it through onError
  }
  return 0;
}

bool Poller::Flush() {
  if (js_gone_) return false;
  if (batch_.empty()) return true;
  std::unique_ptr<PollMsg> msg(new PollMsg());
  msg->bytes.swap(batch_);
  if (tsfn_.BlockingCall(msg.get()) != napi_ok) {  // napi_closing: stopped or env teardown
    js_gone_ = true;
    return false;
  }
  msg.release();  // now owned by the queue: CallJs frees it
  batch_.reserve(max_batch_ < kInitialReserve ? max_batch_ : kInitialReserve);
  return true;
}

void Poller::Fail(int err) {
  if (js_gone_) return;
  auto* msg = new (std::nothrow) PollMsg();
  if (msg == nullptr) return;  // out of memory: nothing left to report with
  msg->err = err < 0 ? -err : (err == 0 ? EIO : err);
  if (tsfn_.BlockingCall(msg) != napi_ok) {
    delete msg;
    js_gone_ = true;
  }
}

}  // namespace sl

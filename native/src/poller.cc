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
#include <initializer_list>
#include <new>

#include "errors.h"

namespace sl {

struct BatchPool {
  size_t block_bytes = 0;  // each block's size: maxBatchBytes
  size_t max_blocks = 0;   // 0: no pool
  // JS thread only: the blocks made so far (index = block id) and their data
  std::vector<Napi::Reference<Napi::ArrayBuffer>> refs;
  std::vector<uint8_t*> data;
  // shared: block ids free to fill, and which are free (a double Recycle is refused)
  std::mutex mu;
  std::vector<int> free_ids;
  std::vector<bool> is_free;

  int Take() {  // poll thread
    std::lock_guard<std::mutex> lock(mu);
    if (free_ids.empty()) return -1;
    int id = free_ids.back();
    free_ids.pop_back();
    is_free[static_cast<size_t>(id)] = false;
    return id;
  }
  uint8_t* Data(int id) {  // poll thread, for an id it took (data[] only grows, under mu)
    std::lock_guard<std::mutex> lock(mu);
    return data[static_cast<size_t>(id)];
  }
};

struct PollContext {
  Napi::FunctionReference on_batch;
  Napi::FunctionReference on_error;
  std::shared_ptr<std::atomic<bool>> cancelled;  // set by Poller::Stop: drop, don't call
  std::string map_name;
  std::shared_ptr<BatchPool> pool;
};

struct PollMsg {
  int block = -1;                      // >= 0: the batch is in this pooled block
  std::unique_ptr<uint8_t[]> heap;     // else here (nullptr for an error)
  size_t len = 0;
  int err = 0;                         // != 0: an error
};

namespace {

constexpr uint64_t kTagRing = 1;
constexpr uint64_t kTagStop = 2;

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
void Deliver(Napi::Env env, Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
  try {
    fn.Call(args);
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
    Deliver(env, ctx->on_error, {e.Value()});
    return;
  }
  BatchPool& pool = *ctx->pool;
  size_t len = msg->len;
  Napi::ArrayBuffer ab;
  if (msg->block >= 0) {
    ab = pool.refs[static_cast<size_t>(msg->block)].Value();  // filled in place: no copy
  } else if (pool.refs.size() < pool.max_blocks && len <= pool.block_bytes) {
    // a new pooled block (V8-owned: no external buffers, which some embedders ban)
    ab = Napi::ArrayBuffer::New(env, pool.block_bytes);
    std::memcpy(ab.Data(), msg->heap.get(), len);
    std::lock_guard<std::mutex> lock(pool.mu);
    pool.refs.push_back(Napi::Persistent(ab));
    pool.data.push_back(static_cast<uint8_t*>(ab.Data()));
    pool.is_free.push_back(false);
  } else {
    ab = Napi::ArrayBuffer::New(env, len);
    if (len > 0) std::memcpy(ab.Data(), msg->heap.get(), len);
  }
  msg.reset();
  Deliver(env, ctx->on_batch, {ab, Napi::Number::New(env, static_cast<double>(len))});
}

std::unique_ptr<Poller> Poller::Start(Napi::Env env, int map_fd, const std::string& map_name,
                                      int poll_timeout_ms, size_t max_batch_bytes,
                                      size_t reuse_batches, Napi::Function on_batch,
                                      Napi::Function on_error) {
  std::unique_ptr<Poller> p(new Poller());
  p->map_name_ = map_name;
  p->timeout_ms_ = poll_timeout_ms;
  p->max_batch_ = max_batch_bytes;
  p->pool_ = std::make_shared<BatchPool>();
  p->pool_->block_bytes = max_batch_bytes;
  p->pool_->max_blocks = reuse_batches;

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
                              p->cancelled_, map_name, p->pool_};
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

bool Poller::Recycle(Napi::ArrayBuffer ab) {
  if (stopped_ || !pool_) return false;
  BatchPool& pool = *pool_;
  auto* d = static_cast<uint8_t*>(ab.Data());
  std::lock_guard<std::mutex> lock(pool.mu);
  for (size_t i = 0; i < pool.data.size(); i++) {
    if (pool.data[i] != d) continue;
    // the same backing store and still whole (a detached or transferred one is not taken)
    if (pool.is_free[i] || ab.ByteLength() != pool.block_bytes) return false;
    pool.is_free[i] = true;
    pool.free_ids.push_back(static_cast<int>(i));
    return true;
  }
  return false;
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
  if (pool_) {  // the thread is joined: only this (JS) thread touches the pool now
    std::lock_guard<std::mutex> lock(pool_->mu);
    pool_->refs.clear();
    pool_->data.clear();
    pool_->free_ids.clear();
    pool_->is_free.clear();
    pool_->max_blocks = 0;  // CallJs makes no more blocks (queued messages are dropped anyway)
  }
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
    int f = Flush();
    if (f == -ENOMEM) Fail(ENOMEM);
    if (f != 0) break;
  }
  ReleaseTsfn(false);  // no-op if Stop() already aborted; else queued messages still go out
}

// Poll thread: a batch to fill with room for `need` bytes: a free pooled block, else a heap
// buffer of maxBatchBytes (or `need`, for a record larger than that). False when out of memory.
bool Poller::Begin(size_t need) {
  fill_len_ = 0;
  if (need <= max_batch_) {
    int id = pool_->Take();
    if (id >= 0) {
      fill_block_ = id;
      fill_ = pool_->Data(id);
      fill_cap_ = max_batch_;
      return true;
    }
  }
  fill_block_ = -1;
  size_t cap = need > max_batch_ ? need : max_batch_;
  fill_heap_.reset(new (std::nothrow) uint8_t[cap]);  // not zeroed: only what is written is read
  if (!fill_heap_) return false;
  fill_ = fill_heap_.get();
  fill_cap_ = cap;
  return true;
}

// Called by libbpf (C frames: nothing may be thrown through them) once per record.
int Poller::OnSample(void* ctx, void* data, size_t size) {
  auto* p = static_cast<Poller*>(ctx);
  if (p->stopping_.load(std::memory_order_relaxed)) return -ECANCELED;
  size_t need = 4 + size;
  if (p->fill_ != nullptr && p->fill_len_ + need > p->fill_cap_) {
    int r = p->Flush();
    if (r != 0) return r;
  }
  if (p->fill_ == nullptr && !p->Begin(need)) return -ENOMEM;  // Run() reports it through onError
  uint8_t* at = p->fill_ + p->fill_len_;
  PutU32LE(at, static_cast<uint32_t>(size));
  std::memcpy(at + 4, data, size);
  p->fill_len_ += need;
  return p->fill_len_ >= p->max_batch_ ? p->Flush() : 0;
}

// Poll thread: hand the batch being filled (if any) to JS. 0, -ECANCELED once JS is gone, or
// -ENOMEM (nothing is thrown: this runs under libbpf's C frames).
int Poller::Flush() {
  if (js_gone_) return -ECANCELED;
  if (fill_ == nullptr || fill_len_ == 0) return 0;
  std::unique_ptr<PollMsg> msg(new (std::nothrow) PollMsg());
  if (!msg) return -ENOMEM;
  msg->block = fill_block_;
  msg->heap = std::move(fill_heap_);
  msg->len = fill_len_;
  fill_ = nullptr;
  fill_len_ = fill_cap_ = 0;
  fill_block_ = -1;
  if (tsfn_.BlockingCall(msg.get()) != napi_ok) {  // napi_closing: stopped or env teardown
    js_gone_ = true;
    return -ECANCELED;
  }
  msg.release();  // now owned by the queue: CallJs frees it
  return 0;
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

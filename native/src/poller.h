// poller.h — the ring buffer poll thread and its hand-off to JS.
//
// Owns: one libbpf ring_buffer, an epoll fd (ring buffer epoll fd + shutdown eventfd), the
// eventfd, the poll thread, one ThreadSafeFunction (queue of kQueueDepth batches), and the
// batch pool (below).
//
// Batch pool (reuse_batches > 0): up to that many ArrayBuffers of maxBatchBytes each are made
// once (on the JS thread, the first times no pooled one is free) and then refilled: JS gives
// one back with Recycle() when it is done with it, and the poll thread copies the next batch
// straight into it. A batch then costs one copy and no allocation (without the pool: a
// heap buffer on the poll thread, a new zeroed ArrayBuffer and a second copy on the JS
// thread, and both pages faulted in fresh). The pool holds Persistent references (JS thread
// only); the free list is shared with the poll thread under pool_mu_. While none is free the
// poll thread falls back to a heap buffer. Contract: after Recycle(ab), JS must not read ab
// (nor views of it) again: the poll thread overwrites it. onBatch gets (ab, length): a
// pooled ab is longer than its batch.
//
// Lifetime: created by NativeObject::Start (JS thread) which throws if setup fails; Stop()
// (JS thread, idempotent, also run by the destructor) ends it. The owning NativeObject must
// keep the ring buffer map alive (i.e. not close the bpf_object) until Stop() returned.
//
// Concurrency: the poll thread waits at most pollTimeoutMs in epoll_wait, then drains the
// ring with ring_buffer__consume, appending [u32 LE length][record] to a batch; a batch is
// handed to JS when it reaches maxBatchBytes or the ring is drained. BlockingCall on the
// bounded queue is the backpressure: while JS lags, records stay in the kernel ring and the
// BPF side counts what it cannot reserve.
//
// Pause: SetPaused(true) (JS thread) makes the poll thread stop draining the ring after the
// drain in progress; it then waits on the eventfd only, and records back up in the kernel
// ring exactly as with a full queue. SetPaused(false) wakes it. JS uses this to bound the
// batches it has accepted but not yet processed, while it processes them in time slices.
//
// Stop semantics: after Stop() returns, onBatch/onError are never called again. Batches
// (and a pending error) still queued for the JS thread are DROPPED, not delivered: Stop()
// aborts the ThreadSafeFunction (which also wakes a poll thread blocked on a full queue —
// the JS thread cannot drain it while it is inside Stop()), then joins the thread.
// A poll-thread error is reported once to onError and ends the thread; call stop()/close().
// A throw from onBatch/onError is raised as a process 'uncaughtException'.
// Out of memory on the poll thread is reported as ENOMEM, never thrown through libbpf.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct ring_buffer;

namespace sl {

struct PollContext;  // JS callbacks; owned by the ThreadSafeFunction (freed by its finalizer)
struct PollMsg;      // one batch or one error travelling to the JS thread
struct BatchPool;    // reusable batch ArrayBuffers (see "Batch pool" above)

void CallJs(Napi::Env env, Napi::Function unused, PollContext* ctx, PollMsg* msg);
using PollTsfn = Napi::TypedThreadSafeFunction<PollContext, PollMsg, CallJs>;

class Poller {
 public:
  static constexpr size_t kQueueDepth = 16;

  // JS thread. Throws a JS error (step 'ringbuf') if anything cannot be set up.
  static std::unique_ptr<Poller> Start(Napi::Env env, int map_fd, const std::string& map_name,
                                       int poll_timeout_ms, size_t max_batch_bytes,
                                       size_t reuse_batches, Napi::Function on_batch,
                                       Napi::Function on_error);
  // JS thread; idempotent.
  void Stop();
  // JS thread: stop / restart draining the ring (see "Pause" above).
  void SetPaused(bool paused);
  // JS thread: give a delivered batch back to the pool; false if `ab` is not one of it (or
  // is free already), and then nothing happens.
  bool Recycle(Napi::ArrayBuffer ab);
  ~Poller();

  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

 private:
  Poller() = default;
  void Run();                                        // poll thread body
  static int OnSample(void* ctx, void* data, size_t size);  // poll thread
  int Flush();                                       // poll thread: 0, -ECANCELED, -ENOMEM
  void Fail(int err);                                // poll thread: report to onError
  void ReleaseTsfn(bool abort);                      // any thread, once
  void Wake();                                       // any thread: signal the eventfd

  std::string map_name_;
  int timeout_ms_ = 0;
  size_t max_batch_ = 0;
  ring_buffer* rb_ = nullptr;
  int epoll_fd_ = -1;
  int event_fd_ = -1;
  std::thread thread_;
  bool stopped_ = false;  // JS thread only

  PollTsfn tsfn_;
  std::mutex tsfn_mu_;
  bool tsfn_released_ = false;                       // guarded by tsfn_mu_
  std::shared_ptr<std::atomic<bool>> cancelled_;     // shared with PollContext
  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};

  std::shared_ptr<BatchPool> pool_;  // shared with PollContext (CallJs registers blocks)

  // poll thread only: the batch being filled, in a pooled block (fill_block_ >= 0) or in
  // fill_heap_ (a fallback buffer of fill_cap_ bytes)
  uint8_t* fill_ = nullptr;
  size_t fill_len_ = 0;
  size_t fill_cap_ = 0;
  int fill_block_ = -1;
  std::unique_ptr<uint8_t[]> fill_heap_;
  bool js_gone_ = false;
  bool Begin(size_t need);  // poll thread: make room for a batch of at least `need` bytes
};

}  // namespace sl

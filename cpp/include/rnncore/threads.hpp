// The one owner of threads: a team of persistent workers that the calling thread joins.
//
// Why not OpenMP: an OpenMP region ends in a barrier that waits for every thread of the
// team, including one the OS has not even woken yet. On a 2-core VM that made more threads
// slower: a pool step of 64 LSTM(128) streams took 350 µs at 2 threads against 260 µs at 1
// with sleeping workers (OMP_WAIT_POLICY=PASSIVE), and 20x slower at 2 threads with another
// process busy beside it; spinning workers (ACTIVE) fixed the first and starved the other
// thread pools in the process (PyTorch's, onnxruntime's).
//
// Here the work items of a run are *claimed*, not assigned: the caller starts on item 0 at
// once and keeps claiming; a worker that wakes in time claims the next item, one that wakes
// late finds nothing left and goes back to waiting. The caller waits only for items already
// claimed and running, never for a thread to wake up, so a run is never slower than the
// caller alone by more than the cost of publishing it (a few atomics). Which thread computes
// an item never changes its numbers: each item is a fixed range of rows, columns or elements
// chosen before the run, exactly as OpenMP's static schedule had them.
//
// Between runs a worker spins briefly (RNNCORE_SPIN_US, default spin_us_default below), so
// the runs of one call (per op, per product of a backward pass) and the calls of a streaming
// loop find it awake, then sleeps on a condition variable: an idle process uses no CPU.
//
// One run at a time uses the team. A run started while another holds it (another Python
// thread's call, or a nested parallel_for inside an item) runs on its caller alone, which
// gives the same numbers; two Python threads calling at once thus each keep one core.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "rnncore/types.hpp"

namespace rnncore {

namespace detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// The CPUs this process may run on (its affinity mask), else the machine's.
inline int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(CPU_COUNT(&set), 1);
#endif
  return static_cast<int>(std::max(std::thread::hardware_concurrency(), 1u));
}

// OMP_NUM_THREADS's first number (the convention every CPU library reads), else the CPUs.
inline int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const long n = std::strtol(env, nullptr, 10);
    if (n > 0) return static_cast<int>(std::min<long>(n, 4096));
  }
  return available_cpus();
}

inline constexpr long spin_us_default = 200;

inline long spin_us() {
  static const long us = [] {
    const char* env = std::getenv("RNNCORE_SPIN_US");
    const long v = env ? std::strtol(env, nullptr, 10) : spin_us_default;
    return std::clamp<long>(v, 0, 100000);
  }();
  return us;
}

// A run: items [0, n) of fn. `claim` packs the run's number (high bits) with the next
// unclaimed item (low bits), so a worker claims an item with one compare-and-swap that
// fails if the run it read the fields of has ended: it never calls a finished run's fn.
class Team {
 public:
  static constexpr int item_bits = 24;
  static constexpr std::uint64_t item_mask = (std::uint64_t(1) << item_bits) - 1;
  static constexpr Index max_items = Index(item_mask);

  static Team& get() { return *instance(); }

  // Runs call(ctx, i) for every i in [0, n) on the caller and up to `helpers` workers;
  // returns once all are done, rethrowing the first exception an item threw. false (nothing
  // run) if the team is busy: the caller then runs the items itself.
  bool run(Index n, int helpers, void (*call)(void*, Index), void* ctx) {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    const auto t0 = Clock::now();
    if (t0 < paused_until_) {  // pausing (see learn): the caller alone
      busy_.store(false, std::memory_order_release);
      return false;
    }
    grow(helpers);
    call_.store(call, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    helpers_.store(helpers, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const std::uint64_t run_id = (claim_.load(std::memory_order_relaxed) >> item_bits) + 1;
    claim_.store(run_id << item_bits, std::memory_order_seq_cst);  // publishes the fields
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    const Index own = work(run_id);
    const auto t1 = Clock::now();
    // Wait for the items other threads claimed; they are running, not waiting to wake.
    for (long spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
      if (spins < 4096)
        cpu_relax();
      else
        std::this_thread::yield();  // a worker was preempted mid-item: give it the core
    }
    // Close the run: a worker still holding a claim of it (read before this store) fails its
    // compare-and-swap, and one reading it now sees no item left. Without this a worker that
    // read (run, n) could, once the next run's fields are written but before its claim is
    // published, claim item n of the next run with the old tag: run twice, counted twice.
    claim_.store((run_id << item_bits) | item_mask, std::memory_order_release);
    learn(own, n, t0, t1, Clock::now());
    std::exception_ptr error;
    std::swap(error, error_);
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  static Team*& instance() {
    static Team* team = [] {
#if defined(__linux__)
      // A forked child has none of the workers (only the forking thread survives) and may
      // inherit a held lock: it starts a fresh team. The old one is left, never freed.
      pthread_atfork(nullptr, nullptr, [] { instance() = new Team(); });
#endif
      return new Team();  // never destroyed: detached workers may still read it at exit
    }();
    return team;
  }

  // Claims and runs items of run `run_id` until none is left or the run has ended.
  Index work(std::uint64_t run_id) {
    Index ran = 0;
    std::uint64_t c = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((c >> item_bits) != run_id) return ran;
      const Index n = n_.load(std::memory_order_relaxed);
      auto* call = call_.load(std::memory_order_relaxed);
      void* ctx = ctx_.load(std::memory_order_relaxed);
      const Index i = static_cast<Index>(c & item_mask);
      if (i >= n) return ran;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
      ++ran;
      try {
        call(ctx, i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_release);
      c = claim_.load(std::memory_order_acquire);
    }
  }

  // When the cores are shared with other busy processes, a worker can claim an item and
  // then lose its core to them for a scheduler time slice (milliseconds) while the caller
  // waits: the run is then slower than the caller alone would have been. The caller knows
  // what it would have taken alone (its own items' time per item, times all the items), so
  // the team keeps an account of the time the workers saved (positive) or cost (negative),
  // capped at credit_cap so that past gains do not excuse new losses for long. When it goes
  // below zero the caller runs alone for a pause, doubled at each new loss that comes
  // within `calm` of the last pause (up to max_pause), back to min_pause after a calm
  // spell. A run whose items the caller ran all by itself (the workers woke too late for
  // it) cost nothing and counts neither way. The items are the same either way: only who
  // runs them changes, never the numbers.
  using Clock = std::chrono::steady_clock;
  static constexpr double credit_cap = 0.5e-3;  // seconds
  static constexpr Clock::duration min_pause = std::chrono::milliseconds(2),
                                   max_pause = std::chrono::milliseconds(200),
                                   calm = std::chrono::seconds(1);

  void learn(Index own, Index n, Clock::time_point t0, Clock::time_point t1, Clock::time_point t2) {
    if (own <= 0 || own >= n) return;
    const double alone = std::chrono::duration<double>(t1 - t0).count() * double(n) / double(own);
    credit_ =
        std::min(credit_ + alone - std::chrono::duration<double>(t2 - t0).count(), credit_cap);
    if (credit_ >= 0) return;
    pause_ = t2 - paused_until_ > calm ? min_pause : std::min(pause_ * 2, max_pause);
    paused_until_ = t2 + pause_;
    credit_ = 0;
  }

  // Starts workers up to `helpers`. One the system refuses to start (a thread limit) leaves
  // the team smaller: the caller runs what nobody claims.
  void grow(int helpers) {
    while (static_cast<int>(workers_) < helpers) {
      const int index = static_cast<int>(workers_);
      try {
        std::thread([this, index] { worker(index); }).detach();
      } catch (const std::system_error&) {
        return;
      }
      ++workers_;
    }
  }

  void worker(int index) {
    std::uint64_t seen = claim_.load(std::memory_order_acquire) >> item_bits;
    for (;;) {
      // Wait for a new run: spin for spin_us, then sleep until one is published.
      std::uint64_t now = claim_.load(std::memory_order_acquire) >> item_bits;
      const auto until = Clock::now() + std::chrono::microseconds(spin_us());
      for (int k = 0; now == seen; ++k) {
        cpu_relax();
        if ((k & 255) == 255 && Clock::now() >= until) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          wake_.wait(lock, [&] {
            now = claim_.load(std::memory_order_seq_cst) >> item_bits;
            return now != seen;
          });
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
          break;
        }
        now = claim_.load(std::memory_order_acquire) >> item_bits;
      }
      seen = now;
      if (index < helpers_.load(std::memory_order_relaxed)) work(now);
    }
  }

  std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> claim_{0};
  std::atomic<void (*)(void*, Index)> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<Index> n_{0};
  std::atomic<int> helpers_{0};
  std::atomic<Index> done_{0};
  std::atomic<int> sleepers_{0};
  // Read and written only by the run holding busy_.
  unsigned workers_ = 0;
  Clock::time_point paused_until_{};
  Clock::duration pause_ = min_pause;
  double credit_ = 0;  // seconds the workers saved, less what they cost
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace detail

// 0 means "not set": use the default (OMP_NUM_THREADS, else the CPUs this process may use).
inline std::atomic<int>& num_threads_setting() {
  static std::atomic<int> n{0};
  return n;
}

inline int get_num_threads() {
  const int n = num_threads_setting().load();
  if (n > 0) return n;
  static const int fallback = detail::default_threads();
  return fallback;
}

inline void set_num_threads(int n) { num_threads_setting().store(std::max(n, 0)); }

// Split `rows` into at most `threads` contiguous shards of near-equal size; fewer when the
// work would not pay for a thread. Returns the shard boundaries (size = shards + 1).
inline std::vector<Index> split_rows(Index rows, int threads, Index work_per_row) {
  // Below roughly 1 MFLOP per shard a thread costs more than it saves.
  constexpr Index min_work_per_shard = Index(1) << 19;
  Index shards = std::min<Index>(std::max(threads, 1), std::max<Index>(rows, 1));
  const double work = static_cast<double>(rows) * static_cast<double>(work_per_row);  // no overflow
  shards = std::min<Index>(
      shards, std::max<Index>(1, static_cast<Index>(std::min(work / min_work_per_shard, 1e9))));
  std::vector<Index> bounds(static_cast<size_t>(shards + 1));
  for (Index s = 0; s <= shards; ++s) bounds[static_cast<size_t>(s)] = rows * s / shards;
  return bounds;
}

// Run fn(i) for i in [0, n), spread over up to `threads` threads (the caller and
// threads - 1 workers of the team). Each index is run by exactly one thread, so no two
// threads write the same memory when fn(i) writes only index i's part. fn comes last so that
// a lambda body keeps the caller's indentation under clang-format.
template <class Fn>
void parallel_for(Index n, int threads, Fn&& fn) {
  const int helpers = static_cast<int>(std::min<Index>(std::max(threads, 1), n)) - 1;
  if (helpers > 0 && n <= detail::Team::max_items) {
    auto call = [](void* ctx, Index i) { (*static_cast<std::remove_reference_t<Fn>*>(ctx))(i); };
    if (detail::Team::get().run(n, helpers, call, const_cast<void*>(static_cast<const void*>(&fn))))
      return;
  }
  for (Index i = 0; i < n; ++i) fn(i);
}

}  // namespace rnncore

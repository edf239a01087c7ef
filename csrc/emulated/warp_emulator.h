// A 32-lane warp emulated on the host with one thread per lane, so the CUDA kernel's
// per-warp source (cuda/sae_warp.h) runs, unchanged, where no GPU exists.
//
// Each shuffle is a rendezvous of all 32 lanes. Lanes that do not meet at the same shuffle
// (another call site, kind or width; or a lane that returns while others wait) are the
// emulated form of a divergent __shfl_*_sync with a full mask, which on a GPU is undefined
// behaviour or a hang: here it is reported as an error in every lane, never a hang.
// A block is several such warps plus a barrier (the emulated __syncthreads) and shared
// memory, so the block-level schedules of cuda/sae_schedule.h run here too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sae {
namespace emu {

constexpr int kLanes = 32;

class WarpDivergence : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Shfl : int { Down, Up, Idx };

struct CallSite {
  Shfl kind;
  int param;  // delta for Down/Up; -1 for Idx (source lanes may differ per lane)
  int line;
  int width;  // sizeof the shuffled value
  bool operator==(const CallSite& o) const {
    return kind == o.kind && param == o.param && line == o.line && width == o.width;
  }
};

class WarpExchange {
 public:
  explicit WarpExchange(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  // Deposit this lane's value, wait for all 32, return the value of lane `src` (the
  // caller's own value when `src` is out of range, as __shfl_down/up_sync do).
  uint64_t exchange(int lane, uint64_t value, const CallSite& site, int src) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!error_.empty()) throw WarpDivergence(error_);
    if (exited_ > 0) fail(lane_at(lane, site) + " while " + std::to_string(exited_) +
                          " lane(s) had already returned");
    values_[lane] = value;
    sites_[lane] = site;
    arrived_mask_ |= 1ull << lane;
    const uint64_t gen = generation_;
    if (arrived_mask_ == (1ull << kLanes) - 1) {
      for (int l = 1; l < kLanes; ++l) {
        if (!(sites_[l] == sites_[0]))
          fail(lane_at(0, sites_[0]) + " but " + lane_at(l, sites_[l]));
      }
      std::memcpy(snapshot_, values_, sizeof(values_));
      arrived_mask_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      const bool done = cv_.wait_for(lock, timeout_, [&] {
        return generation_ != gen || !error_.empty();
      });
      if (!error_.empty()) throw WarpDivergence(error_);
      if (!done) fail(lane_at(lane, site) + ": timed out waiting for the other lanes");
    }
    return (src >= 0 && src < kLanes) ? snapshot_[src] : value;
  }

  // A lane returned from the warp function (normally or by an exception).
  void lane_exit(int lane) {
    std::lock_guard<std::mutex> lock(mu_);
    ++exited_;
    if (arrived_mask_ != 0 && error_.empty()) {
      int waiting = 0;
      for (int l = 0; l < kLanes; ++l) waiting += (arrived_mask_ >> l) & 1;
      error_ = "warp divergence: lane " + std::to_string(lane) + " returned while " +
               std::to_string(waiting) + " lane(s) wait at a shuffle (first: " +
               lane_at(first_waiting(), sites_[first_waiting()]) + ")";
      cv_.notify_all();
    }
  }

  void set_error(const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty()) error_ = msg;
    cv_.notify_all();
  }

  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    if (error_.empty()) error_ = "warp divergence: " + what;
    cv_.notify_all();
    throw WarpDivergence(error_);
  }
  static std::string lane_at(int lane, const CallSite& s) {
    static const char* names[] = {"shfl_down", "shfl_up", "shfl_idx"};
    return "lane " + std::to_string(lane) + " at " + names[int(s.kind)] + " (line " +
           std::to_string(s.line) + ")";
  }
  int first_waiting() const {
    for (int l = 0; l < kLanes; ++l)
      if ((arrived_mask_ >> l) & 1) return l;
    return 0;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::milliseconds timeout_;
  uint64_t values_[kLanes] = {};
  uint64_t snapshot_[kLanes] = {};
  CallSite sites_[kLanes] = {};
  uint64_t arrived_mask_ = 0;
  uint64_t generation_ = 0;
  int exited_ = 0;
  std::string error_;
};

// The Warp interface of cuda/sae_warp.h, for one emulated lane. The default `line`
// argument records the caller's source line, so lanes at different shuffles are told apart.
class EmulatedWarp {
 public:
  EmulatedWarp(WarpExchange& ex, int lane) : ex_(ex), lane_(lane) {}
  int lane() const { return lane_; }

  template <typename T>
  T shfl_down(T v, int delta, int line = __builtin_LINE()) {
    return exchange(v, CallSite{Shfl::Down, delta, line, int(sizeof(T))}, lane_ + delta);
  }
  template <typename T>
  T shfl_up(T v, int delta, int line = __builtin_LINE()) {
    return exchange(v, CallSite{Shfl::Up, delta, line, int(sizeof(T))}, lane_ - delta);
  }
  template <typename T>
  T shfl_idx(T v, int src, int line = __builtin_LINE()) {
    return exchange(v, CallSite{Shfl::Idx, -1, line, int(sizeof(T))}, src & (kLanes - 1));
  }

 private:
  template <typename T>
  T exchange(T v, const CallSite& site, int src) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffled values are at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    const uint64_t got = ex_.exchange(lane_, bits, site, src);
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
  }
  WarpExchange& ex_;
  int lane_;
};

// A barrier over every thread of an emulated block: the emulated __syncthreads. Threads
// that do not all arrive (one returned while others wait, or a wait that outlasts the
// timeout, e.g. some lanes stuck at a shuffle while others wait here) are reported as an
// error in every thread, never a hang.
class BlockBarrier {
 public:
  BlockBarrier(int threads, std::chrono::milliseconds timeout) : threads_(threads), timeout_(timeout) {}

  void arrive(int thread, int line) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!error_.empty()) throw WarpDivergence(error_);
    if (exited_ > 0)
      fail("thread " + std::to_string(thread) + " at sync (line " + std::to_string(line) +
           ") while " + std::to_string(exited_) + " thread(s) had already returned");
    const uint64_t gen = generation_;
    if (++arrived_ == threads_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    const bool done = cv_.wait_for(lock, timeout_, [&] { return generation_ != gen || !error_.empty(); });
    if (!error_.empty()) throw WarpDivergence(error_);
    if (!done)
      fail("thread " + std::to_string(thread) + " at sync (line " + std::to_string(line) +
           "): timed out waiting for the block's other threads");
  }

  void thread_exit(int thread) {
    std::lock_guard<std::mutex> lock(mu_);
    ++exited_;
    if (arrived_ > 0 && error_.empty()) {
      error_ = "block divergence: thread " + std::to_string(thread) + " returned while " +
               std::to_string(arrived_) + " thread(s) wait at a sync";
      cv_.notify_all();
    }
  }

  void set_error(const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty()) error_ = msg;
    cv_.notify_all();
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    if (error_.empty()) error_ = "block divergence: " + what;
    cv_.notify_all();
    throw WarpDivergence(error_);
  }
  std::mutex mu_;
  std::condition_variable cv_;
  const int threads_;
  std::chrono::milliseconds timeout_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  int exited_ = 0;
  std::string error_;
};

// The Block interface of cuda/sae_schedule.h for one emulated thread.
class EmulatedBlock {
 public:
  EmulatedBlock(BlockBarrier& bar, void* shared, int warp, int warps, int64_t block, int64_t blocks)
      : bar_(bar), shared_(shared), warp_(warp), warps_(warps), block_(block), blocks_(blocks) {}
  int warp_index() const { return warp_; }
  int num_warps() const { return warps_; }
  int64_t block_index() const { return block_; }
  int64_t num_blocks() const { return blocks_; }
  void* shared() const { return shared_; }
  void sync(int line = __builtin_LINE()) { bar_.arrive(thread_, line); }
  void set_thread(int t) { thread_ = t; }

 private:
  BlockBarrier& bar_;
  void* shared_;
  int warp_, warps_;
  int64_t block_, blocks_;
  int thread_ = 0;
};

// Runs fn(warp, block) on every thread of block `block` of a grid of `blocks` blocks of
// `warps` emulated warps, with `shared_bytes` of zeroed shared memory. Throws
// WarpDivergence when lanes miss a shuffle or threads miss a sync; rethrows the first other
// exception a thread raised.
template <class Fn>
void run_block(int warps, int64_t block, int64_t blocks, size_t shared_bytes, Fn&& fn,
               std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  std::vector<std::unique_ptr<WarpExchange>> exchanges;
  for (int w = 0; w < warps; ++w) exchanges.emplace_back(new WarpExchange(timeout));
  BlockBarrier barrier(warps * kLanes, timeout);
  std::vector<uint64_t> shared((shared_bytes + 7) / 8 + 1, 0);
  const int n = warps * kLanes;
  std::vector<std::exception_ptr> errors(n);
  const auto fail_all = [&](const std::string& msg) {
    for (auto& ex : exchanges) ex->set_error(msg);
    barrier.set_error(msg);
  };
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const int w = i / kLanes, l = i % kLanes;
      EmulatedWarp warp(*exchanges[w], l);
      EmulatedBlock blk(barrier, shared.data(), w, warps, block, blocks);
      blk.set_thread(i);
      try {
        fn(warp, blk);
      } catch (const WarpDivergence& e) {
        fail_all(e.what());  // the other warps must not wait for this one
      } catch (...) {
        errors[i] = std::current_exception();
        fail_all("thread " + std::to_string(i) + " raised an exception");
      }
      exchanges[w]->lane_exit(l);
      barrier.thread_exit(i);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (auto& ex : exchanges) {
    const std::string err = ex->error();
    if (!err.empty()) throw WarpDivergence(err);
  }
}

// Runs fn(warp) on 32 emulated lanes (a block of one warp). Throws WarpDivergence if the
// lanes did not meet at every shuffle, and rethrows the first other exception a lane raised.
template <class Fn>
void run_warp(Fn&& fn, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  run_block(1, 0, 1, 0, [&](EmulatedWarp& warp, EmulatedBlock&) { fn(warp); }, timeout);
}

}  // namespace emu
}  // namespace sae

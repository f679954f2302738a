// Counter-based Philox4x32-10 (Salmon et al., SC'11), usable on host and device.
// The CPU and CUDA kernels both draw from it, keyed by a per-call seed and indexed by
// (column, draw), so a column's randomness does not depend on thread scheduling.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace wtc {

struct Philox4x32 {
  uint32_t key0, key1;  // the seed
  uint32_t c1, c2, c3;  // fixed counter words: the stream (column) and the call's offset

  WTC_HOST_DEVICE Philox4x32(uint64_t seed, uint32_t stream, uint64_t offset)
      : key0(static_cast<uint32_t>(seed)),
        key1(static_cast<uint32_t>(seed >> 32)),
        c1(stream),
        c2(static_cast<uint32_t>(offset)),
        c3(static_cast<uint32_t>(offset >> 32)) {}

  WTC_HOST_DEVICE static uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
    const uint64_t p = static_cast<uint64_t>(a) * b;
    *hi = static_cast<uint32_t>(p >> 32);
    return static_cast<uint32_t>(p);
  }

  // Four 32-bit random words for block number `counter` of this stream.
  WTC_HOST_DEVICE void block(uint32_t counter, uint32_t out[4]) const {
    uint32_t x0 = counter, x1 = c1, x2 = c2, x3 = c3;
    uint32_t k0 = key0, k1 = key1;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
      uint32_t hi0, hi1;
      const uint32_t lo0 = mulhilo(0xD2511F53u, x0, &hi0);
      const uint32_t lo1 = mulhilo(0xCD9E8D57u, x2, &hi1);
      x0 = hi1 ^ x1 ^ k0;
      x1 = lo1;
      x2 = hi0 ^ x3 ^ k1;
      x3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
  }
};

// A fast sequential generator for one CPU column: SplitMix64 (Steele et al., 2014). Column c
// reads the one SplitMix64 sequence of the call's seed from position c * 2^32 on, so streams
// never overlap (fewer than 2^32 draws a column) and starting one costs nothing.
struct SplitMixStream {
  uint64_t state;
  uint32_t spare = 0;
  bool has_spare = false;

  inline SplitMixStream(uint64_t seed, uint32_t stream, uint64_t offset)
      : state(seed + 0x9E3779B97F4A7C15ull * ((static_cast<uint64_t>(stream) << 32) + offset)) {}

  inline uint64_t next64() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  inline uint32_t next() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const uint64_t r = next64();
    spare = static_cast<uint32_t>(r >> 32);
    has_spare = true;
    return static_cast<uint32_t>(r);
  }

  // Uniform integer in [0, n), n >= 1, without bias (Lemire's multiply-and-reject).
  inline uint32_t below(uint32_t n) {
    uint64_t m = static_cast<uint64_t>(next()) * n;
    uint32_t low = static_cast<uint32_t>(m);
    if (low < n) {
      const uint32_t threshold = (0u - n) % n;
      while (low < threshold) {
        m = static_cast<uint64_t>(next()) * n;
        low = static_cast<uint32_t>(m);
      }
    }
    return static_cast<uint32_t>(m >> 32);
  }
};

}  // namespace wtc

// A radix sort of one strided float32 or float64 sample (values and the rows they came from), for
// the CPU kernels that sort inside the kernel (the sorted-CDF Wasserstein ops).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace wtc {

// Order-preserving maps of floats to unsigned keys (sign bit flipped; negatives inverted).
inline uint64_t sortable_key(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits >> 63) ? ~bits : (bits | (uint64_t{1} << 63));
}
inline uint32_t sortable_key(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits >> 31) ? ~bits : (bits | (uint32_t{1} << 31));
}

// Rounds to float32 monotonically; out-of-range values saturate to +-inf (a plain cast of those
// is undefined behaviour).
template <typename T>
inline float to_float_key(T v) {
  constexpr T top = static_cast<T>(std::numeric_limits<float>::max());
  return v > top ? std::numeric_limits<float>::infinity()
                 : v < -top ? -std::numeric_limits<float>::infinity() : static_cast<float>(v);
}

// LSD radix sort of one strided sample on 11-bit digits, skipping digits all keys share:
// several times faster than std::sort (or at::sort) at the sizes here. float64 samples are
// sorted on float32 keys (rounding is monotonic, so only values sharing a float32 key can be
// out of order) and then put right by an insertion pass; if that pass has too much to do
// (many distinct values per float32, e.g. beyond its range) the full 64-bit sort runs instead.
template <typename T>
struct RadixSorter {
  std::vector<uint64_t> items, items_tmp;  // 32-bit key << 32 | row
  std::vector<uint64_t> k64, k64_tmp;
  std::vector<int32_t> rows_tmp;
  std::vector<int64_t> counts = std::vector<int64_t>((1 << 11) + 1);
  explicit RadixSorter(int64_t N) : items(N), items_tmp(N), rows_tmp(N) {}

  // values ascending, and the positions (0..N-1) they came from.
  void sort(const T* x, int64_t N, int64_t stride, T* values, int32_t* rows) {
    if (static_cast<int64_t>(items.size()) < N) {
      items.resize(N);
      items_tmp.resize(N);
      rows_tmp.resize(N);
    }
    if constexpr (sizeof(T) == 8) {
      // First try 24-bit keys on a linear scale between the sample's extremes (two passes);
      // rounding is monotonic, so only values sharing a key can be out of order.
      if (radix_linear24(x, N, stride, rows)) {
        for (int64_t i = 0; i < N; ++i) values[i] = x[static_cast<int64_t>(rows[i]) * stride];
        if (insertion_fix(values, rows, N, /*budget=*/N)) return;
      }
    }
    radix32(x, N, stride, rows);
    for (int64_t i = 0; i < N; ++i) values[i] = x[static_cast<int64_t>(rows[i]) * stride];
    if constexpr (sizeof(T) == 8) {
      if (!insertion_fix(values, rows, N, /*budget=*/N)) {
        if (static_cast<int64_t>(k64.size()) < N) {
          k64.resize(N);
          k64_tmp.resize(N);
        }
        radix(x, N, stride, rows, k64, k64_tmp, [](T v) { return sortable_key(v); });
        for (int64_t i = 0; i < N; ++i) values[i] = x[static_cast<int64_t>(rows[i]) * stride];
      }
    }
  }

 private:
  // Keys floor((v - min) * (2^24 - 1) / (max - min)) sorted on two 12-bit digits: for samples
  // without far outliers (codes) nearly every value gets its own key, in a pass fewer than the
  // float32 keys need. False (nothing sorted) when the extremes do not give a finite scale.
  bool radix_linear24(const T* x, int64_t N, int64_t stride, int32_t* rows) {
    constexpr uint32_t kTop = (1u << 24) - 1;
    if (N < 2) return false;
    T lo = x[0], hi = x[0];
    for (int64_t i = 1; i < N; ++i) {
      const T v = x[i * stride];
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    const double low = static_cast<double>(lo);
    const double scale = static_cast<double>(kTop) / (static_cast<double>(hi) - low);
    if (!(scale > 0) || !std::isfinite(scale)) return false;
    radix_packed<2, 12>(x, N, stride, rows, [=](T v) {
      const double scaled = (static_cast<double>(v) - low) * scale;
      return scaled < kTop ? static_cast<uint32_t>(scaled) : kTop;
    });
    return true;
  }

  // Keys: the float32 image of each value (three 11-bit digits).
  void radix32(const T* x, int64_t N, int64_t stride, int32_t* rows) {
    radix_packed<3, 11>(x, N, stride, rows, [](T v) { return sortable_key(to_float_key(v)); });
  }

  // LSD radix sort on a 32-bit key per value, its row packed below it so that a pass moves one
  // word, and every digit's counts taken in one read of the keys; passes all keys share a digit
  // in are skipped.
  template <int kPasses, int kBits, typename KeyFn>
  void radix_packed(const T* x, int64_t N, int64_t stride, int32_t* rows, KeyFn key_of) {
    constexpr uint32_t kMask = (1u << kBits) - 1;
    uint32_t count[kPasses][(1 << kBits) + 1] = {};
    uint64_t* cur = items.data();
    uint64_t* tmp = items_tmp.data();
    for (int64_t i = 0; i < N; ++i) {
      const uint32_t key = key_of(x[i * stride]);
      cur[i] = (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(i);
      for (int pass = 0; pass < kPasses; ++pass) ++count[pass][((key >> (pass * kBits)) & kMask) + 1];
    }
    for (int pass = 0; pass < kPasses; ++pass) {
      const int shift = 32 + pass * kBits;
      uint32_t* c = count[pass];
      if (N == 0 || c[((cur[0] >> shift) & kMask) + 1] == static_cast<uint32_t>(N)) continue;
      for (uint32_t b = 0; b < (1u << kBits); ++b) c[b + 1] += c[b];
      for (int64_t i = 0; i < N; ++i) tmp[c[(cur[i] >> shift) & kMask]++] = cur[i];
      std::swap(cur, tmp);
    }
    for (int64_t i = 0; i < N; ++i) rows[i] = static_cast<int32_t>(cur[i] & 0xffffffffu);
  }

  template <typename Key, typename KeyFn>
  void radix(const T* x, int64_t N, int64_t stride, int32_t* rows, std::vector<Key>& keys,
             std::vector<Key>& keys_tmp, KeyFn key) {
    for (int64_t i = 0; i < N; ++i) {
      keys[i] = key(x[i * stride]);
      rows[i] = static_cast<int32_t>(i);
    }
    int32_t* cur_rows = rows;
    int32_t* tmp_rows = rows_tmp.data();
    Key* cur = keys.data();
    Key* tmp = keys_tmp.data();
    constexpr int kBits = 11;  // 3 passes for 32-bit keys: a quarter faster than 4 of 8 bits
    constexpr Key kMask = (Key{1} << kBits) - 1;
    int64_t* count = counts.data();
    for (int shift = 0; shift < static_cast<int>(8 * sizeof(Key)); shift += kBits) {
      std::fill(counts.begin(), counts.end(), 0);
      for (int64_t i = 0; i < N; ++i) ++count[((cur[i] >> shift) & kMask) + 1];
      if (N == 0 || count[((cur[0] >> shift) & kMask) + 1] == N) continue;  // a no-op pass
      for (int b = 0; b < (1 << kBits); ++b) count[b + 1] += count[b];
      for (int64_t i = 0; i < N; ++i) {
        const int64_t dst = count[(cur[i] >> shift) & kMask]++;
        tmp[dst] = cur[i];
        tmp_rows[dst] = cur_rows[i];
      }
      std::swap(cur, tmp);
      std::swap(cur_rows, tmp_rows);
    }
    if (cur_rows != rows) std::copy(cur_rows, cur_rows + N, rows);
  }

  // Stable insertion sort of a nearly sorted sample; false once more than budget moves.
  static bool insertion_fix(T* values, int32_t* rows, int64_t N, int64_t budget) {
    for (int64_t i = 1; i < N; ++i) {
      if (!(values[i] < values[i - 1])) continue;
      const T v = values[i];
      const int32_t r = rows[i];
      int64_t j = i;
      while (j > 0 && v < values[j - 1]) {
        values[j] = values[j - 1];
        rows[j] = rows[j - 1];
        --j;
        if (--budget < 0) return false;
      }
      values[j] = v;
      rows[j] = r;
    }
    return true;
  }
};

}  // namespace wtc

// Exact 1-D Wasserstein-1 distance between two sorted samples by one merge of their CDFs:
// W1 = integral |F - G|, accumulated segment by segment in double precision. Host and device.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace wtc {

// a[0..n) and b[0..m) ascending; wa/wb optional weights (nullptr: uniform) with totals
// wa_total/wb_total. When grad_a/grad_b are given, they receive d W1 / d a[i] (and b[j]) times
// grad_scale: |F - G| just before the point minus |F - G| just after it.
template <typename T>
WTC_HOST_DEVICE double merge_w1(const T* a, const T* wa, int64_t n, double wa_total, const T* b,
                                const T* wb, int64_t m, double wb_total, T* grad_a, T* grad_b,
                                double grad_scale) {
  if (n == 0 || m == 0) return NAN;
  double F = 0, G = 0, result = 0;
  double cum_a = 0, cum_b = 0;
  // Reciprocals: a division per step would cost more than the rest of the step.
  const double inv_a = 1.0 / (wa ? wa_total : static_cast<double>(n));
  const double inv_b = 1.0 / (wb ? wb_total : static_cast<double>(m));
  int64_t i = 0, j = 0;
  double prev = static_cast<double>(a[0] < b[0] ? a[0] : b[0]);
  while (i < n || j < m) {
    const bool take_a = j >= m || (i < n && !(b[j] < a[i]));
    const double x = static_cast<double>(take_a ? a[i] : b[j]);
    const double before = fabs(F - G);
    result += before * (x - prev);
    if (take_a) {
      cum_a += wa ? static_cast<double>(wa[i]) : 1.0;
      F = cum_a * inv_a;
      if (grad_a) grad_a[i] = static_cast<T>((before - fabs(F - G)) * grad_scale);
      ++i;
    } else {
      cum_b += wb ? static_cast<double>(wb[j]) : 1.0;
      G = cum_b * inv_b;
      if (grad_b) grad_b[j] = static_cast<T>((before - fabs(F - G)) * grad_scale);
      ++j;
    }
    prev = x;
  }
  return result;
}

}  // namespace wtc

// wtc_ext::wasserstein_1d and wtc_ext::conditional_wasserstein: schemas, shared glue, CPU kernels.
//
// Both are sorted-CDF algorithms: sort each sample once, then one merge of the two CDFs gives
// the exact W1 = integral |F - G| (what scipy.stats.wasserstein_distance computes). For the
// conditional distances of the WDG metric, each column is sorted once; walking it in sorted order
// and placing each value at its label's running count splits it into per-label samples that are
// already sorted, so every (column, factor, label) distance costs one merge.
#include "wasserstein/wasserstein.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/thread_buffer.h"
#include "permute_dims/permute_dims.h"
#include "wasserstein/merge_w1.h"

namespace wtc {

void check_wasserstein_1d_args(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights) {
  TORCH_CHECK_VALUE(u.dim() == 2 && v.dim() == 2 && u.size(0) == v.size(0),
                    "wasserstein_1d: expected u (R, n) and v (R, m) with the same R, got ",
                    u.sizes(), " and ", v.sizes());
  TORCH_CHECK_VALUE(u.scalar_type() == v.scalar_type() &&
                        (u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble),
                    "wasserstein_1d: expected u and v both float32 or both float64, got ",
                    u.scalar_type(), " and ", v.scalar_type());
  TORCH_CHECK_VALUE(u.device() == v.device(), "wasserstein_1d: u and v must be on the same "
                    "device, got ", u.device(), " and ", v.device());
  if (u_weights.has_value()) {
    TORCH_CHECK_VALUE(u_weights->sizes() == u.sizes() && u_weights->device() == u.device() &&
                          u_weights->scalar_type() == u.scalar_type(),
                      "wasserstein_1d: u_weights must match u's shape, device and dtype");
  }
  if (v_weights.has_value()) {
    TORCH_CHECK_VALUE(v_weights->sizes() == v.sizes() && v_weights->device() == v.device() &&
                          v_weights->scalar_type() == v.scalar_type(),
                      "wasserstein_1d: v_weights must match v's shape, device and dtype");
  }
}

void check_conditional_args(const at::Tensor& z, const at::Tensor& labels,
                            const std::optional<at::Tensor>& reference,
                            const std::optional<at::Tensor>& reference_index,
                            int64_t num_classes, bool permuted, bool check_label_range) {
  TORCH_CHECK_VALUE(static_cast<int>(reference.has_value()) +
                            static_cast<int>(reference_index.has_value()) +
                            static_cast<int>(permuted) <= 1,
                    "conditional_wasserstein: pass at most one of reference, reference_index and "
                    "permuted");
  if (reference_index.has_value()) {
    TORCH_CHECK_VALUE(reference_index->sizes() == z.sizes() &&
                          reference_index->scalar_type() == at::kLong &&
                          reference_index->device() == z.device(),
                      "conditional_wasserstein: reference_index must be int64 of z's shape ",
                      z.sizes(), " on z's device, got ", reference_index->scalar_type(), " ",
                      reference_index->sizes());
  }
  TORCH_CHECK_VALUE(z.dim() == 2, "conditional_wasserstein: expected z of shape (N, d), got ",
                    z.sizes());
  TORCH_CHECK_VALUE(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
                    "conditional_wasserstein: expected z float32 or float64, got ",
                    z.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == z.size(0) &&
                        labels.scalar_type() == at::kLong && labels.device() == z.device(),
                    "conditional_wasserstein: expected int64 labels of shape (N, K) = (",
                    z.size(0), ", K) on z's device, got ", labels.scalar_type(), " ",
                    labels.sizes(), " on ", labels.device());
  TORCH_CHECK_VALUE(num_classes >= 1, "conditional_wasserstein: num_classes must be >= 1");
  if (reference.has_value()) {
    TORCH_CHECK_VALUE(reference->sizes() == z.sizes() && reference->device() == z.device() &&
                          reference->scalar_type() == z.scalar_type(),
                      "conditional_wasserstein: reference must match z's shape, device and "
                      "dtype, got ", reference->sizes());
  }
  // A finite sum means every value is finite (NaN and inf propagate); only a non-finite sum,
  // which an overflow can also give, needs the elementwise pass.
  auto all_finite = [](const at::Tensor& t) {
    return at::isfinite(t.sum()).item<bool>() || at::isfinite(t).all().item<bool>();
  };
  if (z.numel() > 0) {
    TORCH_CHECK_VALUE(all_finite(z), "conditional_wasserstein: z has NaN or infinite values");
    if (reference.has_value()) {
      TORCH_CHECK_VALUE(all_finite(*reference),
                        "conditional_wasserstein: reference has NaN or infinite values");
    }
  }
  if (check_label_range && labels.numel() > 0) {
    const auto [low, high] = at::aminmax(labels);
    TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < num_classes,
                      "conditional_wasserstein: labels must lie in [0, num_classes = ",
                      num_classes, ")");
  }
}

namespace {

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

// W1 of every row of u (R, n) against v (R, m), sorting each row in the kernel; with grad, also
// the per-element derivatives (times grad[r]) in the original element order.
at::Tensor w1_rows_cpu(const at::Tensor& u_in, const at::Tensor& v_in,
                       const std::optional<at::Tensor>& u_weights,
                       const std::optional<at::Tensor>& v_weights, const at::Tensor& grad,
                       at::Tensor* grad_u, at::Tensor* grad_v) {
  check_wasserstein_1d_args(u_in, v_in, u_weights, v_weights);
  const at::Tensor u = u_in.contiguous(), v = v_in.contiguous();
  const at::Tensor uw = u_weights.has_value() ? u_weights->contiguous() : at::Tensor();
  const at::Tensor vw = v_weights.has_value() ? v_weights->contiguous() : at::Tensor();
  const int64_t R = u.size(0), n = u.size(1), m = v.size(1);
  TORCH_CHECK_VALUE(n <= std::numeric_limits<int32_t>::max() &&
                        m <= std::numeric_limits<int32_t>::max(),
                    "wasserstein_1d: at most 2^31 - 1 samples per row");
  at::Tensor out = at::empty({R}, u.options());
  if (grad_u) *grad_u = at::zeros_like(u);
  if (grad_v) *grad_v = at::zeros_like(v);
  if (R == 0) return out;
  if (n == 0 || m == 0) return out.fill_(NAN);
  const at::Tensor g = grad.defined() ? grad.contiguous() : grad;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "wasserstein_1d_cpu", [&] {
    const scalar_t* pu = u.const_data_ptr<scalar_t>();
    const scalar_t* pv = v.const_data_ptr<scalar_t>();
    const scalar_t* puw = uw.defined() ? uw.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* pvw = vw.defined() ? vw.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* pg = g.defined() ? g.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* pgu = grad_u ? grad_u->data_ptr<scalar_t>() : nullptr;
    scalar_t* pgv = grad_v ? grad_v->data_ptr<scalar_t>() : nullptr;
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, std::max<int64_t>(1, 8192 / (n + m)), [&](int64_t begin, int64_t end) {
      RadixSorter<scalar_t> sorter(std::max(n, m));
      std::vector<scalar_t> us(n), vs(m), uws(puw ? n : 0), vws(pvw ? m : 0);
      std::vector<scalar_t> gus(pgu ? n : 0), gvs(pgv ? m : 0);
      std::vector<int32_t> ui(n), vi(m);
      for (int64_t r = begin; r < end; ++r) {
        sorter.sort(pu + r * n, n, 1, us.data(), ui.data());
        sorter.sort(pv + r * m, m, 1, vs.data(), vi.data());
        double tu = static_cast<double>(n), tv = static_cast<double>(m);
        if (puw) {
          tu = 0;
          for (int64_t i = 0; i < n; ++i) {
            uws[i] = puw[r * n + ui[i]];
            tu += static_cast<double>(uws[i]);
          }
        }
        if (pvw) {
          tv = 0;
          for (int64_t i = 0; i < m; ++i) {
            vws[i] = pvw[r * m + vi[i]];
            tv += static_cast<double>(vws[i]);
          }
        }
        po[r] = static_cast<scalar_t>(merge_w1<scalar_t>(
            us.data(), puw ? uws.data() : nullptr, n, tu, vs.data(), pvw ? vws.data() : nullptr, m,
            tv, pgu ? gus.data() : nullptr, pgv ? gvs.data() : nullptr,
            pg ? static_cast<double>(pg[r]) : 0.0));
        if (pgu) {
          for (int64_t i = 0; i < n; ++i) pgu[r * n + ui[i]] = gus[i];
          for (int64_t i = 0; i < m; ++i) pgv[r * m + vi[i]] = gvs[i];
        }
      }
    });
  });
  return out;
}

at::Tensor wasserstein_1d_cpu(const at::Tensor& u, const at::Tensor& v,
                              const std::optional<at::Tensor>& u_weights,
                              const std::optional<at::Tensor>& v_weights) {
  return w1_rows_cpu(u, v, u_weights, v_weights, at::Tensor(), nullptr, nullptr);
}

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_cpu(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights) {
  at::Tensor grad_u, grad_v;
  w1_rows_cpu(u, v, u_weights, v_weights, grad, &grad_u, &grad_v);
  return {grad_u, grad_v};
}

// Per-thread working memory of conditional_columns, kept between calls up to kKeepScratch bytes:
// a fresh megabyte costs a page fault per 4 KiB on first touch, which on a virtual machine was a
// tenth of a WDG evaluation.
// The lazily integrated |count_a - count_b| of one label (see conditional_columns).
struct LazyGap {
  double acc = 0, last = 0, diff = 0;
};

template <typename T>
struct ConditionalScratch {
  std::vector<LazyGap> gaps;
  RadixSorter<T> sorter{0};
  std::vector<T> zs, rs, a;
  std::vector<int32_t> z_rows, r_rows, inverse, perm;
  std::vector<int64_t> pos;
  std::vector<double> acc;
};
constexpr int64_t kKeepScratch = int64_t{64} << 20;

template <typename V>
void grow(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
}

// The columns of conditional_wasserstein, split over threads. Per column: one sort; then one
// walk in sorted order scatters each value to its label's running position for every factor
// (giving every label's sorted sample at once), and with a reference sample a second walk in
// the reference's sorted order pairs each reference value with the label sample's value of the
// same rank: equal sizes make W1 the mean of |a_i - b_i| over ranks. A permuted reference
// (reference_index, or permute_seed: permute_dims's own permutation, drawn here) is z's values,
// so its sorted order is z's through the inverse permutation and needs no sort of its own.
template <typename scalar_t, typename L>
void conditional_columns(const at::Tensor& z, const at::Tensor& ref, const at::Tensor& ref_index,
                         std::optional<uint64_t> permute_seed, bool scale_by_range, const L* lab,
                         const std::vector<int64_t>& offsets, int64_t N, int64_t d, int64_t K,
                         int64_t C, at::Tensor& out, std::atomic<bool>& bad_index) {
  const scalar_t* pz = z.const_data_ptr<scalar_t>();
  const scalar_t* pr_values = ref.defined() ? ref.const_data_ptr<scalar_t>() : nullptr;
  const int64_t* pidx = ref_index.defined() ? ref_index.const_data_ptr<int64_t>() : nullptr;
  const int64_t z_row = z.stride(0), z_col = z.stride(1);
  const int64_t r_row = ref.defined() ? ref.stride(0) : 0, r_col = ref.defined() ? ref.stride(1) : 0;
  const int64_t i_row = ref_index.defined() ? ref_index.stride(0) : 0;
  const int64_t i_col = ref_index.defined() ? ref_index.stride(1) : 0;
  const bool permuted = pidx != nullptr || permute_seed.has_value();
  const bool pr = pr_values != nullptr || permuted;  // a reference sample is compared
  scalar_t* po = out.data_ptr<scalar_t>();
  const int64_t scratch_bytes = N * (static_cast<int64_t>(sizeof(scalar_t)) * 3 + 24);
  at::parallel_for(0, d, 1, [&](int64_t begin, int64_t end) {
    static thread_local ConditionalScratch<scalar_t> kept;
    ConditionalScratch<scalar_t> local;
    ConditionalScratch<scalar_t>& w = scratch_bytes <= kKeepScratch ? kept : local;
    grow(w.zs, N);
    grow(w.a, N);
    grow(w.z_rows, N);
    grow(w.pos, C);
    if (pr_values) grow(w.rs, N);
    if (pr) {
      grow(w.r_rows, N);
      grow(w.acc, C);
    }
    if (permuted) {
      grow(w.inverse, N);
      grow(w.gaps, C);
    }
    if (permute_seed) grow(w.perm, N);
    scalar_t* zs = w.zs.data();
    scalar_t* a = w.a.data();
    int32_t* z_rows = w.z_rows.data();
    int32_t* r_rows = w.r_rows.data();
    int32_t* inverse = w.inverse.data();
    int64_t* pos = w.pos.data();
    double* acc = w.acc.data();
    for (int64_t j = begin; j < end; ++j) {
      w.sorter.sort(pz + j * z_col, N, z_row, zs, z_rows);  // this column's sort
      const scalar_t* r_sorted = zs;
      if (permute_seed) {
        // reference[r, j] = z[perm[r], j] with permute_dims's permutation of column j.
        int32_t* perm = w.perm.data();
        cpu_column_permutation(*permute_seed, j, N, perm);
        for (int64_t r = 0; r < N; ++r) inverse[perm[r]] = static_cast<int32_t>(r);
        for (int64_t t = 0; t < N; ++t) r_rows[t] = inverse[z_rows[t]];
      } else if (pidx) {
        // reference[r, j] = z[index[r, j], j]
        std::fill(inverse, inverse + N, -1);
        for (int64_t r = 0; r < N; ++r) {
          const int64_t src = pidx[r * i_row + j * i_col];
          if (src < 0 || src >= N || inverse[src] != -1) {
            bad_index = true;
            return;
          }
          inverse[src] = static_cast<int32_t>(r);
        }
        for (int64_t t = 0; t < N; ++t) r_rows[t] = inverse[z_rows[t]];
      } else if (pr_values) {
        w.sorter.sort(pr_values + j * r_col, N, r_row, w.rs.data(), r_rows);
        r_sorted = w.rs.data();
      }
      // W1 of the column divided by its range is W1 of the column over its range.
      double span = scale_by_range ? static_cast<double>(zs[N - 1]) - static_cast<double>(zs[0])
                                   : 1.0;
      if (!(span > 0)) span = 1.0;  // a constant column is left unscaled
      // Factor by factor, so the label column (N bytes) and the walk's state stay in the core's
      // cache.
      for (int64_t k = 0; k < K; ++k) {
        const L* lab_k = lab + k * N;
        const int64_t* off = offsets.data() + k * (C + 1);
        if (permuted) {
          // Both samples of label c are subsets of the sorted column: z's values at the sorted
          // positions t whose row has label c, the reference's at those whose reference row
          // (inverse permutation) has it. W1 * n_c = integral of |count_a - count_b| over the
          // column, and count_a - count_b of a label changes only where it occurs: accumulate
          // |diff| times the distance walked since its last change, lazily, in one walk.
          // One label's state in one place: a cache line per update, not three.
          LazyGap* gap = w.gaps.data();
          std::fill(gap, gap + C, LazyGap{});
          for (int64_t t = 0; t < N; ++t) {
            LazyGap& ga = gap[lab_k[z_rows[t]]];
            LazyGap& gb = gap[lab_k[r_rows[t]]];
            // (Equal labels need no test: the second update then adds |diff| * 0.)
            const double v = static_cast<double>(zs[t]);
            ga.acc += std::abs(ga.diff) * (v - ga.last);
            ga.last = v;
            ga.diff += 1.0;
            gb.acc += std::abs(gb.diff) * (v - gb.last);
            gb.last = v;
            gb.diff -= 1.0;
          }
          for (int64_t c = 0; c < C; ++c) acc[c] = gap[c].acc;
        } else {
          // a[offsets[k][c] + i]: the i-th smallest value of label c.
          std::copy(off, off + C, pos);
          for (int64_t t = 0; t < N; ++t) a[pos[lab_k[z_rows[t]]]++] = zs[t];
          if (pr) {  // a reference of its own, sorted: pair equal ranks, W1 = mean |a_i - b_i|
            std::copy(off, off + C, pos);
            std::fill(acc, acc + C, 0.0);
            for (int64_t t = 0; t < N; ++t) {
              const L c = lab_k[r_rows[t]];
              acc[c] += std::abs(static_cast<double>(a[pos[c]++]) -
                                 static_cast<double>(r_sorted[t]));
            }
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          const int64_t nc = off[c + 1] - off[c];
          if (nc == 0) continue;  // empty class: left NaN
          const double w =
              pr ? acc[c] / static_cast<double>(nc)
                 : merge_w1<scalar_t>(a + off[c], nullptr, nc, nc, zs, nullptr, N, N, nullptr,
                                      nullptr, 0.0);
          po[(j * K + k) * C + c] = static_cast<scalar_t>(w / span);
        }
      }
    }
  });
}

// z (N, d) as the transpose of a (d, N) buffer that the calling thread keeps (up to
// kKeepScratch bytes; beyond, a fresh tensor).
at::Tensor transposed_columns(const at::Tensor& z) {
  const int64_t N = z.size(0), d = z.size(1);
  at::Tensor columns;
  const int64_t bytes = N * d * static_cast<int64_t>(z.element_size());
  if (bytes <= kKeepScratch) {
    columns = at::from_blob(thread_buffer<struct TransposedColumns>(bytes), {d, N}, z.options());
  } else {
    columns = at::empty({d, N}, z.options());
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conditional_wasserstein_transpose", [&] {
    const scalar_t* src = z.const_data_ptr<scalar_t>();
    scalar_t* dst = columns.data_ptr<scalar_t>();
    const int64_t row = z.stride(0), col = z.stride(1);
    at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < d; ++j) dst[j * N + i] = src[i * row + j * col];
      }
    });
  });
  return columns.t();
}

at::Tensor conditional_wasserstein_cpu(const at::Tensor& z_in, const at::Tensor& labels_in,
                                       const std::optional<at::Tensor>& reference,
                                       const std::optional<at::Tensor>& reference_index,
                                       int64_t num_classes, bool permuted,
                                       std::optional<at::Generator> generator,
                                       bool scale_by_range) {
  // (The labels' range is checked while they are read.)
  check_conditional_args(z_in, labels_in, reference, reference_index, num_classes, permuted,
                         /*check_label_range=*/false);
  TORCH_CHECK_VALUE(z_in.size(0) <= std::numeric_limits<int32_t>::max(),
                    "conditional_wasserstein: at most 2^31 - 1 rows");
  // z, reference and reference_index are read column by column through their strides, in
  // any layout; a column-major view (the transpose of a (d, N) tensor) is read contiguously.
  // Any other z is first transposed, in blocks of rows, into memory kept between calls: reading
  // a column of row-major codes touches a cache line per value, and the column is read twice.
  at::Tensor z = z_in;
  if (z_in.size(0) > 1 && z_in.size(1) > 1 && z_in.stride(0) != 1) {
    z = transposed_columns(z_in);
  }
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor ref = reference.has_value() ? *reference : at::Tensor();
  const at::Tensor ref_index = reference_index.has_value() ? *reference_index : at::Tensor();
  const int64_t N = z.size(0), d = z.size(1), K = labels.size(1), C = num_classes;
  // Drawn even when there is nothing to permute, as permute_dims does: the generator advances
  // the same way.
  const std::optional<uint64_t> permute_seed =
      permuted ? std::optional<uint64_t>(cpu_permutation_seed(generator)) : std::nullopt;
  at::Tensor out = at::full({d, K, C}, NAN, z.options());
  if (N == 0 || d == 0 || K == 0) return out;

  // Labels once more, a column per factor in the narrowest type (the walks read one factor's
  // labels in sorted order, and N bytes stay in the core's cache), with each factor's class
  // sizes and offsets, and the range check, in the same pass.
  const int64_t* lab = labels.const_data_ptr<int64_t>();
  std::vector<int64_t> offsets(K * (C + 1), 0);
  std::atomic<bool> bad_index{false}, bad_label{false};
  auto run = [&](auto label_tag) {
    using L = decltype(label_tag);
    std::vector<L> lab_small(N * K);
    at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        int64_t* count = offsets.data() + k * (C + 1);
        L* column = lab_small.data() + k * N;
        bool bad = false;
        for (int64_t i = 0; i < N; ++i) {
          const int64_t v = lab[i * K + k];
          bad |= v < 0 || v >= C;
          if (bad) break;
          column[i] = static_cast<L>(v);
          ++count[v + 1];
        }
        if (bad) {
          bad_label = true;
          return;
        }
        for (int64_t c = 0; c < C; ++c) count[c + 1] += count[c];
      }
    });
    if (bad_label) return;
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conditional_wasserstein_cpu", [&] {
      conditional_columns<scalar_t, L>(z, ref, ref_index, permute_seed, scale_by_range,
                                       lab_small.data(), offsets, N, d, K, C, out, bad_index);
    });
  };
  if (C <= 256) {
    run(uint8_t{});
  } else {
    run(int32_t{});
  }
  TORCH_CHECK_VALUE(!bad_label, "conditional_wasserstein: labels must lie in [0, num_classes = ",
                    C, ")");
  TORCH_CHECK_VALUE(!bad_index, "conditional_wasserstein: reference_index must hold a "
                    "permutation of 0..N-1 in every column");
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  m.def("wasserstein_1d(Tensor u, Tensor v, Tensor? u_weights=None, Tensor? v_weights=None) "
        "-> Tensor");
  m.def("wasserstein_1d_backward(Tensor grad, Tensor u, Tensor v, Tensor? u_weights, "
        "Tensor? v_weights) -> (Tensor, Tensor)");
  // permuted: the reference is permute_dims(z, generator=generator) (its permutation, drawn in
  // the kernel and never written out). scale_by_range: the distances of z's columns divided by
  // each column's range (max - min; constant columns unscaled), as if z had been.
  m.def("conditional_wasserstein(Tensor z, Tensor labels, Tensor? reference, "
        "Tensor? reference_index, int num_classes, bool permuted=False, "
        "Generator? generator=None, bool scale_by_range=False) -> Tensor",
        {at::Tag::nondeterministic_seeded});
}

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) {
  m.impl("wasserstein_1d", &wasserstein_1d_cpu);
  m.impl("wasserstein_1d_backward", &wasserstein_1d_backward_cpu);
  m.impl("conditional_wasserstein", &conditional_wasserstein_cpu);
}

}  // namespace wtc

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
                            int64_t num_classes) {
  TORCH_CHECK_VALUE(!(reference.has_value() && reference_index.has_value()),
                    "conditional_wasserstein: pass reference or reference_index, not both");
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
  if (labels.numel() > 0) {
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
  std::vector<uint32_t> k32, k32_tmp;
  std::vector<uint64_t> k64, k64_tmp;
  std::vector<int32_t> rows_tmp;
  std::vector<int64_t> counts = std::vector<int64_t>((1 << 11) + 1);
  explicit RadixSorter(int64_t N) : k32(N), k32_tmp(N), rows_tmp(N) {}

  // values ascending, and the positions (0..N-1) they came from.
  void sort(const T* x, int64_t N, int64_t stride, T* values, int32_t* rows) {
    if (static_cast<int64_t>(k32.size()) < N) {
      k32.resize(N);
      k32_tmp.resize(N);
      rows_tmp.resize(N);
    }
    radix(x, N, stride, rows, k32, k32_tmp, [](T v) { return sortable_key(to_float_key(v)); });
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

// The columns of conditional_wasserstein, split over threads. Per column: one sort; then one
// walk in sorted order scatters each value to its label's running position for every factor
// (giving every label's sorted sample at once), and with a reference sample a second walk in
// the reference's sorted order pairs each reference value with the label sample's value of the
// same rank: equal sizes make W1 the mean of |a_i - b_i| over ranks.
template <typename scalar_t, typename L>
void conditional_columns(const at::Tensor& z, const at::Tensor& ref, const at::Tensor& ref_index,
                         const L* lab, const std::vector<int64_t>& offsets, int64_t N, int64_t d,
                         int64_t K, int64_t C, at::Tensor& out, std::atomic<bool>& bad_index) {
  const scalar_t* pz = z.const_data_ptr<scalar_t>();
  const scalar_t* pr_values = ref.defined() ? ref.const_data_ptr<scalar_t>() : nullptr;
  const int64_t* pidx = ref_index.defined() ? ref_index.const_data_ptr<int64_t>() : nullptr;
  const int64_t z_row = z.stride(0), z_col = z.stride(1);
  const int64_t r_row = ref.defined() ? ref.stride(0) : 0, r_col = ref.defined() ? ref.stride(1) : 0;
  const int64_t i_row = ref_index.defined() ? ref_index.stride(0) : 0;
  const int64_t i_col = ref_index.defined() ? ref_index.stride(1) : 0;
  const bool pr = pr_values != nullptr || pidx != nullptr;  // a reference sample is compared
  scalar_t* po = out.data_ptr<scalar_t>();
  at::parallel_for(0, d, 1, [&](int64_t begin, int64_t end) {
    RadixSorter<scalar_t> sorter(N);
    std::vector<scalar_t> zs(N), rs(pr_values ? N : 0), a(N * K);
    std::vector<int32_t> z_rows(N), r_rows(pr ? N : 0), inverse(pidx ? N : 0);
    std::vector<int64_t> pos(K * C);
    std::vector<double> acc(pr ? K * C : 0);
    auto reset_positions = [&] {
      for (int64_t k = 0; k < K; ++k) {
        std::copy(offsets.begin() + k * (C + 1), offsets.begin() + k * (C + 1) + C,
                  pos.begin() + k * C);
      }
    };
    for (int64_t j = begin; j < end; ++j) {
      sorter.sort(pz + j * z_col, N, z_row, zs.data(), z_rows.data());  // this column's sort
      const scalar_t* r_sorted = zs.data();
      if (pidx) {
        // reference[r, j] = z[index[r, j], j]: its sorted order is z's, through the inverse
        // permutation, so it needs no sort of its own.
        std::fill(inverse.begin(), inverse.end(), -1);
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
        sorter.sort(pr_values + j * r_col, N, r_row, rs.data(), r_rows.data());
        r_sorted = rs.data();
      }
      // a[k * N + offsets[k][c] + i]: the i-th smallest value of label c of factor k.
      reset_positions();
      for (int64_t t = 0; t < N; ++t) {
        const L* row = lab + static_cast<int64_t>(z_rows[t]) * K;
        const scalar_t v = zs[t];
        for (int64_t k = 0; k < K; ++k) a[k * N + pos[k * C + row[k]]++] = v;
      }
      if (pr) {
        reset_positions();
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t t = 0; t < N; ++t) {
          const L* row = lab + static_cast<int64_t>(r_rows[t]) * K;
          const double v = static_cast<double>(r_sorted[t]);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t kc = k * C + row[k];
            acc[kc] += std::abs(static_cast<double>(a[k * N + pos[kc]++]) - v);
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        const int64_t* off = offsets.data() + k * (C + 1);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t nc = off[c + 1] - off[c];
          if (nc == 0) continue;  // empty class: left NaN
          const double w =
              pr ? acc[k * C + c] / static_cast<double>(nc)
                 : merge_w1<scalar_t>(a.data() + k * N + off[c], nullptr, nc, nc, zs.data(),
                                      nullptr, N, N, nullptr, nullptr, 0.0);
          po[(j * K + k) * C + c] = static_cast<scalar_t>(w);
        }
      }
    }
  });
}

at::Tensor conditional_wasserstein_cpu(const at::Tensor& z_in, const at::Tensor& labels_in,
                                       const std::optional<at::Tensor>& reference,
                                       const std::optional<at::Tensor>& reference_index,
                                       int64_t num_classes) {
  check_conditional_args(z_in, labels_in, reference, reference_index, num_classes);
  TORCH_CHECK_VALUE(z_in.size(0) <= std::numeric_limits<int32_t>::max(),
                    "conditional_wasserstein: at most 2^31 - 1 rows");
  // z, reference and reference_index are read column by column through their strides, in
  // any layout; a column-major view (the transpose of a (d, N) tensor) is read contiguously.
  const at::Tensor& z = z_in;
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor ref = reference.has_value() ? *reference : at::Tensor();
  const at::Tensor ref_index = reference_index.has_value() ? *reference_index : at::Tensor();
  const int64_t N = z.size(0), d = z.size(1), K = labels.size(1), C = num_classes;
  at::Tensor out = at::full({d, K, C}, NAN, z.options());
  if (N == 0 || d == 0 || K == 0) return out;

  // Class sizes and offsets per factor (shared by all columns).
  std::vector<int64_t> offsets(K * (C + 1), 0);
  const int64_t* lab = labels.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t k = 0; k < K; ++k) ++offsets[k * (C + 1) + lab[i * K + k] + 1];
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t c = 0; c < C; ++c) offsets[k * (C + 1) + c + 1] += offsets[k * (C + 1) + c];
  }

  // Labels once more, row-major in the narrowest type: each row's K labels share a cache line
  // and the whole table stays in cache while the columns are walked in sorted order.
  std::atomic<bool> bad_index{false};
  auto run = [&](auto label_tag) {
    using L = decltype(label_tag);
    std::vector<L> lab_small(N * K);
    for (int64_t i = 0; i < N * K; ++i) lab_small[i] = static_cast<L>(lab[i]);
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conditional_wasserstein_cpu", [&] {
      conditional_columns<scalar_t, L>(z, ref, ref_index, lab_small.data(), offsets, N, d, K, C,
                                       out, bad_index);
    });
  };
  if (C <= 256) {
    run(uint8_t{});
  } else {
    run(int32_t{});
  }
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
  m.def("conditional_wasserstein(Tensor z, Tensor labels, Tensor? reference, "
        "Tensor? reference_index, int num_classes) -> Tensor");
}

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) {
  m.impl("wasserstein_1d", &wasserstein_1d_cpu);
  m.impl("wasserstein_1d_backward", &wasserstein_1d_backward_cpu);
  m.impl("conditional_wasserstein", &conditional_wasserstein_cpu);
}

}  // namespace wtc

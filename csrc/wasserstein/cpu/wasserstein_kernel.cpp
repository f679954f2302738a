// wtc_ext::wasserstein_1d and wtc_ext::conditional_wasserstein: the CPU kernels.
//
// Each sample is sorted inside the kernel (common/radix_sort.h). For the conditional distances of
// the WDG metric, each column is sorted once; walking it in sorted order and placing each value
// at its label's running count splits it into per-label samples that are already sorted, so
// every (column, factor, label) distance costs one merge.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "common/column_shuffle.h"
#include "common/radix_sort.h"
#include "common/thread_buffer.h"
#include "wasserstein/merge_w1.h"
#include "wasserstein/wasserstein.h"

namespace wtc {
namespace {

// W1 of every row of u (R, n) against v (R, m), sorting each row in the kernel; with grad, also
// the per-element derivatives (times grad[r]) in the original element order.
at::Tensor w1_rows_cpu(const at::Tensor& u_in, const at::Tensor& v_in,
                       const std::optional<at::Tensor>& u_weights,
                       const std::optional<at::Tensor>& v_weights, const at::Tensor& grad,
                       at::Tensor* grad_u, at::Tensor* grad_v) {
  check_wasserstein_1d_args(u_in, v_in, u_weights, v_weights);
  // Before the copies below: an expanded (stride 0) input of 2^31 samples costs nothing until
  // it is made contiguous.
  TORCH_CHECK_VALUE(u_in.size(1) <= std::numeric_limits<int32_t>::max() &&
                        v_in.size(1) <= std::numeric_limits<int32_t>::max(),
                    "wasserstein_1d: expected at most 2^31 - 1 samples per row in u and v, got ",
                    u_in.size(1), " and ", v_in.size(1));
  const at::Tensor u = u_in.contiguous(), v = v_in.contiguous();
  const at::Tensor uw = u_weights.has_value() ? u_weights->contiguous() : at::Tensor();
  const at::Tensor vw = v_weights.has_value() ? v_weights->contiguous() : at::Tensor();
  const int64_t R = u.size(0), n = u.size(1), m = v.size(1);
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

// The lazily integrated |count_a - count_b| of one label (see conditional_columns).
struct LazyGap {
  double acc = 0, last = 0, diff = 0;
};

// Per-thread working memory of conditional_columns, kept between calls up to kKeepScratch bytes:
// a fresh megabyte costs a page fault per 4 KiB on first touch, which on a virtual machine was a
// tenth of a WDG evaluation.
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

// What conditional_columns reads: z, its reference (values, a permutation index, or permute_dims's
// seed), the labels, and the shapes.
template <typename scalar_t, typename L>
struct ConditionalColumns {
  const scalar_t* z;
  int64_t z_row, z_col;                  // z's strides
  const scalar_t* ref_values;            // a reference of its own, or nullptr
  int64_t r_row, r_col;                  // its strides
  const int64_t* ref_index;              // reference[r, j] = z[ref_index[r, j], j], or nullptr
  int64_t i_row, i_col;                  // its strides
  // reference = permute_dims(z) with these seeds: column j (of run j / run_columns, the R runs'
  // columns side by side) is stream j % run_columns of seed permute_seeds[j / run_columns]
  const std::vector<uint64_t>* permute_seeds;
  int64_t run_columns;
  bool permuted;                         // the reference is z permuted (index or seed)
  bool paired;                           // a reference is compared (else the whole column)
  bool scale_by_range;
  const L* labels;                      // (K, N): a column per factor
  const std::vector<int64_t>* offsets;  // (K, C + 1): each factor's class offsets
  int64_t N, K, C;
  scalar_t* out;  // (d, K, C)
};

// The thread's scratch, grown to what one column needs.
template <typename scalar_t, typename L>
void grow_scratch(ConditionalScratch<scalar_t>& w, const ConditionalColumns<scalar_t, L>& in) {
  const int64_t N = in.N, C = in.C;
  grow(w.zs, N);
  grow(w.a, N);
  grow(w.z_rows, N);
  grow(w.pos, C);
  if (in.ref_values) grow(w.rs, N);
  if (in.paired) {
    grow(w.r_rows, N);
    grow(w.acc, C);
  }
  if (in.permuted) {
    grow(w.inverse, N);
    grow(w.gaps, C);
  }
  if (in.permute_seeds) grow(w.perm, N);
}

// Column j's reference in the sorted order: r_rows[t] is the reference row holding the t-th
// smallest reference value, which is r_sorted[t] (returned: z's sorted values for a permuted
// reference). nullptr when reference_index is not a permutation.
template <typename scalar_t, typename L>
const scalar_t* sorted_reference(ConditionalScratch<scalar_t>& w,
                                 const ConditionalColumns<scalar_t, L>& in, int64_t j) {
  const int64_t N = in.N;
  int32_t* r_rows = w.r_rows.data();
  int32_t* inverse = w.inverse.data();
  const int32_t* z_rows = w.z_rows.data();
  if (in.permute_seeds) {
    // reference[r, j] = z[perm[r], j] with permute_dims's permutation of column j.
    int32_t* perm = w.perm.data();
    cpu_column_permutation((*in.permute_seeds)[j / in.run_columns], j % in.run_columns, N, perm);
    for (int64_t r = 0; r < N; ++r) inverse[perm[r]] = static_cast<int32_t>(r);
    for (int64_t t = 0; t < N; ++t) r_rows[t] = inverse[z_rows[t]];
  } else if (in.ref_index) {
    // reference[r, j] = z[index[r, j], j]
    std::fill(inverse, inverse + N, -1);
    for (int64_t r = 0; r < N; ++r) {
      const int64_t src = in.ref_index[r * in.i_row + j * in.i_col];
      if (src < 0 || src >= N || inverse[src] != -1) return nullptr;
      inverse[src] = static_cast<int32_t>(r);
    }
    for (int64_t t = 0; t < N; ++t) r_rows[t] = inverse[z_rows[t]];
  } else if (in.ref_values) {
    w.sorter.sort(in.ref_values + j * in.r_col, N, in.r_row, w.rs.data(), r_rows);
    return w.rs.data();
  }
  return w.zs.data();
}

// A permuted reference, factor k: both samples of label c are subsets of the sorted column: z's
// values at the sorted positions t whose row has label c, the reference's at those whose
// reference row (inverse permutation) has it. W1 * n_c = integral of |count_a - count_b| over
// the column, and count_a - count_b of a label changes only where it occurs: accumulate |diff|
// times the distance walked since its last change, lazily, in one walk. acc[c] = W1 * n_c.
template <typename scalar_t, typename L>
void permuted_label_gaps(ConditionalScratch<scalar_t>& w, const L* lab_k, int64_t N, int64_t C) {
  const scalar_t* zs = w.zs.data();
  const int32_t* z_rows = w.z_rows.data();
  const int32_t* r_rows = w.r_rows.data();
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
  double* acc = w.acc.data();
  for (int64_t c = 0; c < C; ++c) acc[c] = gap[c].acc;
}

// Factor k's per-label samples, sorted: a[off[c] + i] is the i-th smallest value of label c.
// With a reference of its own (sorted, r_sorted), equal ranks are paired: W1 = mean |a_i - b_i|,
// acc[c] = W1 * n_c.
template <typename scalar_t, typename L>
void label_samples(ConditionalScratch<scalar_t>& w, const L* lab_k, const int64_t* off,
                   const scalar_t* r_sorted, bool paired, int64_t N, int64_t C) {
  const scalar_t* zs = w.zs.data();
  const int32_t* z_rows = w.z_rows.data();
  scalar_t* a = w.a.data();
  int64_t* pos = w.pos.data();
  std::copy(off, off + C, pos);
  for (int64_t t = 0; t < N; ++t) a[pos[lab_k[z_rows[t]]]++] = zs[t];
  if (!paired) return;
  const int32_t* r_rows = w.r_rows.data();
  double* acc = w.acc.data();
  std::copy(off, off + C, pos);
  std::fill(acc, acc + C, 0.0);
  for (int64_t t = 0; t < N; ++t) {
    const L c = lab_k[r_rows[t]];
    acc[c] += std::abs(static_cast<double>(a[pos[c]++]) - static_cast<double>(r_sorted[t]));
  }
}

// out[j, k, c] for every label c of factor k: acc[c] / n_c with a reference, else the merge of
// the label's sample with the whole column; divided by span. Empty classes are left NaN.
template <typename scalar_t, typename L>
void write_distances(const ConditionalScratch<scalar_t>& w,
                     const ConditionalColumns<scalar_t, L>& in, const int64_t* off, int64_t j,
                     int64_t k, double span) {
  const int64_t N = in.N, K = in.K, C = in.C;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t nc = off[c + 1] - off[c];
    if (nc == 0) continue;  // empty class: left NaN
    const double dist =
        in.paired ? w.acc[c] / static_cast<double>(nc)
                  : merge_w1<scalar_t>(w.a.data() + off[c], nullptr, nc, nc, w.zs.data(), nullptr,
                                       N, N, nullptr, nullptr, 0.0);
    in.out[(j * K + k) * C + c] = static_cast<scalar_t>(dist / span);
  }
}

// Column j of conditional_wasserstein: out[j, :, :]. False when reference_index is not a
// permutation.
template <typename scalar_t, typename L>
bool one_column(ConditionalScratch<scalar_t>& w, const ConditionalColumns<scalar_t, L>& in,
                int64_t j) {
  const int64_t N = in.N, K = in.K, C = in.C;
  w.sorter.sort(in.z + j * in.z_col, N, in.z_row, w.zs.data(), w.z_rows.data());  // the sort
  const scalar_t* r_sorted = sorted_reference(w, in, j);
  if (r_sorted == nullptr) return false;
  // W1 of the column divided by its range is W1 of the column over its range.
  const scalar_t* zs = w.zs.data();
  double span = in.scale_by_range ? static_cast<double>(zs[N - 1]) - static_cast<double>(zs[0])
                                  : 1.0;
  if (!(span > 0)) span = 1.0;  // a constant column is left unscaled
  // Factor by factor, so the label column (N bytes) and the walk's state stay in the core's
  // cache.
  for (int64_t k = 0; k < K; ++k) {
    const L* lab_k = in.labels + k * N;
    const int64_t* off = in.offsets->data() + k * (C + 1);
    if (in.permuted) {
      permuted_label_gaps(w, lab_k, N, C);
    } else {
      label_samples(w, lab_k, off, r_sorted, in.paired, N, C);
    }
    write_distances(w, in, off, j, k, span);
  }
  return true;
}

// The columns of conditional_wasserstein, split over threads. Per column: one sort; then one
// walk in sorted order scatters each value to its label's running position for every factor
// (giving every label's sorted sample at once), and with a reference sample a second walk in
// the reference's sorted order pairs each reference value with the label sample's value of the
// same rank: equal sizes make W1 the mean of |a_i - b_i| over ranks. A permuted reference
// (reference_index, or permute_seeds: permute_dims's own permutation, drawn here) is z's values,
// so its sorted order is z's through the inverse permutation and needs no sort of its own.
template <typename scalar_t, typename L>
void conditional_columns(const at::Tensor& z, const at::Tensor& ref, const at::Tensor& ref_index,
                         const std::vector<uint64_t>* permute_seeds, int64_t run_columns,
                         bool scale_by_range, const L* lab,
                         const std::vector<int64_t>& offsets, int64_t N, int64_t d, int64_t K,
                         int64_t C, at::Tensor& out, std::atomic<bool>& bad_index) {
  ConditionalColumns<scalar_t, L> in;
  in.z = z.const_data_ptr<scalar_t>();
  in.z_row = z.stride(0);
  in.z_col = z.stride(1);
  in.ref_values = ref.defined() ? ref.const_data_ptr<scalar_t>() : nullptr;
  in.r_row = ref.defined() ? ref.stride(0) : 0;
  in.r_col = ref.defined() ? ref.stride(1) : 0;
  in.ref_index = ref_index.defined() ? ref_index.const_data_ptr<int64_t>() : nullptr;
  in.i_row = ref_index.defined() ? ref_index.stride(0) : 0;
  in.i_col = ref_index.defined() ? ref_index.stride(1) : 0;
  in.permute_seeds = permute_seeds;
  in.run_columns = run_columns;
  in.permuted = in.ref_index != nullptr || permute_seeds != nullptr;
  in.paired = in.ref_values != nullptr || in.permuted;
  in.scale_by_range = scale_by_range;
  in.labels = lab;
  in.offsets = &offsets;
  in.N = N;
  in.K = K;
  in.C = C;
  in.out = out.data_ptr<scalar_t>();
  const int64_t scratch_bytes = N * (static_cast<int64_t>(sizeof(scalar_t)) * 3 + 24);
  at::parallel_for(0, d, 1, [&](int64_t begin, int64_t end) {
    static thread_local ConditionalScratch<scalar_t> kept;
    ConditionalScratch<scalar_t> local;
    ConditionalScratch<scalar_t>& w = scratch_bytes <= kKeepScratch ? kept : local;
    grow_scratch(w, in);
    for (int64_t j = begin; j < end; ++j) {
      if (!one_column(w, in, j)) {
        bad_index = true;
        return;
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

// The op on checked (N, d) columns: W (d, K, C). permute_seeds (or nullptr): the permuted
// reference's seeds, one per run of run_columns columns.
at::Tensor conditional_columns_cpu(const at::Tensor& z_in, const at::Tensor& labels_in,
                                   const std::optional<at::Tensor>& reference,
                                   const std::optional<at::Tensor>& reference_index,
                                   int64_t num_classes, const std::vector<uint64_t>* permute_seeds,
                                   int64_t run_columns, bool scale_by_range) {
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
      conditional_columns<scalar_t, L>(z, ref, ref_index, permute_seeds, run_columns,
                                       scale_by_range,
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

// (R, N, d) as the (N, R * d) matrix of the runs' columns side by side, column-major (each column
// contiguous, as the kernel reads them): R runs' codes are R * d columns sharing the labels.
at::Tensor runs_as_columns(const at::Tensor& t) {
  const int64_t R = t.size(0), N = t.size(1), d = t.size(2);
  return t.permute({0, 2, 1}).contiguous().view({R * d, N}).t();
}

at::Tensor conditional_wasserstein_cpu(const at::Tensor& z_in, const at::Tensor& labels,
                                       const std::optional<at::Tensor>& reference,
                                       const std::optional<at::Tensor>& reference_index,
                                       int64_t num_classes, bool permuted,
                                       std::optional<at::Generator> generator,
                                       bool scale_by_range,
                                       std::optional<std::vector<at::Generator>> generators) {
  // The row limit first: the checks below read (and may copy) all of z.
  TORCH_CHECK_VALUE(z_in.dim() < 2 || z_in.size(-2) <= std::numeric_limits<int32_t>::max(),
                    "conditional_wasserstein: expected at most 2^31 - 1 rows in z on a CPU, got ",
                    z_in.size(-2));
  // (The labels' range is checked while they are read.)
  check_conditional_args(z_in, labels, reference, reference_index, num_classes, permuted,
                         /*check_label_range=*/false);
  check_conditional_generators(z_in, permuted, generator, generators);
  const bool stacked = z_in.dim() == 3;
  const int64_t R = stacked ? z_in.size(0) : 1, d = z_in.size(-1);
  // One seed per run, drawn in run order, even when there is nothing to permute (as
  // permute_dims does): from generators[r], or in turn from the one generator, as R single calls
  // would draw them.
  std::vector<uint64_t> seeds;
  if (permuted) {
    for (int64_t r = 0; r < R; ++r) {
      seeds.push_back(cpu_permutation_seed(generators.has_value()
                                               ? std::optional<at::Generator>((*generators)[r])
                                               : generator));
    }
  }
  const std::vector<uint64_t>* permute_seeds = permuted ? &seeds : nullptr;
  if (!stacked) {
    return conditional_columns_cpu(z_in, labels, reference, reference_index, num_classes,
                                   permute_seeds, d, scale_by_range);
  }
  const int64_t K = labels.size(1);
  if (R == 0) return at::empty({0, d, K, num_classes}, z_in.options());
  auto columns = [](const std::optional<at::Tensor>& t) -> std::optional<at::Tensor> {
    return t.has_value() ? std::optional<at::Tensor>(runs_as_columns(*t)) : std::nullopt;
  };
  return conditional_columns_cpu(runs_as_columns(z_in), labels, columns(reference),
                                 columns(reference_index), num_classes, permute_seeds, d,
                                 scale_by_range)
      .view({R, d, K, num_classes});
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) {
  m.impl("wasserstein_1d", &wasserstein_1d_cpu);
  m.impl("wasserstein_1d_backward", &wasserstein_1d_backward_cpu);
  m.impl("conditional_wasserstein", &conditional_wasserstein_cpu);
}

}  // namespace wtc

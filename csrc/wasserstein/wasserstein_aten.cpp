// The sorted-CDF Wasserstein ops' device algorithm on ATen ops: ATen's segmented sorts, then the
// merge kernels, for any device with them (the CUDA glue uses it; the CPU kernels in
// cpu/wasserstein_kernel.cpp sort inside the kernel with a radix sort instead).
#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "common/column_shuffle.h"
#include "wasserstein/wasserstein.h"

namespace wtc {
namespace {

// Sort along the last dim, carrying the weights along.
std::pair<at::Tensor, at::Tensor> sorted_with_weights(const at::Tensor& x,
                                                      const std::optional<at::Tensor>& w) {
  auto [values, order] = x.sort(-1);
  at::Tensor weights = w.has_value() ? w->gather(-1, order).contiguous() : at::Tensor();
  return {values.contiguous(), weights};
}

// Per factor: a stable sort of the labels (in the column's sorted order) groups every column
// into per-label samples that stay sorted; one merge per (column, label) segment.
at::Tensor conditional_wasserstein_2d(const at::Tensor& z_in, const at::Tensor& labels,
                                      const std::optional<at::Tensor>& reference_values,
                                      const std::optional<at::Tensor>& reference_index,
                                      int64_t num_classes, bool permuted,
                                      std::optional<at::Generator> generator, bool scale_by_range,
                                      const MergeKernels& kernels) {
  check_conditional_args(z_in, labels, reference_values, reference_index, num_classes, permuted);
  std::optional<at::Tensor> reference = reference_values;
  if (permuted) {
    // permute_dims's permutation of the columns, computed on (d, N, 1) as the CPU kernel's
    // column streams are numbered (column j is stream j either way).
    reference = std::get<0>(permute_dims_op().call(z_in.t().unsqueeze(-1), std::move(generator),
                                                   /*return_index=*/false))
                    .squeeze(-1)
                    .t();
  }
  if (reference_index.has_value()) {
    const at::Tensor sorted_index = std::get<0>(reference_index->sort(0));
    TORCH_CHECK_VALUE(
        sorted_index.equal(at::arange(z_in.size(0), reference_index->options())
                               .view({-1, 1})
                               .expand_as(sorted_index)),
        "conditional_wasserstein: reference_index must hold a permutation of 0..N-1 in every "
        "column");
    reference = z_in.gather(0, *reference_index);
  }
  const int64_t N = z_in.size(0), d = z_in.size(1), K = labels.size(1), C = num_classes;
  at::Tensor out = at::full({d, K, C}, NAN, z_in.options());
  if (N == 0 || d == 0 || K == 0) return out;
  const auto long_opts = labels.options();
  auto [z_sorted, z_order] = z_in.sort(0);
  at::Tensor r_sorted, r_order;
  if (reference.has_value()) std::tie(r_sorted, r_order) = reference->sort(0);
  const at::Tensor column_start = (at::arange(d, long_opts) * N).view({d, 1});
  const at::Tensor z_columns = z_sorted.t().contiguous();  // (d, N), each column sorted

  for (int64_t k = 0; k < K; ++k) {
    const at::Tensor lab = labels.select(1, k);
    const at::Tensor counts = at::bincount(lab, {}, C);                    // (C)
    const at::Tensor starts = at::cumsum(counts, 0) - counts;              // (C)
    auto grouped = [&](const at::Tensor& sorted, const at::Tensor& order) {
      const at::Tensor lab_sorted = lab.index_select(0, order.reshape(-1)).view({N, d});
      const at::Tensor perm = std::get<1>(lab_sorted.sort(/*stable=*/true, 0, false));
      return sorted.gather(0, perm).t().contiguous();  // (d, N), grouped by label, sorted
    };
    const at::Tensor a = grouped(z_sorted, z_order);
    const at::Tensor a_start = (column_start + starts.view({1, C})).contiguous();
    const at::Tensor a_len = counts.view({1, C}).expand({d, C}).contiguous();
    at::Tensor b, b_start, b_len;
    if (reference.has_value()) {
      b = grouped(r_sorted, r_order);
      b_start = a_start;
      b_len = a_len;
    } else {
      b = z_columns;
      b_start = column_start.expand({d, C}).contiguous();
      b_len = at::full({d, C}, N, long_opts);
    }
    at::Tensor out_k = at::empty({d, C}, z_in.options());
    kernels.segments(a, a_start, a_len, b, b_start, b_len, out_k);
    out.select(1, k).copy_(out_k);
  }
  if (scale_by_range) {
    at::Tensor span = z_sorted.select(0, N - 1) - z_sorted.select(0, 0);  // (d)
    span = at::where(span > 0, span, at::ones_like(span));  // constant columns unscaled
    out.div_(span.view({d, 1, 1}));
  }
  return out;
}

// (R, N, d) as the (N, R * d) matrix of the runs' columns side by side.
at::Tensor runs_as_columns(const at::Tensor& t) {
  return t.permute({1, 0, 2}).reshape({t.size(1), t.size(0) * t.size(2)});
}

}  // namespace

at::Tensor wasserstein_1d_by_merge(const at::Tensor& u, const at::Tensor& v,
                                   const std::optional<at::Tensor>& u_weights,
                                   const std::optional<at::Tensor>& v_weights,
                                   const MergeKernels& kernels) {
  check_wasserstein_1d_args(u, v, u_weights, v_weights);
  if (u.size(0) == 0) return at::empty({0}, u.options());
  if (u.size(1) == 0 || v.size(1) == 0) return at::full({u.size(0)}, NAN, u.options());
  auto [us, uw] = sorted_with_weights(u, u_weights);
  auto [vs, vw] = sorted_with_weights(v, v_weights);
  at::Tensor out = at::empty({u.size(0)}, u.options());
  kernels.sorted_rows(us, uw, vs, vw, out, at::Tensor(), at::Tensor(), at::Tensor());
  return out;
}

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_by_merge(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights,
    const MergeKernels& kernels) {
  check_wasserstein_1d_args(u, v, u_weights, v_weights);
  if (u.numel() == 0 || v.numel() == 0) return {at::zeros_like(u), at::zeros_like(v)};
  auto [us, u_order] = u.sort(-1);
  auto [vs, v_order] = v.sort(-1);
  at::Tensor uw = u_weights.has_value() ? u_weights->gather(-1, u_order).contiguous() : at::Tensor();
  at::Tensor vw = v_weights.has_value() ? v_weights->gather(-1, v_order).contiguous() : at::Tensor();
  at::Tensor grad_us = at::empty_like(us, at::MemoryFormat::Contiguous);
  at::Tensor grad_vs = at::empty_like(vs, at::MemoryFormat::Contiguous);
  at::Tensor out = at::empty({u.size(0)}, u.options());
  kernels.sorted_rows(us.contiguous(), uw, vs.contiguous(), vw, out, grad.contiguous(), grad_us,
                      grad_vs);
  return {at::zeros_like(u).scatter_(-1, u_order, grad_us),
          at::zeros_like(v).scatter_(-1, v_order, grad_vs)};
}

// z (N, d) as above; z (R, N, d): the runs' columns side by side, the permuted reference drawn
// run by run through permute_dims as R calls on z[r] would draw it (from generators[r], or in
// turn from the one generator).
at::Tensor conditional_wasserstein_by_merge(
    const at::Tensor& z, const at::Tensor& labels, const std::optional<at::Tensor>& reference,
    const std::optional<at::Tensor>& reference_index, int64_t num_classes, bool permuted,
    std::optional<at::Generator> generator, bool scale_by_range,
    std::optional<std::vector<at::Generator>> generators, const MergeKernels& kernels) {
  check_conditional_generators(z, permuted, generator, generators);
  if (z.dim() != 3) {
    return conditional_wasserstein_2d(z, labels, reference, reference_index, num_classes,
                                      permuted, std::move(generator), scale_by_range, kernels);
  }
  check_conditional_args(z, labels, reference, reference_index, num_classes, permuted);
  const int64_t R = z.size(0), d = z.size(2);
  std::optional<at::Tensor> ref;
  if (reference.has_value()) ref = runs_as_columns(*reference);
  if (permuted) {
    std::vector<at::Tensor> runs;
    for (int64_t r = 0; r < R; ++r) {
      auto gen = generators.has_value() ? std::optional<at::Generator>((*generators)[r])
                                        : generator;
      runs.push_back(std::get<0>(permute_dims_op().call(z.select(0, r).t().unsqueeze(-1),
                                                        std::move(gen), false))
                         .squeeze(-1)
                         .t());
    }
    if (R == 0) return at::empty({0, d, labels.size(1), num_classes}, z.options());
    ref = runs_as_columns(at::stack(runs));
  }
  if (R == 0) return at::empty({0, d, labels.size(1), num_classes}, z.options());
  std::optional<at::Tensor> index;
  if (reference_index.has_value()) index = runs_as_columns(*reference_index);
  return conditional_wasserstein_2d(runs_as_columns(z), labels, ref, index, num_classes,
                                    /*permuted=*/false, std::nullopt, scale_by_range, kernels)
      .view({R, d, labels.size(1), num_classes});
}

}  // namespace wtc

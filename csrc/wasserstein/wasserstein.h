// Shared glue of the sorted-CDF Wasserstein ops (CPU and CUDA register their own kernels).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>

namespace wtc {

// Rows of sorted samples: a (R, n), b (R, m) contiguous, weights the same shape or undefined.
// Returns W1 per row (R,). With grad (R,) defined, also fills grad_a/grad_b (same shapes as a, b)
// with d W1 / d a * grad per sorted element.
struct SortedRowsW1 {
  std::function<at::Tensor(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& b,
                           const at::Tensor& wb, const at::Tensor& grad, at::Tensor* grad_a,
                           at::Tensor* grad_b)>
      run;
};

at::Tensor wasserstein_1d_impl(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights,
                               const SortedRowsW1& kernel);

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_impl(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights,
    const SortedRowsW1& kernel);

void check_wasserstein_1d_args(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights);

void check_conditional_args(const at::Tensor& z, const at::Tensor& labels,
                            const std::optional<at::Tensor>& reference,
                            const std::optional<at::Tensor>& reference_index,
                            int64_t num_classes);

}  // namespace wtc

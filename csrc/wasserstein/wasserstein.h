// Argument checks shared by the CPU and CUDA registrations of the sorted-CDF Wasserstein ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace wtc {

void check_wasserstein_1d_args(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights);

void check_conditional_args(const at::Tensor& z, const at::Tensor& labels,
                            const std::optional<at::Tensor>& reference,
                            const std::optional<at::Tensor>& reference_index,
                            int64_t num_classes, bool permuted, bool check_label_range = true);

}  // namespace wtc

// Argument checks shared by the CPU and CUDA registrations of the sorted-CDF Wasserstein ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <ATen/core/Generator.h>

#include <optional>
#include <vector>

namespace wtc {

void check_wasserstein_1d_args(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights);

void check_conditional_args(const at::Tensor& z, const at::Tensor& labels,
                            const std::optional<at::Tensor>& reference,
                            const std::optional<at::Tensor>& reference_index,
                            int64_t num_classes, bool permuted, bool check_label_range = true);

// generators (one per run of z (R, N, d)) only with permuted and without generator.
void check_conditional_generators(const at::Tensor& z, bool permuted,
                                  const std::optional<at::Generator>& generator,
                                  const std::optional<std::vector<at::Generator>>& generators);

}  // namespace wtc

// Argument checks shared by the CPU and CUDA registrations of the sorted-CDF Wasserstein ops, and
// the device kernels' host side.
#pragma once
#include <ATen/core/Tensor.h>

#include <ATen/core/Generator.h>

#include <functional>
#include <optional>
#include <tuple>
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


// The device kernels' host side (wasserstein_aten.cpp), shared by the CUDA glue and by its
// emulation on the CPU: the merge kernels (one merge_w1, merge_w1.h, a thread).
struct MergeKernels {
  // out[r] = W1 between sorted rows a[r] (R, n) and b[r] (R, m), weighted by wa/wb where they
  // are defined; with grad (R) defined, also grad_a/grad_b: each element's derivative times
  // grad[r]. All contiguous, of one dtype.
  std::function<void(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& b,
                     const at::Tensor& wb, const at::Tensor& out, const at::Tensor& grad,
                     const at::Tensor& grad_a, const at::Tensor& grad_b)>
      sorted_rows;
  // out[s] (S) = W1 between a[a_start[s] ..+ a_len[s]) and b[b_start[s] ..+ b_len[s]), sorted
  // segments of the flat a and b (int64 starts and lengths, S each); NaN for an empty one.
  std::function<void(const at::Tensor& a, const at::Tensor& a_start, const at::Tensor& a_len,
                     const at::Tensor& b, const at::Tensor& b_start, const at::Tensor& b_len,
                     const at::Tensor& out)>
      segments;
};

// The ops on the kernels (arguments as the registered ops'; they are checked here).
at::Tensor wasserstein_1d_by_merge(const at::Tensor& u, const at::Tensor& v,
                                   const std::optional<at::Tensor>& u_weights,
                                   const std::optional<at::Tensor>& v_weights,
                                   const MergeKernels& kernels);
std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_by_merge(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights,
    const MergeKernels& kernels);
at::Tensor conditional_wasserstein_by_merge(
    const at::Tensor& z, const at::Tensor& labels, const std::optional<at::Tensor>& reference,
    const std::optional<at::Tensor>& reference_index, int64_t num_classes, bool permuted,
    std::optional<at::Generator> generator, bool scale_by_range,
    std::optional<std::vector<at::Generator>> generators, const MergeKernels& kernels);

}  // namespace wtc

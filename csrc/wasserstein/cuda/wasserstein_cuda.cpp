// Sorted-CDF Wasserstein ops on CUDA: the algorithms of wasserstein_aten.cpp (ATen's segmented
// sorts) on the merge kernels of wasserstein_kernel.cu, on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "wasserstein/wasserstein.h"
#include "wasserstein/cuda/wasserstein_cuda.h"

namespace wtc {
namespace {

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
void* mutable_ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

const MergeKernels& cuda_merge_kernels() {
  static const MergeKernels kernels{
      [](const at::Tensor& a, const at::Tensor& wa, const at::Tensor& b, const at::Tensor& wb,
         const at::Tensor& out, const at::Tensor& grad, const at::Tensor& grad_a,
         const at::Tensor& grad_b) {
        C10_CUDA_CHECK(launch_sorted_rows_w1(
            a.const_data_ptr(), ptr_or_null(wa), b.const_data_ptr(), ptr_or_null(wb), a.size(0),
            a.size(1), b.size(1), out.data_ptr(), ptr_or_null(grad), mutable_ptr_or_null(grad_a),
            mutable_ptr_or_null(grad_b), a.scalar_type() == at::kDouble,
            at::cuda::getCurrentCUDAStream()));
      },
      [](const at::Tensor& a, const at::Tensor& a_start, const at::Tensor& a_len,
         const at::Tensor& b, const at::Tensor& b_start, const at::Tensor& b_len,
         const at::Tensor& out) {
        C10_CUDA_CHECK(launch_segments_w1(
            a.const_data_ptr(), a_start.const_data_ptr<int64_t>(),
            a_len.const_data_ptr<int64_t>(), b.const_data_ptr(),
            b_start.const_data_ptr<int64_t>(), b_len.const_data_ptr<int64_t>(), out.numel(),
            out.data_ptr(), a.scalar_type() == at::kDouble, at::cuda::getCurrentCUDAStream()));
      }};
  return kernels;
}

at::Tensor wasserstein_1d_cuda(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights) {
  const c10::cuda::CUDAGuard guard(u.device());
  return wasserstein_1d_by_merge(u, v, u_weights, v_weights, cuda_merge_kernels());
}

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_cuda(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights) {
  const c10::cuda::CUDAGuard guard(u.device());
  return wasserstein_1d_backward_by_merge(grad, u, v, u_weights, v_weights, cuda_merge_kernels());
}

at::Tensor conditional_wasserstein_cuda(const at::Tensor& z, const at::Tensor& labels,
                                        const std::optional<at::Tensor>& reference,
                                        const std::optional<at::Tensor>& reference_index,
                                        int64_t num_classes, bool permuted,
                                        std::optional<at::Generator> generator,
                                        bool scale_by_range,
                                        std::optional<std::vector<at::Generator>> generators) {
  const c10::cuda::CUDAGuard guard(z.device());
  return conditional_wasserstein_by_merge(z, labels, reference, reference_index, num_classes,
                                          permuted, std::move(generator), scale_by_range,
                                          std::move(generators), cuda_merge_kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CUDA, m) {
  m.impl("wasserstein_1d", &wasserstein_1d_cuda);
  m.impl("wasserstein_1d_backward", &wasserstein_1d_backward_cuda);
  m.impl("conditional_wasserstein", &conditional_wasserstein_cuda);
}

}  // namespace wtc

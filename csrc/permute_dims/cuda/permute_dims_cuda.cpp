// wtc_ext::permute_dims on CUDA: host side (generator, stream); the algorithm is
// permute_dims_by_sort (permute_dims_aten.cpp) on the kernels of permute_dims_kernel.cu.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <mutex>

#include "permute_dims/permute_dims.h"
#include "permute_dims/cuda/permute_dims_cuda.h"

namespace wtc {
namespace {

std::tuple<at::Tensor, at::Tensor> permute_dims_cuda(const at::Tensor& z,
                                                      std::optional<at::Generator> generator,
                                                      bool return_index) {
  check_permute_dims_args(z, generator);
  const c10::cuda::CUDAGuard device_guard(z.device());
  auto draw = [&]() {
    auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
        generator, at::cuda::detail::getDefaultCUDAGenerator());
    at::PhiloxCudaState philox;
    {
      std::lock_guard<std::mutex> lock(gen->mutex_);
      philox = gen->philox_cuda_state(4);
    }
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    SortShuffleKernels kernels;
    kernels.shared = [philox, stream](const at::Tensor& z, const at::Tensor& out,
                                      int64_t* index) {
      const PermuteShape s = permute_shape(z);
      C10_CUDA_CHECK(launch_permute_dims_shared(z.const_data_ptr(), out.data_ptr(), index, s.L,
                                                s.B, s.d, static_cast<int>(z.element_size()),
                                                philox, stream));
    };
    kernels.keys = [philox, stream](const at::Tensor& keys) {
      const PermuteShape s = permute_shape(keys);
      C10_CUDA_CHECK(
          launch_permute_dims_keys(keys.data_ptr<int64_t>(), s.L, s.B, s.d, philox, stream));
    };
    return kernels;
  };
  return permute_dims_by_sort(z, return_index, draw);
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CUDA, m) { m.impl("permute_dims", &permute_dims_cuda); }

}  // namespace wtc

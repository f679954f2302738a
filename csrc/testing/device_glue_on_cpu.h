// The CUDA ops' host algorithms on the CPU, for the tests: the CUDA code has a GPU to run on only
// now and then, and most of it is not the kernels but the ATen glue around them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace wtc {

// From now on, the CPU kernels of every wtc_ext op are the device algorithms
// (permute_dims_by_sort, mlp_critic_loss_impl, *_by_merge) on emulated kernels: each kernel's
// per-thread code (sort_shuffle.h, penalty_row.h, merge_w1.h) run thread after thread. Only the
// CPU dispatch key changes (autograd and the fake kernels stay), and it cannot be undone: run
// it in a process of its own (tests/test_device_glue.py).
void use_device_glue_on_cpu();

// permute_dims's emulated shuffle kernels on a CPU z (..., B, d), for one Philox (seed, offset):
// the keys kernel's keys (int64, z's shape), and the shared-memory kernel's output and index
// (2 <= B <= 2048).
at::Tensor shuffle_keys_on_cpu(const at::Tensor& z, uint64_t seed, uint64_t offset);
std::tuple<at::Tensor, at::Tensor> shared_shuffle_on_cpu(const at::Tensor& z, uint64_t seed,
                                                         uint64_t offset);

}  // namespace wtc

// The Python module _wtc_ext (top level, loaded by wtc_ext: a name no source folder holds, so a
// checkout's uncompiled wtc_ext/ never hides it). Loading it runs the TORCH_LIBRARY registrations of every op;
// the module itself only reports how it was built.
//
// Layout of csrc/, by backend as torchvision lays out its ops: each op family's folder holds
// <op>.h/.cpp (schema and argument checks), cpu/ (the CPU kernel), cuda/ (the host glue, the
// kernels' .cu and their launchers' header, free of torch headers) and autograd/ (the Autograd
// kernel); <op>_aten.cpp holds the device algorithm around the CUDA kernels, on ATen ops and
// kernels passed in. common/ holds what several families share (random streams, the column
// shuffle, the radix sort, per-thread buffers); testing/ runs the device algorithms on the CPU
// with the kernels emulated, so that the tests check them without a GPU.
//
// Autograd has one home, C++ (the autograd/ folders): permute_dims and mlp_critic_loss need it
// there for speed (a Python autograd registration cost a third of mlp_critic_loss's time at batch
// 64, and permute_dims's direct entry point below skips Python altogether), so wasserstein_1d's
// joined them. conditional_wasserstein has no gradient and no autograd kernel. The fake kernels of
// torch.compile stay in Python (wtc_ext/ops.py, torch.library.register_fake).
#include <torch/extension.h>
#include <torch/version.h>

#include "common/column_shuffle.h"
#include "testing/device_glue_on_cpu.h"

#ifdef WTC_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#ifndef WTC_CUDA_ARCHS
#define WTC_CUDA_ARCHS ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef WTC_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." +
                         std::to_string((CUDART_VERSION % 1000) / 10);
  info["cuda_archs"] = std::string(WTC_CUDA_ARCHS);
#else
  info["cuda"] = false;
  info["cuda_version"] = pybind11::none();
  info["cuda_archs"] = std::string();
#endif
  info["torch_version"] = std::string(TORCH_VERSION);
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = std::string("unknown");
#endif
  info["openmp"] = AT_PARALLEL_OPENMP == 1;
  return info;
}

// Direct entry points into the dispatcher for eager calls: the same registered ops as
// torch.ops.wtc_ext.*, without the Python-side schema matching of OpOverload (several
// microseconds, as much as the whole op at the paper's batch of 64). wtc_ext.ops uses them
// outside torch.compile tracing.
std::tuple<at::Tensor, at::Tensor> permute_dims(const at::Tensor& z,
                                                std::optional<at::Generator> generator,
                                                bool return_index) {
  return wtc::permute_dims_op().call(z, std::move(generator), return_index);
}

}  // namespace

PYBIND11_MODULE(_wtc_ext, m) {
  m.doc() = "Compiled kernels of wtc_ext (ops are registered under torch.ops.wtc_ext)";
  m.def("build_info", &build_info, "How this extension was built: CUDA or not, versions.");
  m.def("permute_dims", &permute_dims, pybind11::arg("z"), pybind11::kw_only(),
        pybind11::arg("generator") = pybind11::none(), pybind11::arg("return_index") = true);
  // For the tests only (testing/device_glue_on_cpu.h): the CUDA ops' host side on the CPU.
  m.def("_use_device_glue_on_cpu", &wtc::use_device_glue_on_cpu,
        "Make the CPU kernels of every op the CUDA algorithms on emulated kernels (for good).");
  m.def("_shuffle_keys_on_cpu", &wtc::shuffle_keys_on_cpu, pybind11::arg("z"),
        pybind11::arg("seed"), pybind11::arg("offset"));
  m.def("_shared_shuffle_on_cpu", &wtc::shared_shuffle_on_cpu, pybind11::arg("z"),
        pybind11::arg("seed"), pybind11::arg("offset"));
}

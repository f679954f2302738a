// One row of the gradient penalty, for the CUDA kernel and its emulation on the CPU.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace wtc {

// A row's penalty is (||g|| - center)^2; its gradient is this factor times g, with the mean over
// batch rows and the penalty's weight (scale) folded in. Zero where ||g|| = 0, as autograd's
// norm gives.
WTC_HOST_DEVICE double penalty_gradient_factor(double norm, double center, double scale,
                                               int64_t batch) {
  return norm > 0 ? scale * 2.0 * (norm - center) / (static_cast<double>(batch) * norm) : 0.0;
}

}  // namespace wtc
